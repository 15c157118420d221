export { API_KEY_SCOPES, apiKeyScopesAllowedFor, authorize, can, keyCovers, requireSession, scopeOf, type ApiKeyScope, type Permission, type Principal, type Role } from './permissions.js';
export { principalOf, requirePermission } from './http.js';
