// Prometheus metrics (prom-client), one registry per application instance. Caches report their
// hit ratio and their Redis failures here; the metrics issue adds HTTP, database and ledger series
// to the same registry.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheOperation, CacheStats } from './cache.js';

export interface Metrics {
  readonly registry: Registry;
  /**
   * Exposes a cache's counters: bastion_cache_requests_total{cache, result},
   * bastion_cache_errors_total{cache, operation}, bastion_cache_invalidations_pending{cache},
   * bastion_cache_invalidations_replayed_total{cache}, bastion_cache_forced_epoch_bumps_total{cache}.
   */
  observeCache(name: string, stats: Readonly<CacheStats>): void;
}

const CACHE_OPERATIONS: readonly CacheOperation[] = ['read', 'store', 'invalidate', 'epoch'];

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bastion_' });
  const caches = new Map<string, Readonly<CacheStats>>();
  // The caches keep plain counters (no prom-client call on their hot path); each series copies them
  // when scraped.
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
  new Counter({
    name: 'bastion_cache_errors_total',
    help: 'Failed Redis calls of a cache by operation: read, store, invalidate (kept and replayed), epoch (bump)',
    labelNames: ['cache', 'operation'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [cache, stats] of caches) {
        for (const operation of CACHE_OPERATIONS) this.inc({ cache, operation }, stats.failures[operation]);
      }
    },
  });
  new Gauge({
    name: 'bastion_cache_invalidations_pending',
    help: 'Invalidations Redis has not taken yet (failed or issued while it was away); retried with backoff',
    labelNames: ['cache'] as const,
    registers: [registry],
    collect() {
      for (const [cache, stats] of caches) this.set({ cache }, stats.pendingInvalidations);
    },
  });
  new Counter({
    name: 'bastion_cache_invalidations_replayed_total',
    help: 'Invalidations delivered after a failure or an outage, by key or by an epoch bump',
    labelNames: ['cache'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [cache, stats] of caches) this.inc({ cache }, stats.replayedInvalidations);
    },
  });
  new Counter({
    name: 'bastion_cache_forced_epoch_bumps_total',
    help: 'Epoch bumps made because more invalidations were pending than a cache keeps',
    labelNames: ['cache'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [cache, stats] of caches) this.inc({ cache }, stats.forcedEpochBumps);
    },
  });
  return {
    registry,
    observeCache: (name, stats) => void caches.set(name, stats),
  };
}
