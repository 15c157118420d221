import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { redisSkipReason, TEST_REDIS_URL } from '../../test/helpers/backends.js';
import { inspectRedis, PrivateRedis, privateRedisSkipReason } from '../../test/helpers/redis.js';
import { createCache, createLocalCache, type ReadThroughCache } from './cache.js';
import { createLogger, type Logger } from './logger.js';
import { connectRedis, type RedisConnection } from './redis.js';

/**
 * What the cache holds in this instance's memory: get answers synchronously exactly then. Otherwise
 * undefined, once the load that get started has been refused (so nothing was loaded or stored on
 * the test's behalf, and no load of the key is left in flight).
 */
async function heldInMemory<V>(cache: ReadThroughCache<V>, key: string): Promise<V | null | undefined> {
  const answer = cache.get(key, () => Promise.reject(new Error('not held in memory')));
  if (!(answer instanceof Promise)) return answer;
  return answer.then(
    () => undefined,
    () => undefined,
  );
}

describe('local read-through cache', () => {
  it('when 50 readers miss one key at once, then the loader runs once', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 1_000 });
    let loads = 0;
    const load = async (key: string) => {
      loads++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return `value of ${key}`;
    };
    const results = await Promise.all(Array.from({ length: 50 }, () => cache.get('k', load)));
    assert.equal(loads, 1);
    assert.ok(results.every((value) => value === 'value of k'));
  });

  it('when a value is held in memory, then get answers with it synchronously; when it must load, with a promise', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 1_000 });
    const first = cache.get('k', async () => 'v');
    assert.ok(first instanceof Promise, 'a cold key is loaded');
    assert.equal(await first, 'v');
    assert.equal(cache.get('k', async () => assert.fail('loaded again')), 'v');
    assert.equal(cache.stats.hits, 1);
    assert.equal(cache.stats.misses, 1);
  });

  it('when a key is absent, then the miss is cached too', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 1_000 });
    let loads = 0;
    const load = async () => {
      loads++;
      return null;
    };
    assert.equal(await cache.get('missing', load), null);
    assert.equal(await cache.get('missing', load), null);
    assert.equal(loads, 1);
  });

  it('when a write deletes the key during a load, then the stale result is not stored', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 10_000 });
    let current = 'old';
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slowLoad = async () => {
      const seen = current;
      await gate;
      return seen;
    };
    const pending = cache.get('k', slowLoad);
    current = 'new';
    cache.delete('k');
    release();
    assert.equal(await pending, 'old', 'a reader that started before the write may see the old value');
    let loads = 0;
    assert.equal(await cache.get('k', async () => (loads++, current)), 'new', 'but it was not cached');
    assert.equal(loads, 1);
  });

  it('when the TTL passes, then the value is loaded again', async () => {
    const cache = createLocalCache<number>({ maxEntries: 10, ttlMs: 30 });
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await cache.get('k', load), 1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(await cache.get('k', load), 2);
  });
});

describe('the staleness bound', () => {
  it('when the L1 lifetime is 30 s and the staleness bound 50 ms, then the value is loaded again after 50 ms', async () => {
    const cache = createLocalCache<number>({ maxEntries: 10, ttlMs: 30_000, maxStalenessMs: 50 });
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await cache.get('k', load), 1);
    assert.equal(await heldInMemory(cache, 'k'), 1, 'held in memory at first');
    await sleep(60);
    assert.equal(await heldInMemory(cache, 'k'), undefined, 'still held after the bound');
    assert.equal(await cache.get('k', load), 2);
  });
});

/** Log lines captured from a connection's and its caches' logger. */
function capturedLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: createLogger('warn', destination), lines };
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

describe('two caches sharing one Redis (real Redis)', async () => {
  const skip = await redisSkipReason();
  const cleanups: Array<() => Promise<void> | void> = [];
  const connect = async (logger: Logger): Promise<RedisConnection> => {
    const redis = connectRedis(TEST_REDIS_URL, logger);
    cleanups.push(() => redis.close());
    await until(() => redis.isAvailable(), 5_000, 'Redis connected');
    return redis;
  };
  after(async () => {
    await Promise.all(cleanups.map((cleanup) => cleanup()));
  });

  /** Cache A (with a fault switch on its invalidations) and cache B, one namespace, separate connections. */
  const pair = async (options: { maxStalenessMs?: number; maxPendingInvalidations?: number } = {}) => {
    const name = `test-${randomUUID()}`;
    const logs = capturedLogger();
    const faults = { failInvalidations: false };
    const make = async (beforeInvalidate?: () => void) =>
      createCache<string>({
        maxEntries: 100,
        ttlMs: 30_000,
        ...(options.maxStalenessMs !== undefined ? { maxStalenessMs: options.maxStalenessMs } : {}),
        shared: {
          redis: await connect(logs.logger),
          name,
          ttlSeconds: 300,
          logger: logs.logger,
          ...(options.maxPendingInvalidations !== undefined ? { maxPendingInvalidations: options.maxPendingInvalidations } : {}),
        },
        ...(beforeInvalidate ? { beforeInvalidate } : {}),
      });
    const a = await make(() => {
      if (faults.failInvalidations) throw new Error('injected: Redis failed the invalidation');
    });
    const b = await make();
    const inspect = inspectRedis();
    cleanups.push(() => inspect.disconnect());
    const epochOf = async () => (await inspect.get(`bastion:v1:${name}:epoch`)) ?? '0';
    // Both caches bump the epoch once connected; wait until they have, so it does not clear L1 mid-test.
    await until(async () => Number(await epochOf()) >= 2, 3_000, 'both caches started their epoch');
    await sleep(50);
    return { a, b, faults, logs, inspect, name, epochOf };
  };

  it('when a value is shared through Redis, then neither Redis nor the other instance keeps it past the staleness bound', { skip, timeout: 20_000 }, async () => {
    const { a, b, inspect, name, epochOf } = await pair({ maxStalenessMs: 400 });
    assert.equal(await a.get('k', async () => 'v1'), 'v1');
    const valueKey = `bastion:v1:${name}:${await epochOf()}:val:k`;
    await until(async () => (await inspect.exists(valueKey)) === 1, 2_000, 'A stored the value in Redis');
    const lifetimeMs = await inspect.pttl(valueKey);
    assert.ok(lifetimeMs > 0 && lifetimeMs <= 400, `the Redis copy lives ${lifetimeMs} ms`);
    await sleep(150);
    assert.equal(await b.get('k', async () => 'from the source'), 'v1', 'B found it in Redis');
    assert.equal(b.stats.sharedHits, 1);
    assert.equal(await heldInMemory(b, 'k'), 'v1', 'and holds it in memory');
    await sleep(300); // 450 ms after A's read began
    assert.equal(await heldInMemory(b, 'k'), undefined, 'B holds it past the bound counted from A\'s read');
    assert.equal(await inspect.exists(valueKey), 0, 'Redis keeps it past the bound');
  });

  it('when an invalidation fails, then it is counted, logged once, never read back from Redis, and replayed when Redis takes calls again', { skip, timeout: 20_000 }, async () => {
    const { a, b, faults, logs } = await pair({ maxStalenessMs: 60_000 });
    let current = 'old';
    const load = async () => current;
    assert.equal(await a.get('k', load), 'old'); // now in Redis
    assert.equal(await b.get('k', load), 'old');
    assert.equal(b.stats.sharedHits, 1);

    faults.failInvalidations = true;
    current = 'new';
    a.delete('k');
    a.delete('other');
    await until(() => a.stats.failures.invalidate >= 2, 2_000, 'both invalidations failed');
    assert.equal(a.stats.pendingInvalidations, 2);
    assert.equal(await heldInMemory(b, 'k'), 'old', 'B was not told (the staleness bound is 60 s here)');
    assert.equal(await a.get('k', load), 'new', 'A read its own stale Redis copy');
    await sleep(400); // a few retries, all failing
    const warnings = logs.lines.filter((line) => line['operation'] === 'invalidate');
    assert.equal(warnings.length, 1, `${warnings.length} warnings for ${a.stats.failures.invalidate} failed calls`);
    assert.equal(warnings[0]?.['level'], 'warn');

    faults.failInvalidations = false;
    await until(async () => (await heldInMemory(b, 'k')) === undefined, 6_000, 'B forgot the old value');
    assert.equal(a.stats.pendingInvalidations, 0);
    assert.equal(a.stats.replayedInvalidations, 2);
    assert.equal(await b.get('k', load), 'new');
  });

  it('when more invalidations fail than are kept, then one epoch bump replaces them', { skip, timeout: 20_000 }, async () => {
    const { a, b, faults, epochOf } = await pair({ maxStalenessMs: 60_000, maxPendingInvalidations: 2 });
    assert.equal(await b.get('k', async () => 'old'), 'old');
    const epochBefore = Number(await epochOf());
    faults.failInvalidations = true; // the keyed script fails; INCR of the epoch still works
    for (const key of ['k', 'x', 'y']) a.delete(key);
    await until(() => a.stats.forcedEpochBumps === 1, 2_000, 'an epoch bump was forced');
    await until(async () => Number(await epochOf()) > epochBefore, 2_000, 'the epoch moved');
    await until(async () => (await heldInMemory(b, 'k')) === undefined, 2_000, 'B dropped its copies');
    assert.equal(a.stats.pendingInvalidations, 0);
  });
});

describe('a cache whose Redis goes away (private redis-server)', async () => {
  const skip = await privateRedisSkipReason();
  let server: PrivateRedis | undefined;
  let redis: RedisConnection | undefined;
  after(async () => {
    await redis?.close();
    await server?.stop();
  });

  it('when a key is deleted while Redis is away, then the invalidation is kept and delivered when it returns', { skip, timeout: 30_000 }, async () => {
    server = await PrivateRedis.create();
    const { logger } = capturedLogger();
    redis = connectRedis(server.url, logger);
    const connection = redis;
    const cache = createCache<string>({ maxEntries: 10, ttlMs: 30_000, maxStalenessMs: 900, shared: { redis: connection, name: 'users', ttlSeconds: 300, logger } });
    await until(() => connection.isAvailable(), 5_000, 'connected');
    await server.stop();
    await until(() => !connection.isAvailable(), 5_000, 'Redis seen away');
    cache.delete('k');
    assert.equal(cache.stats.pendingInvalidations, 1);
    await server.start();
    await until(() => cache.stats.pendingInvalidations === 0, 10_000, 'the pending invalidation was delivered');
    assert.equal(cache.stats.replayedInvalidations, 1);
  });
});
