// The audit component's public surface.
export { AUDIT_ACTIONS, type AuditAction, type AuditEntry, type AuditTrail } from './audit.js';
