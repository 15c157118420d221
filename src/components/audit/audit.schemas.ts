// Request and response schemas of the audit component.
import { Type, type Static } from 'typebox';
import { AUDIT_ACTIONS } from './audit.js';

export const AuditQuery = Type.Object(
  {
    action: Type.Optional(Type.Enum(AUDIT_ACTIONS, { description: 'Only events of this action' })),
    actorId: Type.Optional(Type.String({ format: 'uuid', description: 'Only events done by this user' })),
    targetId: Type.Optional(Type.String({ format: 'uuid', description: 'Only events done to this user, key or session' })),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'meta.nextCursor of the previous page' })),
  },
  { additionalProperties: false },
);
export type AuditQuery = Static<typeof AuditQuery>;

export const AuditEventSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  action: Type.String({ description: `One of ${AUDIT_ACTIONS.join(', ')}` }),
  actorId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], { description: 'Who did it; null if unknown' }),
  targetId: Type.Union([Type.String({ format: 'uuid' }), Type.Null()], { description: 'What it was done to; null if nothing identifiable' }),
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  requestId: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean(), Type.Null()]), {
    description: 'Facts about the action; never a secret',
  }),
  createdAt: Type.String({ format: 'date-time' }),
});

export const AuditPage = Type.Object({
  data: Type.Array(AuditEventSchema),
  meta: Type.Object({ nextCursor: Type.Union([Type.String(), Type.Null()]) }),
});
