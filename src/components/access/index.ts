export { authorize, can, scopeOf, type Permission, type Principal, type Role } from './permissions.js';
export { principalOf, requirePermission } from './http.js';
