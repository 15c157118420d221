// REST adapter of the audit component (admins only): parse -> service -> map. Read-only by design:
// no route changes or deletes an event.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { bearerSecurity, errorResponses } from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
import { AuditPage, AuditQuery } from './audit.schemas.js';
import type { AuditService } from './audit.service.js';

export const auditRoutes: FastifyPluginAsyncTypebox<{ audit: AuditService }> = async (app, { audit }) => {
  app.addHook('onRequest', app.authenticate);

  app.get(
    '/audit',
    {
      preValidation: requirePermission('audit:read'),
      schema: {
        tags: ['audit'],
        summary: 'The audit log, newest first, cursor-paginated, filtered by action, actor and target (admin)',
        security: bearerSecurity,
        querystring: AuditQuery,
        response: { 200: AuditPage, ...errorResponses(400, 401, 403, 429) },
      },
    },
    async (request) => audit.list(principalOf(request), request.query),
  );
};
