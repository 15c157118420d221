// Redis, when REDIS_URL is set: one connection for commands, one for pub/sub. Commands fail fast
// while Redis is away (no offline queue), so callers fall back to their in-process equivalents at
// once; the connections reconnect by themselves. Going away and coming back are logged once each.
import { Redis } from 'ioredis';
import type { Logger } from './logger.js';

/** A Lua script on the command connection: `numberOfKeys` keys first, then arguments. */
type RedisScript<Result> = (numberOfKeys: number, ...keysAndArgs: Array<string | number>) => Promise<Result>;

export interface RedisConnection {
  readonly client: Redis;
  /**
   * Defines a Lua script (ioredis defineCommand): calls send EVALSHA, and the body goes over the
   * wire only the first time on each connection or after Redis forgot it (NOSCRIPT).
   */
  script<Result>(name: string, lua: string): RedisScript<Result>;
  /** True while the command connection is ready. */
  isAvailable(): boolean;
  /** Subscribes to a channel; the handler is called for every message, across reconnects. */
  subscribe(channel: string, handler: (message: string) => void): Promise<void>;
  /** Called with `false` when Redis goes away and `true` when it is back. */
  onAvailabilityChange(listener: (available: boolean) => void): void;
  ping(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export function connectRedis(url: string, logger: Logger): RedisConnection {
  const options = {
    connectTimeout: 2_000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    // Reconnect forever, backing off to one attempt every 2 s.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
    lazyConnect: false,
  };
  const client = new Redis(url, options);
  // The subscriber keeps an offline queue so that SUBSCRIBE issued before it is ready still goes out.
  const subscriber = new Redis(url, { ...options, enableOfflineQueue: true, maxRetriesPerRequest: null });
  const handlers = new Map<string, Array<(message: string) => void>>();
  const listeners: Array<(available: boolean) => void> = [];
  let available = false;
  let closing = false;

  const setAvailable = (next: boolean) => {
    if (next === available || closing) return;
    available = next;
    if (next) logger.info('redis: connected; shared cache, limits and invalidation are active');
    else logger.warn('redis: unavailable; serving with in-process cache and limits until it returns');
    for (const listener of listeners) listener(next);
  };
  client.on('ready', () => setAvailable(subscriber.status === 'ready'));
  subscriber.on('ready', () => setAvailable(client.status === 'ready'));
  for (const connection of [client, subscriber]) {
    // Without a listener an 'error' event would crash the process; the state change is logged once.
    connection.on('error', () => undefined);
    connection.on('close', () => setAvailable(false));
    connection.on('end', () => setAvailable(false));
  }
  subscriber.on('message', (channel: string, message: string) => {
    for (const handler of handlers.get(channel) ?? []) handler(message);
  });

  return {
    client,
    script<Result>(name: string, lua: string): RedisScript<Result> {
      client.defineCommand(name, { lua });
      const command = (client as unknown as Record<string, (...args: Array<string | number>) => Promise<unknown>>)[name];
      if (!command) throw new Error(`redis: script ${name} was not defined`);
      return (numberOfKeys, ...keysAndArgs) => command.call(client, numberOfKeys, ...keysAndArgs) as Promise<Result>;
    },
    isAvailable: () => available,
    async subscribe(channel, handler) {
      const existing = handlers.get(channel);
      if (existing) existing.push(handler);
      else {
        handlers.set(channel, [handler]);
        // Fails only when the connection ends first; unless we are closing, say why messages stop.
        await subscriber.subscribe(channel).catch((error: unknown) => {
          if (!closing) logger.warn({ err: error, channel }, 'redis: subscribe failed; messages on this channel are not received');
        });
      }
    },
    onAvailabilityChange(listener) {
      listeners.push(listener);
    },
    async ping(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          client.ping(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('redis ping timed out')), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      closing = true;
      available = false; // nothing may be sent on a closed connection (cache replays check this)
      listeners.length = 0;
      await Promise.allSettled([client.quit(), subscriber.quit()]);
      client.disconnect();
      subscriber.disconnect();
    },
  };
}
