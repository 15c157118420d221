export { API_KEY_SCOPES, authorize, can, requireSession, scopeOf, type ApiKeyScope, type Permission, type Principal, type Role } from './permissions.js';
export { principalOf, requirePermission } from './http.js';
