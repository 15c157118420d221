// REST adapter of the users component: parse -> service -> map. No business rules here.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import {
  bearerSecurity,
  errorResponses,
  IdParams,
  normalizeEmail,
  PageMeta,
  PageQuery,
  SMALL_RESPONSE,
} from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
import { CreateUserBody, UpdateUserBody, UserSchema } from './users.schemas.js';
import type { UsersService } from './users.service.js';
import { originOfRequest } from '../../platform/http.js';

const UserEnvelope = Type.Object({ data: UserSchema });

export const usersRoutes: FastifyPluginAsyncTypebox<{ users: UsersService }> = async (app, { users }) => {
  const tags = ['users'];
  app.addHook('onRequest', app.authenticate);

  app.get(
    '/users/me',
    {
      ...SMALL_RESPONSE,
      schema: {
        tags,
        summary: 'The calling user',
        security: bearerSecurity,
        response: { 200: UserEnvelope, ...errorResponses(401, 429) },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      return { data: await users.get(principal, principal.userId) };
    },
  );

  app.post(
    '/users',
    {
      preValidation: [requirePermission('users:create'), normalizeEmail],
      schema: {
        tags,
        summary: 'Create a user (admin)',
        security: bearerSecurity,
        body: CreateUserBody,
        response: { 201: UserEnvelope, ...errorResponses(400, 401, 403, 409, 415, 429) },
      },
    },
    async (request, reply) => {
      const user = await users.create(principalOf(request), request.body, originOfRequest(request));
      return reply.code(201).send({ data: user });
    },
  );

  app.get(
    '/users',
    {
      preValidation: requirePermission('users:list'),
      schema: {
        tags,
        summary: 'List users, newest first (admin)',
        security: bearerSecurity,
        querystring: PageQuery,
        response: {
          200: Type.Object({ data: Type.Array(UserSchema), meta: PageMeta }),
          ...errorResponses(400, 401, 403, 429),
        },
      },
    },
    async (request) => users.list(principalOf(request), request.query),
  );

  app.get(
    '/users/:id',
    {
      ...SMALL_RESPONSE,
      schema: {
        tags,
        summary: 'Get a user (self or admin)',
        security: bearerSecurity,
        params: IdParams,
        response: { 200: UserEnvelope, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => ({ data: await users.get(principalOf(request), request.params.id) }),
  );

  app.patch(
    '/users/:id',
    {
      preValidation: normalizeEmail,
      schema: {
        tags,
        summary: 'Update a user (self or admin; role: admin only)',
        security: bearerSecurity,
        params: IdParams,
        body: UpdateUserBody,
        response: { 200: UserEnvelope, ...errorResponses(400, 401, 403, 404, 409, 415, 429) },
      },
    },
    async (request) => ({ data: await users.update(principalOf(request), request.params.id, request.body, originOfRequest(request)) }),
  );

  app.delete(
    '/users/:id',
    {
      preValidation: requirePermission('users:delete'),
      schema: {
        tags,
        summary: 'Delete a user (admin); revokes their tokens and closes their empty accounts',
        security: bearerSecurity,
        params: IdParams,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      await users.delete(principalOf(request), request.params.id, originOfRequest(request));
      return reply.code(204).send(null);
    },
  );
};
