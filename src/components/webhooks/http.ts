// REST adapter of the webhooks component (admins only): parse -> service -> map. No business rules here.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { bearerSecurity, emptyBodyAsObject, errorResponses, IdParams, NoBody, PageMeta, PageQuery } from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
import {
  CreateEndpointBody,
  DeliveryParams,
  DeliveryQuery,
  DeliverySchema,
  EndpointSchema,
  EndpointWithSecretSchema,
  UpdateEndpointBody,
} from './webhooks.schemas.js';
import type { WebhooksService } from './webhooks.service.js';

const EndpointEnvelope = Type.Object({ data: EndpointSchema });
const EndpointWithSecretEnvelope = Type.Object({ data: EndpointWithSecretSchema });

export const webhooksRoutes: FastifyPluginAsyncTypebox<{ webhooks: WebhooksService }> = async (app, { webhooks }) => {
  const tags = ['webhooks'];
  const admin = requirePermission('webhooks:manage');
  app.addHook('onRequest', app.authenticate);
  // Every answer is Cache-Control: no-store already (security headers): the secrets are never cached.

  app.post(
    '/webhooks',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: 'Register a webhook endpoint (admin); the answer is the only one that shows its secret',
        security: bearerSecurity,
        body: CreateEndpointBody,
        response: { 201: EndpointWithSecretEnvelope, ...errorResponses(400, 401, 403, 415, 429) },
      },
    },
    async (request, reply) => reply.code(201).send({ data: await webhooks.create(principalOf(request), request.body) }),
  );

  app.get(
    '/webhooks',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: 'List webhook endpoints, newest first (admin)',
        security: bearerSecurity,
        querystring: PageQuery,
        response: { 200: Type.Object({ data: Type.Array(EndpointSchema), meta: PageMeta }), ...errorResponses(400, 401, 403, 429) },
      },
    },
    async (request) => webhooks.list(principalOf(request), request.query),
  );

  app.get(
    '/webhooks/:id',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: 'Get a webhook endpoint (admin)',
        security: bearerSecurity,
        params: IdParams,
        response: { 200: EndpointEnvelope, ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => ({ data: await webhooks.get(principalOf(request), request.params.id) }),
  );

  app.patch(
    '/webhooks/:id',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: 'Update a webhook endpoint: url, eventTypes, description, enabled (admin)',
        security: bearerSecurity,
        params: IdParams,
        body: UpdateEndpointBody,
        response: { 200: EndpointEnvelope, ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request) => ({ data: await webhooks.update(principalOf(request), request.params.id, request.body) }),
  );

  app.delete(
    '/webhooks/:id',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: 'Delete a webhook endpoint and its deliveries (admin)',
        security: bearerSecurity,
        params: IdParams,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request, reply) => {
      await webhooks.delete(principalOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/webhooks/:id/rotate-secret',
    {
      preValidation: [admin, emptyBodyAsObject],
      schema: {
        tags,
        summary: 'Replace the signing secret (admin); the answer is the only one that shows the new secret',
        security: bearerSecurity,
        params: IdParams,
        body: NoBody,
        response: { 200: EndpointWithSecretEnvelope, ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request) => ({ data: await webhooks.rotateSecret(principalOf(request), request.params.id) }),
  );

  app.get(
    '/webhooks/:id/deliveries',
    {
      preValidation: admin,
      schema: {
        tags,
        summary: "An endpoint's deliveries, newest first, optionally by status (admin)",
        security: bearerSecurity,
        params: IdParams,
        querystring: DeliveryQuery,
        response: { 200: Type.Object({ data: Type.Array(DeliverySchema), meta: PageMeta }), ...errorResponses(400, 401, 403, 404, 429) },
      },
    },
    async (request) => webhooks.listDeliveries(principalOf(request), request.params.id, request.query),
  );

  app.post(
    '/webhooks/:id/deliveries/:deliveryId/redeliver',
    {
      preValidation: [admin, emptyBodyAsObject],
      schema: {
        tags,
        summary: 'Send a delivery again (admin): scheduled now, attempts counted afresh',
        security: bearerSecurity,
        params: DeliveryParams,
        body: NoBody,
        response: { 202: Type.Object({ data: DeliverySchema }), ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request, reply) =>
      reply.code(202).send({ data: await webhooks.redeliver(principalOf(request), request.params.id, request.params.deliveryId) }),
  );
};
