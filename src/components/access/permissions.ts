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
  | 'webhooks:manage'
  | 'audit:read'
  | 'api-keys:manage';

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
    'api-keys:manage': 'own',
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
    'audit:read': 'any',
    'api-keys:manage': 'any',
  },
};

/**
 * The one scope of an API key that lets it use a permission; a permission not listed (every admin-only
 * one, and any added later until listed here) is never an API key's: FORBIDDEN whatever its scopes.
 */
const KEY_SCOPE_OF: Partial<Readonly<Record<Permission, ApiKeyScope>>> = {
  'users:read': 'users:read',
  'users:update': 'users:write',
  'accounts:read': 'ledger:read',
  'accounts:list': 'ledger:read',
  'transfers:read': 'ledger:read',
  'accounts:create': 'ledger:write',
  'accounts:withdraw': 'ledger:write',
  'transfers:create': 'ledger:write',
};

/** True when the API key's scopes cover `permission` (the role's rules apply on top). */
export function keyCovers(scopes: readonly ApiKeyScope[], permission: Permission): boolean {
  const scope = KEY_SCOPE_OF[permission];
  return scope !== undefined && scopes.includes(scope);
}

/**
 * The scopes a key of a user with this role may hold: those that cover at least one permission the
 * role grants (a key never does more than its owner could). Today both roles allow all four.
 */
export function apiKeyScopesAllowedFor(role: Role): ApiKeyScope[] {
  const granted = Object.keys(GRANTS[role]) as Permission[];
  return API_KEY_SCOPES.filter((scope) => granted.some((permission) => KEY_SCOPE_OF[permission] === scope));
}

export function scopeOf(principal: Principal, permission: Permission): Scope | undefined {
  // An API key narrows its owner's role to what its scopes cover; never widens it.
  if (principal.apiKey && !keyCovers(principal.apiKey.scopes, permission)) return undefined;
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
