// Rate limiting by GCRA (the generic cell rate algorithm, as redis-cell and Stripe use): a client
// may send `max` requests at once, then one every window/max; no window-boundary bursts. With Redis
// the state is one key per client updated by a Lua script on Redis's clock, so N instances enforce
// one limit; without Redis (or while it is away) each instance keeps the same state in memory.
// The HTTP transport turns decisions into RateLimit-* / Retry-After headers and 429s.
import { LRUCache } from 'lru-cache';
import type { RedisConnection } from './redis.js';

const GCRA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nextTat = tat + interval
if nextTat - window > now then
  return {0, math.ceil(nextTat - window - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(nextTat), 'PX', math.ceil(nextTat - now))
return {1, 0, math.ceil(nextTat - now)}`;

export interface GcraDecision {
  readonly allowed: boolean;
  /** Requests still allowed right now. */
  readonly remaining: number;
  /** Rejected: ms until the next request is allowed. Allowed: ms until the budget is full again. */
  readonly waitMs: number;
}

export interface Gcra {
  /** Synchronous when decided in memory (no Redis, or Redis away), a promise when Redis decides. */
  take(key: string, max: number, windowMs: number): GcraDecision | Promise<GcraDecision>;
}

function decide(max: number, windowMs: number, allowed: boolean, waitMs: number, untilFullMs: number): GcraDecision {
  const interval = windowMs / max;
  if (!allowed) return { allowed, remaining: 0, waitMs };
  return { allowed, remaining: Math.max(0, Math.floor((windowMs - untilFullMs) / interval)), waitMs: untilFullMs };
}

export function createLocalGcra(maxKeys = 100_000, now: () => number = Date.now): Gcra {
  const tats = new LRUCache<string, number>({ max: maxKeys });
  return {
    take(key, max, windowMs) {
      const at = now();
      const interval = windowMs / max;
      const tat = Math.max(tats.get(key) ?? at, at);
      const nextTat = tat + interval;
      if (nextTat - windowMs > at) return decide(max, windowMs, false, Math.ceil(nextTat - windowMs - at), 0);
      tats.set(key, nextTat, { ttl: Math.max(1, Math.ceil(nextTat - at)) });
      return decide(max, windowMs, true, 0, Math.ceil(nextTat - at));
    },
  };
}

/** Redis when it is there, this instance's memory while it is not. */
export function createSharedGcra(redis: RedisConnection, fallback: Gcra = createLocalGcra()): Gcra {
  return {
    take(key, max, windowMs) {
      if (!redis.isAvailable()) return fallback.take(key, max, windowMs);
      return (redis.client.eval(GCRA, 1, `bastion:v1:rate:${key}`, String(windowMs / max), String(windowMs)) as Promise<
        [number, number, number]
      >).then(
        ([allowed, waitMs, untilFullMs]) => decide(max, windowMs, allowed === 1, waitMs, untilFullMs),
        () => fallback.take(key, max, windowMs),
      );
    },
  };
}
