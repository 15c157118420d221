import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, beforeEach, describe, it, mock } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { redisSkipReason, TEST_REDIS_URL } from '../../../test/helpers/backends.js';
import { PrivateRedis, privateRedisSkipReason } from '../../../test/helpers/redis.js';
import { createLogger } from '../../platform/logger.js';
import { connectRedis, type RedisConnection } from '../../platform/redis.js';
import { createMemoryLoginThrottle, createSharedLoginThrottle, throttleKey, type LoginThrottle, type Reservation } from './login-throttle.js';

const MAX_FAILURES = 5;
const WINDOW_SECONDS = 900;
const options = { maxFailures: MAX_FAILURES, windowSeconds: WINDOW_SECONDS };

const granted = (reservations: readonly Reservation[]): number => reservations.filter((reservation) => reservation.granted).length;
const waitOf = (reservation: Reservation): number => (reservation.granted ? 0 : reservation.retryAfterSeconds);
const freshKey = (): string => throttleKey(`${randomUUID()}@example.com`, '203.0.113.7');

describe('login throttle (in-process)', () => {
  // The library keeps time with Date.now and expires keys with setTimeout: both are mocked.
  beforeEach(() => mock.timers.enable({ apis: ['Date', 'setTimeout'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  it('when 5 attempts are counted within the window, then the 5th is the last (it locks until the window closes) and the next one waits until then', async () => {
    const throttle = createMemoryLoginThrottle(options);
    const key = throttleKey('a@example.com', '1.2.3.4');
    for (let attempt = 1; attempt <= MAX_FAILURES; attempt++) {
      // The window opened at the first attempt; each later one is 1 s further into it.
      const lockSeconds = WINDOW_SECONDS - (attempt - 1);
      assert.deepEqual(await throttle.reserve(key), { granted: true, last: attempt === MAX_FAILURES, lockSeconds });
      mock.timers.tick(1_000);
    }
    assert.deepEqual(await throttle.reserve(key), { granted: false, retryAfterSeconds: WINDOW_SECONDS - MAX_FAILURES });
    mock.timers.tick((WINDOW_SECONDS - MAX_FAILURES) * 1_000);
    assert.deepEqual(await throttle.reserve(key), { granted: true, last: false, lockSeconds: WINDOW_SECONDS });
  });

  it('when 100 attempts race for one key, then exactly 5 are granted and the others told to wait', async () => {
    const throttle = createMemoryLoginThrottle(options);
    const key = freshKey();
    const reservations = await Promise.all(Array.from({ length: 100 }, () => throttle.reserve(key)));
    assert.equal(granted(reservations), MAX_FAILURES);
    for (const reservation of reservations.filter((one) => !one.granted)) assert.equal(waitOf(reservation), WINDOW_SECONDS);
  });

  it('when another client or email is throttled, then this key is unaffected', async () => {
    const throttle = createMemoryLoginThrottle(options);
    for (let attempt = 0; attempt < MAX_FAILURES; attempt++) await throttle.reserve(throttleKey('a@example.com', '1.1.1.1'));
    assert.equal((await throttle.reserve(throttleKey('a@example.com', '1.1.1.1'))).granted, false);
    assert.equal((await throttle.reserve(throttleKey('a@example.com', '2.2.2.2'))).granted, true);
    assert.equal((await throttle.reserve(throttleKey('b@example.com', '1.1.1.1'))).granted, true);
  });

  it('when a login succeeds (reset), then the count starts over', async () => {
    const throttle = createMemoryLoginThrottle(options);
    const key = freshKey();
    for (let attempt = 0; attempt < MAX_FAILURES - 1; attempt++) await throttle.reserve(key);
    await throttle.reset(key);
    const again = await Promise.all(Array.from({ length: MAX_FAILURES + 1 }, () => throttle.reserve(key)));
    assert.equal(granted(again), MAX_FAILURES);
  });

  it('when an attempt is refunded (no password was checked), then it does not count', async () => {
    const throttle = createMemoryLoginThrottle(options);
    const key = freshKey();
    for (let attempt = 0; attempt < MAX_FAILURES; attempt++) await throttle.reserve(key);
    await throttle.refund(key);
    assert.equal((await throttle.reserve(key)).granted, true);
    assert.equal((await throttle.reserve(key)).granted, false);
  });
});

/** Connections to `url`, ready; closed by `after`. */
function redisConnections(url: () => string, count: number): RedisConnection[] {
  const connections: RedisConnection[] = [];
  before(async () => {
    for (let index = 0; index < count; index++) connections.push(connectRedis(url(), createLogger('silent')));
    const deadline = Date.now() + 10_000;
    while (!connections.every((connection) => connection.isAvailable())) {
      assert.ok(Date.now() < deadline, 'Redis connections never became ready');
      await sleep(10);
    }
  });
  after(async () => {
    await Promise.all(connections.map((connection) => connection.close()));
  });
  return connections;
}

describe('login throttle (shared in Redis)', async () => {
  const skip = await redisSkipReason();
  const connections = skip ? [] : redisConnections(() => TEST_REDIS_URL, 3);
  const instances = (): LoginThrottle[] => connections.map((connection) => createSharedLoginThrottle(connection, options));

  it('when 100 attempts for one key race over three instances, then exactly 5 are granted in total', { skip }, async () => {
    const throttles = instances();
    const key = freshKey();
    const reservations = await Promise.all(Array.from({ length: 100 }, (_, index) => (throttles[index % 3] as LoginThrottle).reserve(key)));
    assert.equal(granted(reservations), MAX_FAILURES);
    for (const reservation of reservations.filter((one) => !one.granted)) {
      assert.ok(waitOf(reservation) >= 1 && waitOf(reservation) <= WINDOW_SECONDS, `retry after ${waitOf(reservation)} s`);
    }
  });

  it('when a login succeeds on one instance, then the count starts over on every instance', { skip }, async () => {
    const [a, b, c] = instances();
    assert.ok(a && b && c);
    const key = freshKey();
    for (let attempt = 0; attempt < MAX_FAILURES - 1; attempt++) assert.equal((await a.reserve(key)).granted, true);
    await b.reset(key);
    const again = await Promise.all(Array.from({ length: MAX_FAILURES + 1 }, () => c.reserve(key)));
    assert.equal(granted(again), MAX_FAILURES);
  });
});

describe('login throttle (Redis away)', async () => {
  const skip = await privateRedisSkipReason();
  let redis: PrivateRedis | undefined;
  before(async () => {
    if (!skip) redis = await PrivateRedis.create();
  });
  after(async () => redis?.stop());
  const connections = skip ? [] : redisConnections(() => (redis as PrivateRedis).url, 1);

  it('when Redis goes away, then each instance still counts in memory and refuses the attempt after the 5th', { skip }, async () => {
    const [connection] = connections;
    assert.ok(connection && redis);
    const throttle = createSharedLoginThrottle(connection, options);
    await redis.stop();
    const deadline = Date.now() + 5_000;
    while (connection.isAvailable()) {
      assert.ok(Date.now() < deadline, 'the connection never noticed that Redis stopped');
      await sleep(10);
    }
    const key = freshKey();
    const reservations = await Promise.all(Array.from({ length: 20 }, () => throttle.reserve(key)));
    assert.equal(granted(reservations), MAX_FAILURES);
  });
});
