// Brute-force protection for login: failures are counted per (email, client). After `maxFailures`
// within the window, that client is refused for that email (even with the right password) until the
// oldest counted failure leaves the window. Other clients and other emails are unaffected.
// The in-process store serves one instance; the Redis one shares the count between instances.
import { createHash, randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { RedisConnection } from '../../platform/redis.js';

export interface LoginThrottle {
  /** Seconds to wait before another attempt is allowed, or 0 when allowed now. */
  retryAfterSeconds(key: string): Promise<number>;
  recordFailure(key: string): Promise<void>;
  reset(key: string): Promise<void>;
}

export const throttleKey = (email: string, clientIp: string): string => `${email}\u0000${clientIp}`;

export function createMemoryLoginThrottle(options: {
  maxFailures: number;
  windowSeconds: number;
  maxKeys?: number;
  now?: () => number;
}): LoginThrottle {
  const windowMs = options.windowSeconds * 1000;
  const now = options.now ?? Date.now;
  const failures = new LRUCache<string, number[]>({ max: options.maxKeys ?? 100_000, ttl: windowMs });
  const recent = (key: string): number[] => {
    const cutoff = now() - windowMs;
    return (failures.get(key) ?? []).filter((at) => at > cutoff);
  };
  return {
    async retryAfterSeconds(key) {
      const times = recent(key);
      if (times.length < options.maxFailures) return 0;
      const oldestCounted = times[times.length - options.maxFailures] ?? now();
      return Math.max(1, Math.ceil((oldestCounted + windowMs - now()) / 1000));
    },
    async recordFailure(key) {
      const times = recent(key);
      times.push(now());
      failures.set(key, times.slice(-options.maxFailures));
    },
    async reset(key) {
      failures.delete(key);
    },
  };
}

// Failures as a sorted set of timestamps per key (on Redis's clock), trimmed to the window.
const RECORD_FAILURE = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
return 1`;

const RETRY_AFTER = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < max then return 0 end
local oldest = redis.call('ZRANGE', KEYS[1], count - max, count - max, 'WITHSCORES')
return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))`;

/**
 * The same rule kept in Redis, so that every instance counts one client's failures together;
 * while Redis is away each instance counts in memory.
 */
export function createSharedLoginThrottle(
  redis: RedisConnection,
  options: { maxFailures: number; windowSeconds: number },
  fallback: LoginThrottle = createMemoryLoginThrottle(options),
): LoginThrottle {
  const windowMs = options.windowSeconds * 1000;
  const retryAfter = redis.script<number>('bastionLoginRetryAfter', RETRY_AFTER);
  const recordFailure = redis.script<unknown>('bastionLoginRecordFailure', RECORD_FAILURE);
  const redisKey = (key: string) => `bastion:v1:login-failures:${createHash('sha256').update(key).digest('base64url')}`;
  const attempt = async <T>(viaRedis: () => Promise<T>, viaMemory: () => Promise<T>): Promise<T> => {
    if (!redis.isAvailable()) return viaMemory();
    try {
      return await viaRedis();
    } catch {
      return viaMemory();
    }
  };
  return {
    retryAfterSeconds: (key) =>
      attempt(
        async () => Number(await retryAfter(1, redisKey(key), windowMs, options.maxFailures)),
        () => fallback.retryAfterSeconds(key),
      ),
    recordFailure: (key) =>
      attempt(
        async () => void (await recordFailure(1, redisKey(key), windowMs, randomUUID())),
        () => fallback.recordFailure(key),
      ),
    reset: (key) =>
      attempt(
        async () => {
          await redis.client.del(redisKey(key));
          await fallback.reset(key);
        },
        () => fallback.reset(key),
      ),
  };
}
