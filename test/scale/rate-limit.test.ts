// The shared GCRA limiter against the real Redis, several limiters standing for several instances
// (each with its own connection, as each process has): local admissions far from the limit, exact
// decisions near it, reports that reach Redis, refusals remembered locally.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../src/platform/logger.js';
import { createLocalGcra, createSharedGcra, FLUSH_MS, LOCAL_SHARE, type Gcra, type GcraDecision } from '../../src/platform/rate-limit.js';
import { connectRedis, type RedisConnection } from '../../src/platform/redis.js';
import { redisSkipReason, TEST_REDIS_URL } from '../helpers/backends.js';

const HOUR_MS = 3_600_000;

describe('shared rate limit (GCRA in Redis with local leases)', async () => {
  const skip = await redisSkipReason();
  const connections: RedisConnection[] = [];
  const instances: Gcra[] = [];

  before(async () => {
    if (skip) return;
    for (let index = 0; index < 3; index++) {
      const connection = connectRedis(TEST_REDIS_URL, createLogger('silent'));
      connections.push(connection);
      instances.push(createSharedGcra(connection, createLocalGcra()));
    }
    const deadline = Date.now() + 5_000;
    while (!connections.every((connection) => connection.isAvailable())) {
      assert.ok(Date.now() < deadline, 'Redis connections never became ready');
      await sleep(10);
    }
  });
  after(async () => {
    await Promise.all(connections.map((connection) => connection.close()));
  });

  const take = async (instance: Gcra | undefined, key: string, max: number): Promise<GcraDecision> => {
    assert.ok(instance);
    return instance.take(key, max, HOUR_MS);
  };

  it('when 30 requests of one client go round-robin over three instances, then all 30 pass and the 31st is refused on every instance', { skip }, async () => {
    const key = `test-${randomUUID()}`;
    for (let index = 0; index < 30; index++) {
      const decision = await take(instances[index % 3], key, 30);
      assert.equal(decision.allowed, true, `request ${index + 1} refused`);
    }
    for (const instance of instances) {
      const decision = await take(instance, key, 30);
      assert.equal(decision.allowed, false);
      assert.ok(decision.waitMs > 0);
    }
  });

  it('when 3,000 requests race over three instances for a budget of 1,000, then exactly 1,000 pass', { skip, timeout: 30_000 }, async () => {
    const key = `test-${randomUUID()}`;
    const decisions = await Promise.all(
      Array.from({ length: 3_000 }, async (_, index) => {
        await sleep(Math.floor(Math.random() * 200));
        return take(instances[index % 3], key, 1_000);
      }),
    );
    assert.equal(decisions.filter((decision) => decision.allowed).length, 1_000);
  });

  it('when a client is far from its limit, then an instance decides on its own and reports to Redis within the flush delay', { skip }, async () => {
    const key = `test-${randomUUID()}`;
    const [instance] = instances;
    assert.ok(instance);
    const first = instance.take(key, 10_000, HOUR_MS);
    assert.ok(first instanceof Promise, 'the first request of a client asks Redis');
    assert.equal((await first).remaining, 9_999);
    let local = 0;
    for (let index = 0; index < 100; index++) {
      const decision: GcraDecision | Promise<GcraDecision> = instance.take(key, 10_000, HOUR_MS);
      if (!(decision instanceof Promise)) local++;
      assert.equal((await decision).allowed, true);
    }
    assert.ok(local >= 90, `only ${local} of 100 requests were decided without Redis`);
    // Not more than the instance's share of what Redis said was left.
    assert.ok(local <= Math.floor(9_999 / LOCAL_SHARE));
    await sleep(FLUSH_MS * 5);
    // Another instance that asks Redis now sees all 101 requests.
    const seen = await take(instances[1], key, 10_000);
    assert.equal(seen.remaining, 10_000 - 102);
  });

  it('when Redis has refused a client, then the instance refuses it again without asking Redis', { skip }, async () => {
    const key = `test-${randomUUID()}`;
    const [instance] = instances;
    assert.ok(instance);
    for (let index = 0; index < 3; index++) assert.equal((await instance.take(key, 3, HOUR_MS)).allowed, true);
    const refused = instance.take(key, 3, HOUR_MS);
    assert.ok(refused instanceof Promise);
    assert.equal((await refused).allowed, false);
    const again = instance.take(key, 3, HOUR_MS);
    assert.ok(!(again instanceof Promise), 'the second refusal was asked of Redis');
    assert.equal(again.allowed, false);
    assert.ok(again.waitMs > 0);
  });

  it('when a budget is near its end, then every decision goes to Redis and carries the unreported admissions', { skip }, async () => {
    const key = `test-${randomUUID()}`;
    const max = LOCAL_SHARE * 2;
    const [a, b] = instances;
    assert.ok(a && b);
    // A: one ask, then admissions on its own while Redis says at least LOCAL_SHARE are left.
    let allowed = 0;
    for (let index = 0; index < max; index++) if ((await a.take(key, max, HOUR_MS)).allowed) allowed++;
    assert.equal(allowed, max);
    // B asks at once, before A's flush could run: A's own asks carried its local admissions.
    const refusedOnB = await b.take(key, max, HOUR_MS);
    assert.equal(refusedOnB.allowed, false, 'B was allowed a request past the limit');
  });
});
