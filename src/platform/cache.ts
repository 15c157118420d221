// Cache-aside with single-flight: concurrent misses on one key share one load. Misses are cached
// too (negative caching). A write deletes the key; a delete during an in-flight load discards that
// load's result, so a stale read can never be stored after the write that invalidated it.
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
  const lru = new LRUCache<string, Entry<V>, (key: string) => Promise<V | null>>({
    max: options.maxEntries,
    ttl: Math.max(1, options.ttlMs),
    fetchMethod: async (key, _stale, { context }) => ({ value: await context(key) }),
  });
  return {
    async get(key, load) {
      if (options.ttlMs === 0) {
        stats.misses++;
        return load(key);
      }
      const cached = lru.get(key);
      if (cached) {
        stats.hits++;
        return cached.value;
      }
      stats.misses++;
      const entry = await lru.fetch(key, { context: load });
      // No entry: a write deleted the key while this load ran (lru-cache aborts the fetch and
      // resolves undefined), so its result may be stale: read again.
      return entry ? entry.value : load(key);
    },
    delete(key) {
      lru.delete(key);
    },
    clear() {
      lru.clear();
    },
    stats,
  };
}

