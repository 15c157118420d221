// Cache-aside in two tiers: an in-process LRU (L1) in front of Redis (L2, shared by every instance)
// when REDIS_URL is set, the LRU alone otherwise.
//
// - One read method, `get`: a value held in memory is returned as is, synchronously (the hot path of
//   every authenticated request costs no promise); anything else is a promise.
// - Single-flight: concurrent misses on one key share one load, so a cold key under load costs one
//   database read per instance.
// - Misses are cached too (negative caching); TTLs get jitter so keys do not expire in lockstep.
// - A write deletes the key everywhere: L1 here, the Redis copy, and (pub/sub) every other
//   instance's L1. A load that a delete overtook is never stored: locally a generation counter
//   says so, in Redis a compare-and-set on the key's generation.
// - Staleness is bounded without anyone's help: no tier trusts a copy longer than `maxStalenessMs`
//   after the source read that produced it began (L1 and Redis lifetimes are cut to what is left of
//   that). So a write whose invalidation never reached Redis, or an instance that missed the
//   message, is still seen everywhere within the bound. Durations only, never clocks compared
//   across machines.
// - An invalidation that Redis failed, or that was issued while Redis was away, is kept and sent
//   again with backoff; past `maxPendingInvalidations` one epoch bump replaces them all. While a
//   key's invalidation is pending, this instance neither reads nor stores that key in Redis.
// - Keys are versioned (format version and an epoch). Every instance that (re)connects to Redis
//   bumps the epoch: Redis may have lost acknowledged writes in a failover, so every copy from
//   before is orphaned and expires unread.
// - Every failed Redis call is counted (stats.failures, exported as a metric) and logged as a
//   warning, at most once per operation per 10 s so that an outage does not flood the log.
import { LRUCache } from 'lru-cache';
import type { Logger } from './logger.js';
import type { RedisConnection } from './redis.js';

interface Entry<V> {
  readonly value: V | null;
}

/** A value with the moment (performance.now()) after which no tier may serve it any more. */
interface Loaded<V> {
  readonly value: V | null;
  readonly trustedUntilMs: number;
}

/** The Redis calls the cache makes; a failure of each is counted under its name. */
export type CacheOperation = 'read' | 'store' | 'invalidate' | 'epoch';

export interface CacheStats {
  /** Served from this instance's memory. */
  hits: number;
  /** Served from Redis. */
  sharedHits: number;
  /** Loaded from the source (database). */
  misses: number;
  /** Redis calls that failed, by operation. */
  readonly failures: Record<CacheOperation, number>;
  /** Invalidations that failed or were issued while Redis was away, delivered later (by key or by an epoch bump). */
  replayedInvalidations: number;
  /** Invalidations not yet delivered to Redis. */
  pendingInvalidations: number;
  /** Epoch bumps made because more invalidations were pending than the cache keeps. */
  forcedEpochBumps: number;
}

/** What a read gives: the value itself when this instance holds it in memory, a promise when it must wait. */
export type MaybePromise<T> = T | Promise<T>;

export interface ReadThroughCache<V> {
  /**
   * The key's value (null: known absent). Returned as is, synchronously, when this instance holds it
   * in memory, so a hot read costs no promise; a promise when it comes from Redis or `load`.
   */
  get(key: string, load: (key: string) => Promise<V | null>): MaybePromise<V | null>;
  /** Deletes the key here and, with Redis, everywhere. Call it after the write committed. */
  delete(key: string): void;
  clear(): void;
  readonly stats: Readonly<CacheStats>;
}

export interface CacheOptions {
  readonly maxEntries: number;
  /** L1 lifetime; 0 disables L1. */
  readonly ttlMs: number;
  /**
   * No copy (L1 or Redis) is served longer than this after the source read that produced it
   * began: the bound on how stale a read can be when an invalidation is lost. Unset: no bound.
   */
  readonly maxStalenessMs?: number;
  /** Disables caching altogether: every get loads (benchmarks, debugging). */
  readonly disabled?: boolean;
  readonly shared?: {
    readonly redis: RedisConnection;
    /** Namespace of this cache's keys, e.g. "users". */
    readonly name: string;
    /** Longest lifetime of a Redis copy (the staleness bound may cut it shorter). */
    readonly ttlSeconds: number;
    readonly logger: Logger;
    /** Invalidations kept for replay before one epoch bump replaces them; 10,000 by default. */
    readonly maxPendingInvalidations?: number;
  };
  /** Test seam: runs before an invalidation is sent to Redis; a throw stands for Redis failing the call. */
  readonly beforeInvalidate?: (keys: readonly string[]) => void;
}

const FORMAT_VERSION = 'v1';
const JITTER = 0.1;
const GENERATION_TTL_MS = 86_400_000;
const DEFAULT_MAX_PENDING_INVALIDATIONS = 10_000;
/** Keys per replayed invalidation script call. */
const REPLAY_BATCH_SIZE = 500;
const RETRY_MIN_DELAY_MS = 100;
const RETRY_MAX_DELAY_MS = 5_000;
const FAILURE_LOG_INTERVAL_MS = 10_000;
// Jitter only ever shortens a lifetime: a 1 s bound stays a 1 s bound.
const jittered = (ms: number) => Math.max(1, Math.floor(ms * (1 - JITTER * Math.random())));

// Every Redis operation reads the current epoch inside its script, so all instances always agree on
// which copy is live, even when a pub/sub message was missed. (Keys are derived in the scripts: this
// needs a standalone Redis or a single-slot deployment, not Redis Cluster.) The value's remaining
// lifetime comes back too: a copy read from Redis is trusted no longer than Redis keeps it.
const READ = `
local epoch = redis.call('get', ARGV[1] .. 'epoch') or '0'
local base = ARGV[1] .. epoch .. ':'
return {epoch, redis.call('get', base .. 'gen:' .. ARGV[2]), redis.call('get', base .. 'val:' .. ARGV[2]), redis.call('pttl', base .. 'val:' .. ARGV[2])}`;

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

// ARGV: prefix, generation TTL, channel, then the keys (one for a write, a batch for a replay).
const INVALIDATE = `
local epoch = redis.call('get', ARGV[1] .. 'epoch') or '0'
local base = ARGV[1] .. epoch .. ':'
for i = 4, #ARGV do
  redis.call('incr', base .. 'gen:' .. ARGV[i])
  redis.call('pexpire', base .. 'gen:' .. ARGV[i], ARGV[2])
  redis.call('del', base .. 'val:' .. ARGV[i])
  redis.call('publish', ARGV[3], ARGV[i])
end
return #ARGV - 3`;

const FAILURE_MEANING: Record<CacheOperation, string> = {
  read: 'served from the database instead',
  store: 'the value was not shared',
  invalidate: 'kept and retried; other instances may serve the old value until the staleness bound',
  epoch: 'retried',
};

/** Counts every failure; logs the first, then at most one line per operation per interval. */
function failureReporter(stats: CacheStats, logger: Logger | undefined, cache: string) {
  const lastLoggedAtMs = new Map<CacheOperation, number>();
  const unlogged = new Map<CacheOperation, number>();
  return (operation: CacheOperation, error: unknown): void => {
    stats.failures[operation]++;
    const nowMs = performance.now();
    const last = lastLoggedAtMs.get(operation);
    if (last !== undefined && nowMs - last < FAILURE_LOG_INTERVAL_MS) {
      unlogged.set(operation, (unlogged.get(operation) ?? 0) + 1);
      return;
    }
    lastLoggedAtMs.set(operation, nowMs);
    const notLoggedBefore = unlogged.get(operation) ?? 0;
    unlogged.set(operation, 0);
    logger?.warn({ cache, operation, err: error, notLoggedBefore }, `cache: a Redis ${operation} failed; ${FAILURE_MEANING[operation]}`);
  };
}

export function createCache<V>(options: CacheOptions): ReadThroughCache<V> {
  const stats: CacheStats = {
    hits: 0,
    sharedHits: 0,
    misses: 0,
    failures: { read: 0, store: 0, invalidate: 0, epoch: 0 },
    replayedInvalidations: 0,
    pendingInvalidations: 0,
    forcedEpochBumps: 0,
  };
  const lru = new LRUCache<string, Entry<V>>({ max: options.maxEntries, ttl: Math.max(1, options.ttlMs) });
  const inFlight = new Map<string, Promise<V | null>>();
  // Bumped by every delete; a load stores its result only if the key's generation did not move.
  const generations = new Map<string, number>();
  let clears = 0;
  const maxStalenessMs = options.maxStalenessMs ?? Number.POSITIVE_INFINITY;
  const shared = options.shared;
  const reportFailure = failureReporter(stats, shared?.logger, shared?.name ?? 'local');
  let epoch = '0';
  const scripts = shared && {
    read: shared.redis.script<[string, string | null, string | null, number]>('bastionCacheRead', READ),
    setIfUnchanged: shared.redis.script<unknown>('bastionCacheSetIfUnchanged', SET_IF_UNCHANGED),
    invalidate: shared.redis.script<unknown>('bastionCacheInvalidateKeys', INVALIDATE),
  };

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

  // ---- invalidations that have not reached Redis yet ----
  const maxPending = shared?.maxPendingInvalidations ?? DEFAULT_MAX_PENDING_INVALIDATIONS;
  /** Key -> number of the latest delete of it that Redis has not taken. */
  const pending = new Map<string, number>();
  let deletes = 0;
  let epochBumpOwed = false;
  let flushing = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelayMs = RETRY_MIN_DELAY_MS;
  const countPending = () => (stats.pendingInvalidations = pending.size);

  const sendInvalidation = async (keys: readonly string[]): Promise<void> => {
    if (!shared || !scripts) return;
    try {
      options.beforeInvalidate?.(keys);
      await scripts.invalidate(0, prefix, GENERATION_TTL_MS, channel, ...keys);
    } catch (error) {
      reportFailure('invalidate', error);
      throw error;
    }
  };

  /** Orphans every copy in Redis and every other instance's L1; covers every delete made before it. */
  const startNewEpoch = async (): Promise<void> => {
    if (!shared) return;
    const coveredDeletes = deletes;
    try {
      adoptEpoch(String(await shared.redis.client.incr(epochKey)));
    } catch (error) {
      reportFailure('epoch', error);
      throw error;
    }
    epochBumpOwed = false;
    for (const [key, number] of pending) {
      if (number > coveredDeletes) continue;
      pending.delete(key);
      stats.replayedInvalidations++;
    }
    countPending();
    // Instances that miss this message adopt the epoch at their next Redis read.
    await shared.redis.client.publish(channel, `epoch:${epoch}`).catch((error: unknown) => reportFailure('epoch', error));
  };

  const scheduleFlush = () => {
    if (retryTimer || flushing) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void flush();
    }, retryDelayMs);
    retryTimer.unref();
  };

  /** Sends what is owed (an epoch bump, then pending keys in batches); on failure retries with backoff. */
  const flush = async (): Promise<void> => {
    // While Redis is away there is nothing to try; its return calls flush.
    if (flushing || !shared?.redis.isAvailable()) return;
    flushing = true;
    try {
      if (epochBumpOwed) await startNewEpoch();
      while (pending.size > 0) {
        const batch = [...pending].slice(0, REPLAY_BATCH_SIZE);
        await sendInvalidation(batch.map(([key]) => key));
        for (const [key, number] of batch) {
          if (pending.get(key) !== number) continue; // deleted again meanwhile: that one is still owed
          pending.delete(key);
          stats.replayedInvalidations++;
        }
        countPending();
      }
      retryDelayMs = RETRY_MIN_DELAY_MS;
    } catch {
      retryDelayMs = Math.min(retryDelayMs * 2, RETRY_MAX_DELAY_MS); // already counted and logged
    } finally {
      flushing = false;
      if (pending.size > 0 || epochBumpOwed) scheduleFlush();
    }
  };

  const keepForReplay = (key: string, number: number) => {
    if (pending.size >= maxPending && !pending.has(key)) {
      // Too many to replay one by one: one epoch bump invalidates them all.
      pending.clear();
      if (!epochBumpOwed) stats.forcedEpochBumps++;
      epochBumpOwed = true;
    } else {
      pending.set(key, number);
    }
    countPending();
    scheduleFlush();
  };

  const invalidateShared = (key: string) => {
    const number = ++deletes;
    if (!shared?.redis.isAvailable()) return keepForReplay(key, number);
    sendInvalidation([key]).then(
      () => {
        const owed = pending.get(key);
        if (owed !== undefined && owed < number) {
          pending.delete(key); // this newer invalidation covers the older one
          stats.replayedInvalidations++;
          countPending();
        }
        // Redis takes calls again: deliver the rest now rather than at the next backoff step.
        if (pending.size > 0 || epochBumpOwed) void flush();
      },
      () => keepForReplay(key, number),
    );
  };

  if (shared) {
    const { redis } = shared;
    redis.onAvailabilityChange((available) => {
      clearLocally(); // invalidations may have been missed, or are about to be
      if (!available) return;
      epochBumpOwed = true;
      retryDelayMs = RETRY_MIN_DELAY_MS;
      void flush();
    });
    void redis.subscribe(channel, (message) => {
      if (message.startsWith('epoch:')) adoptEpoch(message.slice('epoch:'.length));
      else forgetLocally(message);
    });
    if (redis.isAvailable()) {
      epochBumpOwed = true;
      void flush();
    }
  }

  // ---- reads ----
  const fromSource = async (key: string, load: (key: string) => Promise<V | null>): Promise<Loaded<V>> => {
    stats.misses++;
    const startedAtMs = performance.now();
    return { value: await load(key), trustedUntilMs: startedAtMs + maxStalenessMs };
  };

  const storeShared = (key: string, seen: { epoch: string; generation: string }, loaded: Loaded<V>) => {
    if (!shared || !scripts) return;
    const lifetimeMs = Math.min(loaded.trustedUntilMs - performance.now(), shared.ttlSeconds * 1000);
    if (lifetimeMs < 1) return; // the load took longer than the bound: too old to share
    scripts
      .setIfUnchanged(0, prefix, key, seen.epoch, seen.generation, JSON.stringify(loaded.value), jittered(lifetimeMs))
      .catch((error: unknown) => reportFailure('store', error));
  };

  const loadThrough = async (key: string, load: (key: string) => Promise<V | null>): Promise<Loaded<V>> => {
    // A key whose invalidation Redis has not taken may still have its old copy there.
    if (!shared || !scripts || !shared.redis.isAvailable() || pending.has(key)) return fromSource(key, load);
    let seen: { epoch: string; generation: string } | undefined;
    const sentAtMs = performance.now();
    try {
      const [readEpoch, generation, raw, remainingMs] = await scripts.read(0, prefix, key);
      adoptEpoch(readEpoch);
      seen = { epoch: readEpoch, generation: generation ?? '' };
      if (typeof raw === 'string') {
        stats.sharedHits++;
        // Redis counted the remaining lifetime after we sent the read: measured from then, it errs short.
        const lifetimeMs = Math.min(remainingMs >= 0 ? remainingMs : Number.POSITIVE_INFINITY, maxStalenessMs);
        return { value: JSON.parse(raw) as V | null, trustedUntilMs: sentAtMs + lifetimeMs };
      }
    } catch (error) {
      reportFailure('read', error);
      seen = undefined; // Redis failed mid-way: load from the source, do not store
    }
    const loaded = await fromSource(key, load);
    if (seen) storeShared(key, seen, loaded);
    return loaded;
  };

  const remember = (key: string, loaded: Loaded<V>) => {
    const lifetimeMs = Math.min(options.ttlMs, loaded.trustedUntilMs - performance.now());
    if (lifetimeMs >= 1) lru.set(key, { value: loaded.value }, { ttl: jittered(lifetimeMs) });
  };

  /** A miss of this instance's memory: joins a load of the key under way, or starts one (single-flight). */
  const loadShared = (key: string, load: (key: string) => Promise<V | null>): Promise<V | null> => {
    const pendingLoad = inFlight.get(key);
    if (pendingLoad) {
      stats.hits++;
      return pendingLoad;
    }
    const generation = generations.get(key) ?? 0;
    const clearsAtStart = clears;
    const loading = loadThrough(key, load).then(
      (loaded) => {
        if (inFlight.get(key) === loading) inFlight.delete(key);
        const unchanged = (generations.get(key) ?? 0) === generation && clears === clearsAtStart;
        if (unchanged && options.ttlMs > 0) remember(key, loaded);
        return loaded.value;
      },
      (error: unknown) => {
        if (inFlight.get(key) === loading) inFlight.delete(key);
        throw error;
      },
    );
    inFlight.set(key, loading);
    return loading;
  };

  return {
    get(key, load) {
      if (options.disabled) {
        stats.misses++;
        return load(key);
      }
      if (options.ttlMs > 0) {
        const cached = lru.get(key);
        if (cached) {
          stats.hits++;
          return cached.value;
        }
      }
      return loadShared(key, load);
    },
    delete(key) {
      forgetLocally(key);
      if (shared) invalidateShared(key);
    },
    clear: clearLocally,
    stats,
  };
}

/** The in-process cache alone (tests, CLI). */
export const createLocalCache = <V>(options: { maxEntries: number; ttlMs: number; maxStalenessMs?: number }): ReadThroughCache<V> =>
  createCache<V>(options);
