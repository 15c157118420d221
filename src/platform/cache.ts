// Cache-aside with single-flight: concurrent misses on one key share one load. Misses are cached
// too (negative caching). A write deletes the key; a load that was in flight when the key was
// deleted may still answer the readers that started before the write, but is never stored, so no
// reader that starts after the write can see the old value.
import { LRUCache } from 'lru-cache';

interface Entry<V> {
  readonly value: V | null;
}

export interface CacheStats {
  hits: number;
  misses: number;
}

export interface ReadThroughCache<V> {
  get(key: string, load: (key: string) => Promise<V | null>): Promise<V | null>;
  delete(key: string): void;
  clear(): void;
  readonly stats: Readonly<CacheStats>;
}

export function createLocalCache<V>(options: { maxEntries: number; ttlMs: number }): ReadThroughCache<V> {
  const stats: CacheStats = { hits: 0, misses: 0 };
  const lru = new LRUCache<string, Entry<V>>({ max: options.maxEntries, ttl: Math.max(1, options.ttlMs) });
  const inFlight = new Map<string, Promise<V | null>>();
  // Bumped by every delete; a load stores its result only if the key's generation did not move.
  const generations = new Map<string, number>();
  let clears = 0;

  return {
    async get(key, load) {
      if (options.ttlMs > 0) {
        const cached = lru.get(key);
        if (cached) {
          stats.hits++;
          return cached.value;
        }
      }
      stats.misses++;
      const pending = inFlight.get(key);
      if (pending) return pending;
      const generation = generations.get(key) ?? 0;
      const clearsAtStart = clears;
      const loading = load(key).then(
        (value) => {
          if (inFlight.get(key) === loading) inFlight.delete(key);
          const unchanged = (generations.get(key) ?? 0) === generation && clears === clearsAtStart;
          if (unchanged && options.ttlMs > 0) lru.set(key, { value });
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
      lru.delete(key);
      inFlight.delete(key);
      generations.set(key, (generations.get(key) ?? 0) + 1);
      // Generations only matter while a load may be in flight; keep the map from growing forever.
      if (generations.size > options.maxEntries) {
        generations.clear();
        clears++;
      }
    },
    clear() {
      lru.clear();
      inFlight.clear();
      generations.clear();
      clears++;
    },
    stats,
  };
}
