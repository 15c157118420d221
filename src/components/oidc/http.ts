// REST adapter of the oidc component: parse -> service -> map.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { LoginResultSchema } from '../auth/index.js';
import { errorResponses, originOfRequest } from '../../platform/http.js';
import { AuthorizeQuery, CallbackQuery, ProviderParams } from './oidc.schemas.js';
import type { OidcService } from './oidc.service.js';

export const oidcRoutes: FastifyPluginAsyncTypebox<{ oidc: OidcService }> = async (app, { oidc }) => {
  const tags = ['auth'];

  app.get(
    '/auth/oidc/:provider/authorize',
    {
      schema: {
        tags,
        summary: 'Start an OpenID Connect login: a redirect to the provider (code flow, PKCE S256, state, nonce)',
        params: ProviderParams,
        querystring: AuthorizeQuery,
        response: { 302: Type.Null({ description: 'Location: the provider’s authorization endpoint' }), ...errorResponses(400, 404, 429, 503) },
      },
    },
    async (request, reply) => {
      const location = await oidc.authorize(request.params.provider, request.query.redirect_uri);
      // The URL carries this flow's state: no cache may keep it.
      return reply.header('cache-control', 'no-store').redirect(location.href, 302);
    },
  );

  app.get(
    '/auth/oidc/:provider/callback',
    {
      schema: {
        tags,
        summary: 'Complete an OpenID Connect login: the provider’s code for tokens, as a password login gives',
        params: ProviderParams,
        querystring: CallbackQuery,
        response: { 200: Type.Object({ data: LoginResultSchema }), ...errorResponses(400, 401, 404, 409, 429, 503) },
      },
    },
    async (request, reply) => {
      const { state, code, iss, error } = request.query;
      const result = await oidc.callback(request.params.provider, { state, code, iss, error }, originOfRequest(request));
      return reply.header('cache-control', 'no-store').send({ data: result });
    },
  );
};
