// Reading the service's Prometheus metrics from outside.
import assert from 'node:assert/strict';

export interface CacheCounters {
  /** Served from the instance's memory (including requests that joined an in-flight load). */
  readonly l1_hit: number;
  /** Served from Redis. */
  readonly shared_hit: number;
  /** Loaded from the database: one read each. */
  readonly miss: number;
}

/** bastion_cache_requests_total{cache=<cache>} by result, parsed from a /metrics body. */
export function parseCacheCounters(text: string, cache = 'users'): CacheCounters {
  const counters = { l1_hit: 0, shared_hit: 0, miss: 0 };
  const line = /^bastion_cache_requests_total\{([^}]*)\}\s+(\S+)$/;
  for (const raw of text.split('\n')) {
    const match = line.exec(raw.trim());
    if (!match?.[1] || match[2] === undefined) continue;
    const labels = new Map([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map((label) => [label[1], label[2]]));
    const result = labels.get('result');
    if (labels.get('cache') !== cache || (result !== 'l1_hit' && result !== 'shared_hit' && result !== 'miss')) continue;
    counters[result] = Number(match[2]);
  }
  return counters;
}

/** GET /metrics of one instance and its users-cache counters. */
export async function cacheCounters(baseUrl: string, cache = 'users'): Promise<CacheCounters> {
  const response = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await response.text();
  assert.equal(response.status, 200, `GET /metrics: ${response.status} ${text.slice(0, 200)}`);
  assert.match(text, /bastion_cache_requests_total\{/, 'GET /metrics shows no bastion_cache_requests_total series');
  return parseCacheCounters(text, cache);
}

export const counterDelta = (before: CacheCounters, after: CacheCounters): CacheCounters => ({
  l1_hit: after.l1_hit - before.l1_hit,
  shared_hit: after.shared_hit - before.shared_hit,
  miss: after.miss - before.miss,
});

/** A histogram's _sum and _count (without labels) from one instance's /metrics. */
export async function histogramTotals(baseUrl: string, name: string): Promise<{ sum: number; count: number }> {
  const response = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await response.text();
  assert.equal(response.status, 200, `GET /metrics: ${response.status} ${text.slice(0, 200)}`);
  const value = (suffix: string) => {
    const match = new RegExp(`^${name}_${suffix} (\\S+)$`, 'm').exec(text);
    assert.ok(match?.[1], `GET /metrics shows no ${name}_${suffix}`);
    return Number(match[1]);
  };
  return { sum: value('sum'), count: value('count') };
}
