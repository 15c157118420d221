// REST adapter of the auth component: parse -> service -> map.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import {
  bearerSecurity,
  emptyBodyAsObject,
  errorResponses,
  IdParams,
  NoBody,
  normalizeEmail,
  originOfRequest,
} from '../../platform/http.js';
import { principalOf } from '../access/index.js';
import { RegisterBody, UserSchema, type UsersService } from '../users/index.js';
import {
  ChangePasswordBody,
  JwksSchema,
  LoginBody,
  LoginResultSchema,
  MfaChallengeSchema,
  RefreshBody,
  SessionListQuery,
  SessionSchema,
  TokenPairSchema,
} from './auth.schemas.js';
import type { AuthService } from './auth.service.js';
import type { SigningKeys } from './signing-keys.js';

export const authRoutes: FastifyPluginAsyncTypebox<{ auth: AuthService; users: UsersService }> = async (
  app,
  { auth, users },
) => {
  const tags = ['auth'];

  app.post(
    '/auth/register',
    {
      preValidation: normalizeEmail,
      schema: {
        tags,
        summary: 'Register a user',
        body: RegisterBody,
        response: { 201: Type.Object({ data: UserSchema }), ...errorResponses(400, 409, 415, 429) },
      },
    },
    async (request, reply) => reply.code(201).send({ data: await users.register(request.body, originOfRequest(request)) }),
  );

  app.post(
    '/auth/login',
    {
      preValidation: normalizeEmail,
      schema: {
        tags,
        summary: 'Log in: an access token and a rotating refresh token (or, with MFA, a challenge)',
        body: LoginBody,
        response: {
          200: Type.Object({ data: Type.Union([LoginResultSchema, MfaChallengeSchema]) }),
          ...errorResponses(400, 401, 415, 429, 503),
        },
      },
    },
    async (request) => ({ data: await auth.beginLogin({ ...request.body, clientIp: request.ip }, originOfRequest(request)) }),
  );

  app.post(
    '/auth/refresh',
    {
      schema: {
        tags,
        summary: 'Rotate a refresh token (grace window for racing tabs; reuse revokes the login)',
        body: RefreshBody,
        response: { 200: Type.Object({ data: TokenPairSchema }), ...errorResponses(400, 401, 415, 429) },
      },
    },
    async (request) => ({ data: await auth.refresh(request.body.refreshToken, originOfRequest(request)) }),
  );

  app.post(
    '/auth/logout',
    {
      schema: {
        tags,
        summary: 'Revoke the login (refresh-token family) of this token',
        body: RefreshBody,
        response: { 204: Type.Null(), ...errorResponses(400, 415, 429) },
      },
    },
    async (request, reply) => {
      await auth.logout(request.body.refreshToken, originOfRequest(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/auth/logout-all',
    {
      onRequest: app.authenticate,
      preValidation: emptyBodyAsObject,
      schema: {
        tags,
        summary: 'Revoke every refresh and access token of the caller',
        security: bearerSecurity,
        body: NoBody,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 415, 429) },
      },
    },
    async (request, reply) => {
      await auth.logoutAll(principalOf(request), originOfRequest(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/auth/password',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'Change password; every earlier token stops working',
        security: bearerSecurity,
        body: ChangePasswordBody,
        response: { 200: Type.Object({ data: LoginResultSchema }), ...errorResponses(400, 401, 403, 415, 429, 503) },
      },
    },
    async (request) => ({ data: await auth.changePassword(principalOf(request), request.body, originOfRequest(request)) }),
  );

  app.get(
    '/auth/sessions',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: "The caller's live sessions (logins), newest first",
        security: bearerSecurity,
        querystring: SessionListQuery,
        response: {
          200: Type.Object({ data: Type.Array(SessionSchema), meta: Type.Object({ nextCursor: Type.Union([Type.String(), Type.Null()]) }) }),
          ...errorResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => auth.listSessions(principalOf(request), request.query),
  );

  app.delete(
    '/auth/sessions/:id',
    {
      onRequest: app.authenticate,
      schema: {
        tags,
        summary: 'End one of your sessions: its refresh tokens at once, its access tokens within a second',
        security: bearerSecurity,
        params: IdParams,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      await auth.revokeSession(principalOf(request), request.params.id, originOfRequest(request));
      return reply.code(204).send(null);
    },
  );
};

export const jwksRoutes: FastifyPluginAsyncTypebox<{ keys: SigningKeys }> = async (app, { keys }) => {
  app.get(
    '/.well-known/jwks.json',
    {
      schema: {
        tags: ['auth'],
        summary: 'Public keys that verify access tokens (JWKS)',
        response: { 200: JwksSchema },
      },
    },
    async (_request, reply) => {
      void reply.header('cache-control', 'public, max-age=300');
      return keys.jwks();
    },
  );
};
