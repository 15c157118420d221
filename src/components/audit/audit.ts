// The audit trail's contract with the components that record into it. The audit component
// implements it (append-only store, GET /api/v1/audit, retention); a use case records an action in
// the transaction that made the change, or on the database for an attempt that changed nothing.
import type { Executor } from '../../platform/db/index.js';
import type { RequestOrigin } from '../../platform/request-origin.js';

export const AUDIT_ACTIONS = [
  'auth.login',
  'auth.login_failed',
  'auth.locked',
  'auth.refresh_reuse',
  'auth.logout_all',
  'auth.session_revoked',
  'auth.oidc_linked',
  'user.created',
  'user.updated',
  'user.role_changed',
  'user.password_changed',
  'user.password_reset',
  'user.email_verified',
  'user.deleted',
  'api_key.created',
  'api_key.revoked',
  'mfa.enabled',
  'mfa.disabled',
  'mfa.recovery_code_used',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditEntry {
  readonly action: AuditAction;
  /** Who did it: the authenticated caller, or the user a credential was presented for; null if unknown. */
  readonly actorId: string | null;
  /** What it was done to (a user, a key, a session); null if nothing identifiable. */
  readonly targetId: string | null;
  /** Facts about the action. Never a secret, password, hash or token. */
  readonly details?: Readonly<Record<string, string | number | boolean | null>>;
}

export interface AuditTrail {
  /** Appends the entry in `executor` (a transaction: it exists iff that commits), with the request's address, agent and id. */
  record(executor: Executor, entry: AuditEntry, origin?: RequestOrigin): Promise<void>;
}
