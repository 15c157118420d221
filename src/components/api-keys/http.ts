// REST adapter of the api-keys component: parse -> service -> map. No business rules here.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { bearerSecurity, errorResponses, IdParams, originOfRequest } from '../../platform/http.js';
import { principalOf, requireSession } from '../access/index.js';
import { ApiKeyListQuery, ApiKeySchema, ApiKeyWithSecretSchema, CreateApiKeyBody } from './api-keys.schemas.js';
import type { ApiKeysService } from './api-keys.service.js';

/**
 * preValidation: an API key never manages keys, whatever the body says (403 before validation). The
 * use cases check again, for the transports that skip HTTP.
 */
async function loginOnly(request: FastifyRequest): Promise<void> {
  requireSession(principalOf(request));
}

export const apiKeysRoutes: FastifyPluginAsyncTypebox<{ apiKeys: ApiKeysService }> = async (app, { apiKeys }) => {
  const tags = ['api-keys'];
  app.addHook('onRequest', app.authenticate);

  app.post(
    '/api-keys',
    {
      preValidation: loginOnly,
      schema: {
        tags,
        summary: 'Create an API key (an access token, not a key); the answer is the only one that shows its secret',
        security: bearerSecurity,
        body: CreateApiKeyBody,
        response: { 201: Type.Object({ data: ApiKeyWithSecretSchema }), ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request, reply) => {
      const created = await apiKeys.create(principalOf(request), request.body, originOfRequest(request));
      // Every answer is no-store already (security headers); said here too, as this one carries a secret.
      return reply.code(201).header('cache-control', 'no-store').send({ data: created });
    },
  );

  app.get(
    '/api-keys',
    {
      preValidation: loginOnly,
      schema: {
        tags,
        summary: "The caller's API keys (admins: ?ownerId=), newest first, cursor-paginated; never their secrets",
        security: bearerSecurity,
        querystring: ApiKeyListQuery,
        response: {
          200: Type.Object({ data: Type.Array(ApiKeySchema), meta: Type.Object({ nextCursor: Type.Union([Type.String(), Type.Null()]) }) }),
          ...errorResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => apiKeys.list(principalOf(request), request.query),
  );

  app.delete(
    '/api-keys/:id',
    {
      preValidation: loginOnly,
      schema: {
        tags,
        summary: 'Revoke an API key (admins: anyone\'s): it stops working on every instance within 1 s',
        security: bearerSecurity,
        params: IdParams,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      await apiKeys.revoke(principalOf(request), request.params.id, originOfRequest(request));
      return reply.code(204).send(null);
    },
  );
};
