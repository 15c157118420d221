// Live events: what just happened, told to whoever listens now, on every instance. A publish
// reaches this instance's listeners at once and, when Redis is configured, the other instances'
// through one pub/sub channel. Best effort and at most once: a listener that was not listening, an
// instance that was cut off from Redis, or a message Redis dropped misses the event for good. It
// feeds live views (GraphQL subscriptions); what must not be missed goes through the ledger's tables
// and, later, the outbox.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Logger } from './logger.js';
import type { RedisConnection } from './redis.js';

export interface LiveEvents {
  /** Tells every listener of any of `topics`, here and on the other instances; never throws. */
  publish(topics: readonly string[], payload: unknown): void;
  /** Calls `listener` with the payload of every event published to `topic` from now on; returns the unsubscribe. */
  subscribe(topic: string, listener: (payload: unknown) => void): () => void;
  /** Listeners currently subscribed, over all topics (a gauge for tests and metrics). */
  listenerCount(): number;
}

interface Envelope {
  /** The publishing instance: it told its own listeners already. */
  readonly origin: string;
  readonly topics: readonly string[];
  readonly payload: unknown;
}

const isEnvelope = (value: unknown): value is Envelope => {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return typeof candidate['origin'] === 'string' && Array.isArray(candidate['topics']) && candidate['topics'].every((topic) => typeof topic === 'string');
};

export function createLiveEvents(options: { logger: Logger; redis?: RedisConnection; channel?: string }): LiveEvents {
  const { logger, redis } = options;
  const channel = options.channel ?? 'bastion:live-events';
  const origin = randomUUID();
  const local = new EventEmitter();
  local.setMaxListeners(0);
  let listeners = 0;

  const deliver = (topics: readonly string[], payload: unknown) => {
    for (const topic of topics) {
      // A listener's failure is its own: the others still hear the event.
      try {
        local.emit(topic, payload);
      } catch (error) {
        logger.error({ err: error, topic }, 'live events: a listener failed');
      }
    }
  };

  if (redis) {
    void redis.subscribe(channel, (message) => {
      let envelope: unknown;
      try {
        envelope = JSON.parse(message);
      } catch {
        return;
      }
      if (!isEnvelope(envelope) || envelope.origin === origin) return;
      deliver(envelope.topics, envelope.payload);
    });
  }

  return {
    publish(topics, payload) {
      if (topics.length === 0) return;
      deliver(topics, payload);
      if (!redis || !redis.isAvailable()) return;
      const envelope: Envelope = { origin, topics, payload };
      redis.client.publish(channel, JSON.stringify(envelope)).catch((error: unknown) => {
        logger.debug({ err: error }, 'live events: publishing to Redis failed; other instances miss this event');
      });
    },
    subscribe(topic, listener) {
      local.on(topic, listener);
      listeners++;
      let subscribed = true;
      return () => {
        if (!subscribed) return;
        subscribed = false;
        listeners--;
        local.off(topic, listener);
      };
    },
    listenerCount: () => listeners,
  };
}
