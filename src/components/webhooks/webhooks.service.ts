// Use cases of webhook management (admins only): endpoints with their signing secret (shown once, at
// creation and rotation), and their deliveries (listed, redelivered).
import type { Database } from '../../platform/db/index.js';
import { notFound, validationFailed } from '../../platform/errors.js';
import { newId } from '../../platform/ids.js';
import { authorize, type Principal } from '../access/index.js';
import * as repo from './webhooks.repo.js';
import { ALL_EVENT_TYPES, type CreateEndpointBody, type DeliveryQuery, type UpdateEndpointBody } from './webhooks.schemas.js';
import { newWebhookSecret, type SecretStore } from './secrets.js';
import { targetProblem, type TargetPolicy } from './ssrf-guard.js';

export interface WebhookEndpoint {
  readonly id: string;
  readonly url: string;
  readonly eventTypes: string[];
  readonly description: string | null;
  readonly enabled: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface WebhookEndpointWithSecret extends WebhookEndpoint {
  readonly secret: string;
}

export interface WebhookDelivery {
  readonly id: string;
  readonly endpointId: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly status: repo.DeliveryStatus;
  readonly attempts: number;
  readonly nextAttemptAt: string | null;
  readonly lastAttemptAt: string | null;
  readonly lastStatusCode: number | null;
  readonly lastError: string | null;
  readonly lastDurationMs: number | null;
  readonly deliveredAt: string | null;
  readonly createdAt: string;
}

export interface Page<T> {
  readonly data: T[];
  readonly meta: { readonly page: number; readonly limit: number; readonly total: number; readonly totalPages: number };
}

export interface WebhooksService {
  create(principal: Principal, input: CreateEndpointBody): Promise<WebhookEndpointWithSecret>;
  list(principal: Principal, query: { page: number; limit: number }): Promise<Page<WebhookEndpoint>>;
  get(principal: Principal, id: string): Promise<WebhookEndpoint>;
  update(principal: Principal, id: string, input: UpdateEndpointBody): Promise<WebhookEndpoint>;
  delete(principal: Principal, id: string): Promise<void>;
  /** A new secret replaces the old one at once; the answer is the only place it is shown. */
  rotateSecret(principal: Principal, id: string): Promise<WebhookEndpointWithSecret>;
  listDeliveries(principal: Principal, endpointId: string, query: DeliveryQuery): Promise<Page<WebhookDelivery>>;
  /** Schedules the delivery again now, attempts counted afresh (a dead one comes back to life). */
  redeliver(principal: Principal, endpointId: string, deliveryId: string): Promise<WebhookDelivery>;
}

export interface WebhooksServiceOptions {
  readonly database: Database;
  readonly secrets: SecretStore;
  readonly targets: TargetPolicy;
  /** Tells this instance's delivery worker that something is due now. */
  readonly deliveriesDue?: () => void;
  readonly now?: () => Date;
}

const ENDPOINT = 'Webhook endpoint';

export const toEndpoint = (row: repo.EndpointRow): WebhookEndpoint => ({
  id: row.id,
  url: row.url,
  eventTypes: row.event_types,
  description: row.description,
  enabled: row.enabled,
  createdAt: row.created_at.toISOString(),
  updatedAt: row.updated_at.toISOString(),
});

const isoOrNull = (date: Date | null): string | null => (date ? date.toISOString() : null);

export const toDelivery = (row: repo.DeliveryRow): WebhookDelivery => ({
  id: row.id,
  endpointId: row.endpoint_id,
  eventId: row.event_id,
  eventType: row.event_type,
  status: row.status,
  attempts: row.attempts,
  nextAttemptAt: row.status === 'delivered' || row.status === 'dead' ? null : row.next_attempt_at.toISOString(),
  lastAttemptAt: isoOrNull(row.last_attempt_at),
  lastStatusCode: row.last_status_code,
  lastError: row.last_error,
  lastDurationMs: row.last_duration_ms,
  deliveredAt: isoOrNull(row.delivered_at),
  createdAt: row.created_at.toISOString(),
});

export function createWebhooksService(options: WebhooksServiceOptions): WebhooksService {
  const db = options.database.db;
  const now = options.now ?? (() => new Date());

  const checkUrl = (url: string): void => {
    const problem = targetProblem(url, options.targets);
    if (problem !== undefined) throw validationFailed([{ path: 'url', message: problem }]);
  };
  const checkEventTypes = (eventTypes: readonly string[]): void => {
    if (eventTypes.includes(ALL_EVENT_TYPES) && eventTypes.length > 1) {
      throw validationFailed([{ path: 'eventTypes', message: `"${ALL_EVENT_TYPES}" means every type and stands alone` }]);
    }
  };
  const page = <T>(data: T[], total: number, query: { page: number; limit: number }): Page<T> => ({
    data,
    meta: { page: query.page, limit: query.limit, total, totalPages: Math.ceil(total / query.limit) },
  });
  const endpointOrThrow = async (id: string): Promise<repo.EndpointRow> => {
    const row = await repo.findEndpoint(db, id.toLowerCase());
    if (!row) throw notFound(ENDPOINT);
    return row;
  };

  return {
    async create(principal, input) {
      authorize(principal, 'webhooks:manage');
      checkUrl(input.url);
      checkEventTypes(input.eventTypes);
      const secret = newWebhookSecret();
      const createdAt = now();
      const row = await repo.insertEndpoint(db, {
        id: newId(),
        url: input.url,
        event_types: [...input.eventTypes],
        description: input.description ?? null,
        enabled: input.enabled ?? true,
        secret: await options.secrets.seal(secret),
        created_at: createdAt,
        updated_at: createdAt,
      });
      return { ...toEndpoint(row), secret };
    },

    async list(principal, query) {
      authorize(principal, 'webhooks:manage');
      const { rows, total } = await repo.listEndpoints(db, { limit: query.limit, offset: (query.page - 1) * query.limit });
      return page(rows.map(toEndpoint), total, query);
    },

    async get(principal, id) {
      authorize(principal, 'webhooks:manage');
      return toEndpoint(await endpointOrThrow(id));
    },

    async update(principal, id, input) {
      authorize(principal, 'webhooks:manage');
      if (input.url !== undefined) checkUrl(input.url);
      if (input.eventTypes !== undefined) checkEventTypes(input.eventTypes);
      const row = await repo.updateEndpoint(db, id.toLowerCase(), {
        ...(input.url !== undefined ? { url: input.url } : {}),
        ...(input.eventTypes !== undefined ? { event_types: [...input.eventTypes] } : {}),
        ...(input.description !== undefined ? { description: input.description } : {}),
        ...(input.enabled !== undefined ? { enabled: input.enabled } : {}),
        updated_at: now(),
      });
      if (!row) throw notFound(ENDPOINT);
      // Re-enabled: what waited for it is due now.
      if (input.enabled === true) options.deliveriesDue?.();
      return toEndpoint(row);
    },

    async delete(principal, id) {
      authorize(principal, 'webhooks:manage');
      if (!(await repo.deleteEndpoint(db, id.toLowerCase()))) throw notFound(ENDPOINT);
    },

    async rotateSecret(principal, id) {
      authorize(principal, 'webhooks:manage');
      const secret = newWebhookSecret();
      const row = await repo.updateEndpoint(db, id.toLowerCase(), { secret: await options.secrets.seal(secret), updated_at: now() });
      if (!row) throw notFound(ENDPOINT);
      return { ...toEndpoint(row), secret };
    },

    async listDeliveries(principal, endpointId, query) {
      authorize(principal, 'webhooks:manage');
      const endpoint = await endpointOrThrow(endpointId);
      const { rows, total } = await repo.listDeliveries(db, endpoint.id, {
        status: query.status,
        limit: query.limit,
        offset: (query.page - 1) * query.limit,
      });
      return page(rows.map(toDelivery), total, query);
    },

    async redeliver(principal, endpointId, deliveryId) {
      authorize(principal, 'webhooks:manage');
      const row = await repo.redeliver(db, endpointId.toLowerCase(), deliveryId.toLowerCase());
      if (!row) throw notFound('Webhook delivery');
      options.deliveriesDue?.();
      return toDelivery(row);
    },
  };
}
