// The webhooks component's public surface: endpoint management, the relay's fan-out publisher and
// the delivery worker, wired together by createWebhooks.
import type { Registry } from 'prom-client';
import type { Database } from '../../platform/db/index.js';
import type { Logger } from '../../platform/logger.js';
import type { KeySealer } from '../auth/index.js';
import type { EventPublisher } from '../events/index.js';
import { createDeliveryWorker, type DeliverySettings, type DeliveryWorker } from './delivery-worker.js';
import { createWebhookFanout } from './fanout.js';
import { createSecretStore } from './secrets.js';
import { createWebhooksService, type WebhooksService } from './webhooks.service.js';

export { createDeliveryWorker, retryDelayMs, type DeliverySettings, type DeliveryWorker } from './delivery-worker.js';
export { createWebhookFanout, WEBHOOKS_PUBLISHER_NAME } from './fanout.js';
export { createWebhooksService, type WebhookDelivery, type WebhookEndpoint, type WebhooksService } from './webhooks.service.js';
export { blockedReason, guardedLookup, targetProblem } from './ssrf-guard.js';
export { webhooksRoutes } from './http.js';
/** Schemas the transports validate with. */
export { CreateEndpointBody, DeliveryQuery, UpdateEndpointBody } from './webhooks.schemas.js';

export interface Webhooks {
  readonly service: WebhooksService;
  /** The relay's `webhooks` publisher: published events become deliveries. */
  readonly fanout: EventPublisher;
  /** Sends due deliveries; start() it, stop() it on shutdown. */
  readonly worker: DeliveryWorker;
}

export function createWebhooks(options: {
  readonly database: Database;
  readonly logger: Logger;
  /** KEY_ENCRYPTION_SECRET's sealer: endpoint secrets are stored sealed with it; unset: as they are. */
  readonly sealer: KeySealer | undefined;
  readonly settings: DeliverySettings;
  readonly registry?: Registry;
}): Webhooks {
  const secrets = createSecretStore(options.sealer);
  const worker = createDeliveryWorker({ ...options, secrets });
  return {
    service: createWebhooksService({
      database: options.database,
      secrets,
      targets: { allowHttp: options.settings.allowHttp, allowPrivate: options.settings.allowPrivate },
      deliveriesDue: () => worker.wake(),
    }),
    fanout: createWebhookFanout({ database: options.database, deliveriesDue: () => worker.wake() }),
    worker,
  };
}
