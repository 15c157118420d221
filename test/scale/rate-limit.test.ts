// The shared GCRA limiter against the real Redis, several limiters standing for several instances
// (each with its own connection, as each process has): local admissions far from the limit, exact
// decisions near it, reports that reach Redis, refusals remembered locally; at 32 instances, leases
// that add up to no more than the budget and shrink with the instance count, and budget held by an
// idle instance's lease that comes back once the promise lapses.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../src/platform/logger.js';
import {
  createLocalGcra,
  createSharedGcra,
  FLUSH_MS,
  LEASE_MS,
  LOCAL_SHARE,
  REPORT_GRACE_MS,
  SHARE_PER_INSTANCE,
  type Gcra,
  type GcraDecision,
} from '../../src/platform/rate-limit.js';
import { connectRedis, type RedisConnection } from '../../src/platform/redis.js';
import { redisSkipReason, TEST_REDIS_URL } from '../helpers/backends.js';

const HOUR_MS = 3_600_000;
/** Limiters standing for instances, each with its own connection; the first three serve most tests. */
const FLEET_SIZE = 32;

describe('shared rate limit (GCRA in Redis with local leases)', async () => {
  const skip = await redisSkipReason();
  const connections: RedisConnection[] = [];
  const fleet: Gcra[] = [];
  const instances: Gcra[] = [];

  before(async () => {
    if (skip) return;
    for (let index = 0; index < FLEET_SIZE; index++) {
      const connection = connectRedis(TEST_REDIS_URL, createLogger('silent'));
      connections.push(connection);
      fleet.push(createSharedGcra(connection, createLocalGcra()));
    }
    instances.push(...fleet.slice(0, 3));
    const deadline = Date.now() + 10_000;
    while (!connections.every((connection) => connection.isAvailable())) {
      assert.ok(Date.now() < deadline, 'Redis connections never became ready');
      await sleep(10);
    }
  });
  after(async () => {
    await Promise.all(connections.map((connection) => connection.close()));
  });

  const countAllowed = (decisions: readonly GcraDecision[]): number => decisions.filter((decision) => decision.allowed).length;

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

  it('when 32 instances each hold a lease and 4,800 requests of one client race over them for a budget of 1,000, then exactly 1,000 pass', { skip, timeout: 60_000 }, async () => {
    const key = `test-${randomUUID()}`;
    const budget = 1_000;
    // Long enough that the budget does not refill by one request while the test runs.
    const windowMs = 24 * HOUR_MS;
    const takeOn = (index: number) => {
      const instance = fleet[index % FLEET_SIZE];
      assert.ok(instance);
      return instance.take(key, budget, windowMs);
    };
    // Every instance asks Redis once, so that each holds a lease before the burst: the state in
    // which their local shares add up, forced rather than hoped for.
    const warmUp: GcraDecision[] = [];
    for (let index = 0; index < FLEET_SIZE; index++) warmUp.push(await takeOn(index));
    // 3,200 requests round-robin in one synchronous pass: every local admission is made before
    // any instance hears from Redis again; the rest are in flight at once.
    const burst = Array.from({ length: 100 * FLEET_SIZE }, (_, index) => takeOn(index));
    // Then 1,600 more spread over 300 ms, which take up whatever the burst left.
    const spread = Array.from({ length: 50 * FLEET_SIZE }, async (_, index) => {
      await sleep(Math.floor(Math.random() * 300));
      return takeOn(index);
    });
    const total = countAllowed(warmUp) + countAllowed(await Promise.all(burst)) + countAllowed(await Promise.all(spread));
    // No slack either way (derived at the top of rate-limit.ts): every local admission was promised
    // by Redis out of budget nobody else held, and every instance kept being asked until the end.
    assert.equal(total, budget, `${total} requests passed for a budget of ${budget}`);
  });

  it('when 32 instances serve a client far from its limit, then each decides almost every request on its own, within a lease that shrinks with the instance count', { skip, timeout: 30_000 }, async () => {
    const key = `test-${randomUUID()}`;
    const budget = 1_000_000;
    // Every instance asks once, so that Redis has seen all 32 before the leases that are counted.
    for (const instance of fleet) assert.equal((await instance.take(key, budget, HOUR_MS)).allowed, true);
    await sleep(LEASE_MS + 50); // the first leases, granted before all 32 were live, have run out
    let local = 0;
    for (const instance of fleet) {
      for (let index = 0; index < 200; index++) {
        const decision = instance.take(key, budget, HOUR_MS);
        if (!(decision instanceof Promise)) local++;
        assert.equal((await decision).allowed, true);
      }
    }
    assert.ok(local >= 0.95 * 200 * FLEET_SIZE, `only ${local} of ${200 * FLEET_SIZE} requests were decided without Redis`);
    // The lease itself: what one instance admits in a row without Redis, with all 32 live.
    await sleep(LEASE_MS + 50);
    const [instance] = fleet;
    assert.ok(instance);
    assert.ok(instance.take(key, budget, HOUR_MS) instanceof Promise, 'a lapsed lease is renewed by Redis');
    await sleep(FLUSH_MS); // let the renewal's answer install the new lease
    let inARow = 0;
    while (!(instance.take(key, budget, HOUR_MS) instanceof Promise)) inARow++;
    assert.ok(inARow > 0, 'no lease far from the limit');
    assert.ok(inARow <= budget / (SHARE_PER_INSTANCE * FLEET_SIZE), `a lease of ${inARow} with ${FLEET_SIZE} instances live`);
  });

  it('when an instance holds budget in a lease it does not use, then another instance is refused for at most the lease and its grace, and then gets that budget', { skip, timeout: 30_000 }, async () => {
    const key = `test-${randomUUID()}`;
    const max = 64;
    const [a, b] = instances;
    assert.ok(a && b);
    // A asks once and is granted floor(63 / LOCAL_SHARE) = 3 requests of its own, then goes idle.
    assert.equal((await a.take(key, max, HOUR_MS)).allowed, true);
    const held = Math.floor((max - 1) / LOCAL_SHARE);
    let passedOnB = 0;
    let refusal: GcraDecision | undefined;
    while (!refusal) {
      const decision = await b.take(key, max, HOUR_MS);
      if (decision.allowed) passedOnB++;
      else refusal = decision;
    }
    assert.equal(passedOnB, max - 1 - held, 'B was given budget promised to A');
    // Refused only for A's promise: B is told to come back when it has lapsed, not in an interval.
    assert.ok(refusal.waitMs <= LEASE_MS + REPORT_GRACE_MS, `B was told to wait ${refusal.waitMs} ms`);
    await sleep(refusal.waitMs + 10);
    let latePasses = 0;
    for (let index = 0; index < held + 1; index++) if ((await b.take(key, max, HOUR_MS)).allowed) latePasses++;
    assert.equal(latePasses, held, 'the budget A left unused did not come back');
  });
});
