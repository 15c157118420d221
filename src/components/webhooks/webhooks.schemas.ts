// Request and response schemas of the webhooks component, shared by every transport.
import { Type, type Static } from 'typebox';
import { MAX_PAGE, StoredText } from '../../platform/http.js';
import { EVENT_TYPES } from '../events/index.js';

/** Every event type, or '*' (alone) for all of them, present and future. */
export const ALL_EVENT_TYPES = '*';
export const DELIVERY_STATUSES = ['pending', 'failed', 'delivered', 'dead'] as const;

const Url = Type.String({ minLength: 1, maxLength: 2048, description: 'https (http only with WEBHOOK_ALLOW_HTTP=true); no private targets' });
const EventTypes = Type.Array(Type.Enum([...EVENT_TYPES, ALL_EVENT_TYPES]), {
  minItems: 1,
  maxItems: EVENT_TYPES.length,
  uniqueItems: true,
  description: `Event types delivered: some of ${EVENT_TYPES.join(', ')}; or ["*"] for all`,
});
const Description = StoredText({ maxLength: 500 });

export const CreateEndpointBody = Type.Object(
  {
    url: Url,
    eventTypes: EventTypes,
    description: Type.Optional(Description),
    enabled: Type.Optional(Type.Boolean({ default: true })),
  },
  { additionalProperties: false },
);
export type CreateEndpointBody = Static<typeof CreateEndpointBody>;

export const UpdateEndpointBody = Type.Object(
  {
    url: Type.Optional(Url),
    eventTypes: Type.Optional(EventTypes),
    description: Type.Optional(Type.Union([Description, Type.Null()])),
    enabled: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type UpdateEndpointBody = Static<typeof UpdateEndpointBody>;

export const DeliveryQuery = Type.Object(
  {
    page: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 1 }),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    status: Type.Optional(Type.Enum(DELIVERY_STATUSES)),
  },
  { additionalProperties: false },
);
export type DeliveryQuery = Static<typeof DeliveryQuery>;

export const DeliveryParams = Type.Object(
  { id: Type.String({ format: 'uuid' }), deliveryId: Type.String({ format: 'uuid' }) },
  { additionalProperties: false },
);

export const EndpointSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  url: Type.String(),
  eventTypes: Type.Array(Type.String()),
  description: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean(),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

/** The endpoint with its signing secret: only the answers to create and rotate-secret. */
export const EndpointWithSecretSchema = Type.Object({
  ...EndpointSchema.properties,
  secret: Type.String({ description: 'whsec_ + base64: shown only in this answer; verify deliveries with it (Standard Webhooks)' }),
});

export const DeliverySchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  endpointId: Type.String({ format: 'uuid' }),
  eventId: Type.String({ format: 'uuid', description: 'Also the webhook-id header: receivers de-duplicate on it' }),
  eventType: Type.String(),
  status: Type.Enum(DELIVERY_STATUSES),
  attempts: Type.Integer(),
  nextAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'null once delivered or dead' }),
  lastAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  lastStatusCode: Type.Union([Type.Integer(), Type.Null()]),
  lastError: Type.Union([Type.String(), Type.Null()]),
  lastDurationMs: Type.Union([Type.Integer(), Type.Null()]),
  deliveredAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
});
