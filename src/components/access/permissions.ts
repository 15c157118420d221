// Role-based access control with ownership. Handlers never ask "is admin"; use cases ask
// "may this principal do X to this resource", and the answer follows the contract's rule:
// an operation the role never allows is FORBIDDEN, a resource the principal may not see is NOT_FOUND.
import { forbidden, notFound } from '../../platform/errors.js';

const ROLES = ['user', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What an API key may be granted; a key's scopes are a subset of what its owner's role allows. */
export const API_KEY_SCOPES = ['users:read', 'users:write', 'ledger:read', 'ledger:write'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

/** Who is calling: resolved per request from a verified token (or API key) and the user's current state. */
export interface Principal {
  readonly userId: string;
  readonly role: Role;
  /** The login (refresh-token family) whose access token made the request; absent for an API key. */
  readonly sessionId?: string;
  /** Present when the caller authenticated with an API key: it may do only what its scopes cover. */
  readonly apiKey?: { readonly id: string; readonly scopes: readonly ApiKeyScope[] };
}

export type Permission =
  | 'users:list'
  | 'users:create'
  | 'users:read'
  | 'users:update'
  | 'users:delete'
  | 'users:assign-role'
  | 'accounts:create'
  | 'accounts:create-for-others'
  | 'accounts:list'
  | 'accounts:list-system'
  | 'accounts:read'
  | 'accounts:deposit'
  | 'accounts:withdraw'
  | 'transfers:create'
  | 'transfers:read'
  | 'webhooks:manage';

/** `own`: only resources the principal owns; `any`: every resource. Absent: never. */
type Scope = 'own' | 'any';

const GRANTS: Readonly<Record<Role, Partial<Readonly<Record<Permission, Scope>>>>> = {
  user: {
    'users:read': 'own',
    'users:update': 'own',
    'accounts:create': 'own',
    'accounts:list': 'own',
    'accounts:read': 'own',
    'accounts:withdraw': 'own',
    'transfers:create': 'own',
    'transfers:read': 'own',
  },
  admin: {
    'users:list': 'any',
    'users:create': 'any',
    'users:read': 'any',
    'users:update': 'any',
    'users:delete': 'any',
    'users:assign-role': 'any',
    'accounts:create': 'any',
    'accounts:create-for-others': 'any',
    'accounts:list': 'any',
    'accounts:list-system': 'any',
    'accounts:read': 'any',
    'accounts:deposit': 'any',
    'accounts:withdraw': 'any',
    'transfers:create': 'any',
    'transfers:read': 'any',
    'webhooks:manage': 'any',
  },
};

export function scopeOf(principal: Principal, permission: Permission): Scope | undefined {
  return GRANTS[principal.role][permission];
}

/** True when the principal may perform `permission` on a resource owned by any of `ownerIds`. */
export function can(principal: Principal, permission: Permission, ownerIds?: readonly (string | null)[]): boolean {
  const scope = scopeOf(principal, permission);
  if (scope === undefined) return false;
  if (scope === 'any' || ownerIds === undefined) return true;
  return ownerIds.includes(principal.userId);
}

/**
 * Throws FORBIDDEN when the role never allows `permission`, NOT_FOUND when it does but not on this
 * resource (so that others' resources are indistinguishable from absent ones).
 */
export function authorize(
  principal: Principal,
  permission: Permission,
  ownerIds?: readonly (string | null)[],
  resourceName = 'Resource',
): void {
  if (scopeOf(principal, permission) === undefined) throw forbidden();
  if (!can(principal, permission, ownerIds)) throw notFound(resourceName);
}

/**
 * For operations on the caller's own credentials (sessions, passwords, MFA, API keys): only a login
 * may do them, never an API key, whatever its scopes (FORBIDDEN).
 */
export function requireSession(principal: Principal): void {
  if (principal.apiKey) throw forbidden();
}
