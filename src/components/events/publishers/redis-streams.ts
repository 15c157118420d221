// Redis Streams: one MULTI/EXEC per batch of `XADD <stream> MAXLEN ~ <n> * id <id> type <type> event <json>`,
// so a batch lands contiguous and in order. A connection of its own (the app's shared one is tuned for
// the cache): opened on the first publish, reconnecting forever, and failing commands at once while
// Redis is away (no offline queue) so that events wait in the outbox rather than in this process.
// How durable an acknowledged XADD is depends on the server's persistence (appendonly/appendfsync).
import { Redis } from 'ioredis';
import type { Logger } from '../../../platform/logger.js';
import { serializeEvent, type CloudEvent } from '../cloud-event.js';
import { PublishTimeoutError } from './deadline.js';
import { Availability } from './availability.js';
import type { EventPublisher } from './publisher.js';

export const DEFAULT_REDIS_STREAM = 'bastion:events';
export const DEFAULT_REDIS_STREAM_MAX_LENGTH = 1_000_000;

export interface RedisStreamsPublisherOptions {
  /** redis://[:password@]host:port[/db] */
  readonly url: string;
  readonly stream?: string;
  /** Entries the stream keeps, approximately (`MAXLEN ~`): older ones are trimmed. */
  readonly maxLength?: number;
  /** The longest one publish (connecting included) may take before it rejects. */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

export function createRedisStreamsPublisher(options: RedisStreamsPublisherOptions): EventPublisher {
  const stream = options.stream ?? DEFAULT_REDIS_STREAM;
  const maxLength = options.maxLength ?? DEFAULT_REDIS_STREAM_MAX_LENGTH;
  const { logger, timeoutMs } = options;
  const client = new Redis(options.url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    // Reconnect forever, backing off to one attempt every 2 s.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
    // How long disconnect() waits for a socket to close before destroying it. Its timer is not
    // cleared when the socket had already failed, so the default 2 s would hold a closed publisher's
    // process open that long.
    disconnectTimeout: 200,
  });
  let firstConnect: Promise<void> | undefined;

  const availability = new Availability(logger, 'redis streams', { stream });
  // Without a listener an 'error' event would crash the process; the outage is logged once.
  client.on('error', (error: Error) => availability.down(error));
  client.on('close', () => availability.down(new Error('connection closed')));
  client.on('ready', () => availability.up());

  const publishBatch = async (events: readonly CloudEvent[]) => {
    if (client.status === 'wait') {
      // The first publish connects; a failure leaves ioredis retrying in the background.
      firstConnect ??= client.connect().finally(() => (firstConnect = undefined));
    }
    if (firstConnect) await firstConnect;
    const transaction = client.multi();
    for (const event of events) {
      transaction.xadd(stream, 'MAXLEN', '~', maxLength, '*', 'id', event.id, 'type', event.type, 'event', serializeEvent(event));
    }
    const replies = await transaction.exec();
    if (!replies) throw new Error(`redis streams: the transaction on ${stream} was discarded`);
    const failures = replies.filter(([error]) => error);
    const [firstFailure] = failures;
    if (firstFailure) {
      throw new Error(`redis streams: ${failures.length} of ${events.length} events were not added to ${stream}`, { cause: firstFailure[0] });
    }
  };

  return {
    name: 'redis',
    async publish(events) {
      if (events.length === 0 && !availability.closed) return;
      await availability.publish(() => publishBatch(events), timeoutMs, (error) => {
        // No reply in time: the socket may be half-open; reconnect rather than queue behind it.
        if (error instanceof PublishTimeoutError && client.status === 'ready') client.disconnect(true);
      });
    },
    async close() {
      availability.closed = true;
      if (client.status === 'ready') await client.quit().catch(() => undefined);
      client.disconnect();
    },
  };
}
