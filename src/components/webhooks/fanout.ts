// The relay's `webhooks` publisher: turns each published batch into delivery rows, one per (event,
// enabled endpoint that takes its type), in one statement. The relay moves this publisher's cursor
// only after that statement commits, and a batch published again (a crash in between) adds no
// delivery twice: (endpoint, event) is unique. Sending is the delivery worker's job, not the relay's,
// so a slow or dead endpoint never holds the outbox back.
import type { Database } from '../../platform/db/index.js';
import type { EventPublisher } from '../events/index.js';
import * as repo from './webhooks.repo.js';

export const WEBHOOKS_PUBLISHER_NAME = 'webhooks';

export interface WebhookFanoutOptions {
  readonly database: Database;
  /** Called after deliveries were created: this instance's worker sends them now. */
  readonly deliveriesDue?: () => void;
}

export function createWebhookFanout(options: WebhookFanoutOptions): EventPublisher {
  return {
    name: WEBHOOKS_PUBLISHER_NAME,
    // No endpoint to deliver to (the common case without webhooks): the relay skips reading the
    // events. An endpoint receives the events written after it was created, so one created after
    // this check would not have matched them anyway.
    wants: () => repo.anyEnabledEndpoint(options.database.db),
    async publish(events) {
      const created = await repo.fanOut(options.database.db, events);
      if (created > 0) options.deliveriesDue?.();
    },
    async close() {},
  };
}
