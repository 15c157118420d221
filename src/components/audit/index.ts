// The audit component's public surface.
export { AUDIT_ACTIONS, type AuditAction, type AuditEntry, type AuditTrail } from './audit.js';
export { createAuditService, type AuditEvent, type AuditFilters, type AuditService } from './audit.service.js';
export { auditRoutes } from './http.js';
/** Schemas the transports validate with. */
export { AuditEventSchema, AuditQuery } from './audit.schemas.js';
