// Prometheus metrics (prom-client), one registry per application instance. Caches report their
// hit ratio here; the metrics issue adds HTTP, database and ledger series to the same registry.
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheStats } from './cache.js';

export interface Metrics {
  readonly registry: Registry;
  /** Exposes a cache's counters as bastion_cache_requests_total{cache, result}. */
  observeCache(name: string, stats: Readonly<CacheStats>): void;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bastion_' });
  const caches = new Map<string, Readonly<CacheStats>>();
  new Counter({
    name: 'bastion_cache_requests_total',
    help: 'Cache reads by result: l1_hit (this instance), shared_hit (Redis), miss (loaded from the database)',
    labelNames: ['cache', 'result'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [cache, stats] of caches) {
        this.inc({ cache, result: 'l1_hit' }, stats.hits);
        this.inc({ cache, result: 'shared_hit' }, stats.sharedHits);
        this.inc({ cache, result: 'miss' }, stats.misses);
      }
    },
  });
  return {
    registry,
    observeCache: (name, stats) => void caches.set(name, stats),
  };
}
