// REST adapter of the closures component: start a user's closure, read how it went.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { bearerSecurity, errorResponses, IdParams } from '../../platform/http.js';
import { originOfRequest } from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
import type { ClosuresService } from './closures.service.js';

const StartClosureBody = Type.Object(
  {
    /** Withdraw (pay out) every balance instead of refusing a user who still has money. */
    withdrawBalances: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const ClosureSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  userId: Type.String({ format: 'uuid' }),
  status: Type.Union([Type.Literal('running'), Type.Literal('compensating'), Type.Literal('completed'), Type.Literal('compensated')]),
  step: Type.String(),
  withdrawBalances: Type.Boolean(),
  error: Type.Union([Type.String(), Type.Null()]),
  steps: Type.Array(Type.Object({ step: Type.String(), outcome: Type.String(), at: Type.String({ format: 'date-time' }) })),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
const ClosureEnvelope = Type.Object({ data: ClosureSchema });

export const closuresRoutes: FastifyPluginAsyncTypebox<{ closures: ClosuresService }> = async (app, { closures }) => {
  const tags = ['users'];
  app.addHook('onRequest', app.authenticate);

  app.post(
    '/users/:id/closure',
    {
      preValidation: requirePermission('users:delete'),
      schema: {
        tags,
        summary: 'Close a user (admin): freeze, settle and close their accounts, end their sessions, delete them — a saga',
        security: bearerSecurity,
        params: IdParams,
        body: StartClosureBody,
        response: { 202: ClosureEnvelope, ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request, reply) => {
      const body = request.body ?? {};
      const closure = await closures.start(principalOf(request), request.params.id, body, originOfRequest(request));
      return reply.code(202).send({ data: closure });
    },
  );

  app.get(
    '/users/:id/closure',
    {
      preValidation: requirePermission('users:delete'),
      schema: {
        tags,
        summary: "The user's latest closure and its steps (admin)",
        security: bearerSecurity,
        params: IdParams,
        response: { 200: ClosureEnvelope, ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => ({ data: await closures.get(principalOf(request), request.params.id) }),
  );
};
