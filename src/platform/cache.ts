// Cache-aside in two tiers: an in-process LRU (L1) in front of Redis (L2, shared by every instance)
// when REDIS_URL is set, the LRU alone otherwise.
//
// - Single-flight: concurrent misses on one key share one load, so a cold key under load costs one
//   database read per instance.
// - Misses are cached too (negative caching); TTLs get jitter so keys do not expire in lockstep.
// - A write deletes the key everywhere: L1 here, the Redis copy, and (pub/sub) every other
//   instance's L1. A load that a delete overtook is never stored: locally a generation counter
//   says so, in Redis a compare-and-set on the key's generation.
// - Keys are versioned (format version and an epoch). Every instance that (re)connects to Redis
//   bumps the epoch: writes made while Redis was away (or while this process was not yet there)
//   were never invalidated in Redis, so every copy from before is orphaned and expires unread.
// - While Redis is away, L1 entries live at most `fallbackL1TtlMs` (1 s), which bounds how stale
//   another instance's copy can be without invalidation messages.
import { LRUCache } from 'lru-cache';
import type { Logger } from './logger.js';
import type { RedisConnection } from './redis.js';

interface Entry<V> {
  readonly value: V | null;
}

export interface CacheStats {
  /** Served from this instance's memory. */
  hits: number;
  /** Served from Redis. */
  sharedHits: number;
  /** Loaded from the source (database). */
  misses: number;
}

export interface ReadThroughCache<V> {
  get(key: string, load: (key: string) => Promise<V | null>): Promise<V | null>;
  /** The value held in this instance's memory, without loading: undefined when not there. */
  peek(key: string): V | null | undefined;
  /** Deletes the key here and, with Redis, everywhere. Call it after the write committed. */
  delete(key: string): void;
  clear(): void;
  readonly stats: Readonly<CacheStats>;
}

export interface CacheOptions {
  readonly maxEntries: number;
  /** L1 lifetime; 0 disables L1. */
  readonly ttlMs: number;
  /** Disables caching altogether: every get loads (benchmarks, debugging). */
  readonly disabled?: boolean;
  readonly shared?: {
    readonly redis: RedisConnection;
    /** Namespace of this cache's keys, e.g. "users". */
    readonly name: string;
    readonly ttlSeconds: number;
    /** L1 lifetime while Redis is away. */
    readonly fallbackTtlMs: number;
    readonly logger: Logger;
  };
}

const FORMAT_VERSION = 'v1';
const JITTER = 0.1;
const GENERATION_TTL_MS = 86_400_000;
// Jitter only ever shortens a lifetime: a 1 s bound stays a 1 s bound.
const jittered = (ms: number) => Math.max(1, Math.floor(ms * (1 - JITTER * Math.random())));

// Stores the value only if the key's generation is still the one read before the load.
const SET_IF_GENERATION = `
local current = redis.call('get', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;

export function createCache<V>(options: CacheOptions): ReadThroughCache<V> {
  const stats: CacheStats = { hits: 0, sharedHits: 0, misses: 0 };
  const lru = new LRUCache<string, Entry<V>>({ max: options.maxEntries, ttl: Math.max(1, options.ttlMs) });
  const inFlight = new Map<string, Promise<V | null>>();
  // Bumped by every delete; a load stores its result only if the key's generation did not move.
  const generations = new Map<string, number>();
  let clears = 0;
  const shared = options.shared;
  let epoch = '0';

  const l1TtlMs = () => (shared && !shared.redis.isAvailable() ? Math.min(options.ttlMs, shared.fallbackTtlMs) : options.ttlMs);
  const redisKey = (kind: 'val' | 'gen', key: string) => `bastion:${FORMAT_VERSION}:${shared?.name}:${epoch}:${kind}:${key}`;
  const channel = `bastion:${FORMAT_VERSION}:${shared?.name}:invalidate`;
  const epochKey = `bastion:${FORMAT_VERSION}:${shared?.name}:epoch`;

  const forgetLocally = (key: string) => {
    lru.delete(key);
    inFlight.delete(key);
    generations.set(key, (generations.get(key) ?? 0) + 1);
    // Generations only matter while a load may be in flight; keep the map from growing forever.
    if (generations.size > options.maxEntries) {
      generations.clear();
      clears++;
    }
  };
  const clearLocally = () => {
    lru.clear();
    inFlight.clear();
    generations.clear();
    clears++;
  };

  if (shared) {
    const { redis } = shared;
    const startNewEpoch = async () => {
      epoch = String(await redis.client.incr(epochKey));
      clearLocally();
      await redis.client.publish(channel, `epoch:${epoch}`);
    };
    redis.onAvailabilityChange((available) => {
      clearLocally(); // invalidations may have been missed, or are about to be
      if (available) startNewEpoch().catch(() => undefined);
    });
    void redis.subscribe(channel, (message) => {
      if (message.startsWith('epoch:')) {
        const announced = message.slice('epoch:'.length);
        if (Number(announced) > Number(epoch)) {
          epoch = announced;
          clearLocally();
        }
      } else forgetLocally(message);
    });
    if (redis.isAvailable()) startNewEpoch().catch(() => undefined);
  }

  const loadThrough = async (key: string, load: (key: string) => Promise<V | null>): Promise<V | null> => {
    if (!shared || !shared.redis.isAvailable()) {
      stats.misses++;
      return load(key);
    }
    const { client } = shared.redis;
    let generation: string | null | undefined;
    try {
      const [generationRead, valueRead] = (await client.pipeline().get(redisKey('gen', key)).get(redisKey('val', key)).exec()) ?? [];
      generation = (generationRead?.[1] as string | null | undefined) ?? null;
      const raw = valueRead?.[1];
      if (typeof raw === 'string') {
        stats.sharedHits++;
        return JSON.parse(raw) as V | null;
      }
    } catch {
      generation = undefined; // Redis failed mid-way: load from the source, do not store
    }
    stats.misses++;
    const value = await load(key);
    if (generation !== undefined) {
      client
        .eval(SET_IF_GENERATION, 2, redisKey('gen', key), redisKey('val', key), generation ?? '', JSON.stringify(value), jittered(shared.ttlSeconds * 1000))
        .catch(() => undefined);
    }
    return value;
  };

  return {
    peek(key) {
      if (options.disabled || l1TtlMs() === 0) return undefined;
      const cached = lru.get(key);
      if (!cached) return undefined;
      stats.hits++;
      return cached.value;
    },
    async get(key, load) {
      if (options.disabled) {
        stats.misses++;
        return load(key);
      }
      const ttl = l1TtlMs();
      if (ttl > 0) {
        const cached = lru.get(key);
        if (cached) {
          stats.hits++;
          return cached.value;
        }
      }
      const pending = inFlight.get(key);
      if (pending) {
        stats.hits++;
        return pending;
      }
      const generation = generations.get(key) ?? 0;
      const clearsAtStart = clears;
      const loading = loadThrough(key, load).then(
        (value) => {
          if (inFlight.get(key) === loading) inFlight.delete(key);
          const unchanged = (generations.get(key) ?? 0) === generation && clears === clearsAtStart;
          if (unchanged && ttl > 0) lru.set(key, { value }, { ttl: jittered(ttl) });
          return value;
        },
        (error: unknown) => {
          if (inFlight.get(key) === loading) inFlight.delete(key);
          throw error;
        },
      );
      inFlight.set(key, loading);
      return loading;
    },
    delete(key) {
      forgetLocally(key);
      if (!shared) return;
      const { redis } = shared;
      // While Redis is away the write reaches no other instance; the epoch bump on return covers it.
      if (!redis.isAvailable()) return;
      redis.client
        .multi()
        .incr(redisKey('gen', key))
        .pexpire(redisKey('gen', key), GENERATION_TTL_MS)
        .del(redisKey('val', key))
        .publish(channel, key)
        .exec()
        .catch(() => undefined);
    },
    clear: clearLocally,
    stats,
  };
}

/** The in-process cache alone (tests, CLI). */
export const createLocalCache = <V>(options: { maxEntries: number; ttlMs: number }): ReadThroughCache<V> =>
  createCache<V>(options);
