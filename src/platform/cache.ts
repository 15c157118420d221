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

// Every Redis operation reads the current epoch inside its script, so all instances always agree on
// which copy is live, even when a pub/sub message was missed. (Keys are derived in the scripts: this
// needs a standalone Redis or a single-slot deployment, not Redis Cluster.)
const READ = `
local epoch = redis.call('get', ARGV[1] .. 'epoch') or '0'
local base = ARGV[1] .. epoch .. ':'
return {epoch, redis.call('get', base .. 'gen:' .. ARGV[2]), redis.call('get', base .. 'val:' .. ARGV[2])}`;

// Stores the value only if neither the epoch nor the key's generation moved since the read.
const SET_IF_UNCHANGED = `
local epoch = redis.call('get', ARGV[1] .. 'epoch') or '0'
if epoch ~= ARGV[3] then return 0 end
local base = ARGV[1] .. epoch .. ':'
local current = redis.call('get', base .. 'gen:' .. ARGV[2])
if (current == false and ARGV[4] == '') or current == ARGV[4] then
  redis.call('set', base .. 'val:' .. ARGV[2], ARGV[5], 'PX', ARGV[6])
  return 1
end
return 0`;

const INVALIDATE = `
local epoch = redis.call('get', ARGV[1] .. 'epoch') or '0'
local base = ARGV[1] .. epoch .. ':'
redis.call('incr', base .. 'gen:' .. ARGV[2])
redis.call('pexpire', base .. 'gen:' .. ARGV[2], ARGV[3])
redis.call('del', base .. 'val:' .. ARGV[2])
redis.call('publish', ARGV[4], ARGV[2])
return 1`;

export function createCache<V>(options: CacheOptions): ReadThroughCache<V> {
  const stats: CacheStats = { hits: 0, sharedHits: 0, misses: 0 };
  const lru = new LRUCache<string, Entry<V>>({ max: options.maxEntries, ttl: Math.max(1, options.ttlMs) });
  const inFlight = new Map<string, Promise<V | null>>();
  // Bumped by every delete; a load stores its result only if the key's generation did not move.
  const generations = new Map<string, number>();
  let clears = 0;
  const shared = options.shared;
  let epoch = '0';
  const scripts = shared && {
    read: shared.redis.script<[string, string | null, string | null]>('bastionCacheRead', READ),
    setIfUnchanged: shared.redis.script<unknown>('bastionCacheSetIfUnchanged', SET_IF_UNCHANGED),
    invalidate: shared.redis.script<unknown>('bastionCacheInvalidate', INVALIDATE),
  };

  const l1TtlMs = () => (shared && !shared.redis.isAvailable() ? Math.min(options.ttlMs, shared.fallbackTtlMs) : options.ttlMs);
  const prefix = `bastion:${FORMAT_VERSION}:${shared?.name}:`;
  const channel = `${prefix}invalidate`;
  const epochKey = `${prefix}epoch`;
  /** A read saw another epoch: copies in this instance's memory may predate it. */
  const adoptEpoch = (seen: string) => {
    if (seen !== epoch) {
      epoch = seen;
      clearLocally();
    }
  };

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
      adoptEpoch(String(await redis.client.incr(epochKey)));
      await redis.client.publish(channel, `epoch:${epoch}`);
    };
    redis.onAvailabilityChange((available) => {
      clearLocally(); // invalidations may have been missed, or are about to be
      if (available) startNewEpoch().catch(() => undefined);
    });
    void redis.subscribe(channel, (message) => {
      if (message.startsWith('epoch:')) adoptEpoch(message.slice('epoch:'.length));
      else forgetLocally(message);
    });
    if (redis.isAvailable()) startNewEpoch().catch(() => undefined);
  }

  const loadThrough = async (key: string, load: (key: string) => Promise<V | null>): Promise<V | null> => {
    if (!shared || !scripts || !shared.redis.isAvailable()) {
      stats.misses++;
      return load(key);
    }
    let seen: { epoch: string; generation: string } | undefined;
    try {
      const [readEpoch, generation, raw] = await scripts.read(0, prefix, key);
      adoptEpoch(readEpoch);
      seen = { epoch: readEpoch, generation: generation ?? '' };
      if (typeof raw === 'string') {
        stats.sharedHits++;
        return JSON.parse(raw) as V | null;
      }
    } catch {
      seen = undefined; // Redis failed mid-way: load from the source, do not store
    }
    stats.misses++;
    const value = await load(key);
    if (seen) {
      scripts
        .setIfUnchanged(0, prefix, key, seen.epoch, seen.generation, JSON.stringify(value), jittered(shared.ttlSeconds * 1000))
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
      if (!shared || !scripts) return;
      // While Redis is away the write reaches no other instance; the epoch bump on return covers it.
      if (!shared.redis.isAvailable()) return;
      scripts.invalidate(0, prefix, key, GENERATION_TTL_MS, channel).catch(() => undefined);
    },
    clear: clearLocally,
    stats,
  };
}

/** The in-process cache alone (tests, CLI). */
export const createLocalCache = <V>(options: { maxEntries: number; ttlMs: number }): ReadThroughCache<V> =>
  createCache<V>(options);
