// Redis going away and coming back under load, for real: two service processes on one PostgreSQL and
// a real redis-server that this suite starts for itself on a port of its own (so that the suites
// running beside it keep the shared one), a steady mix of reads, logins and transfers, and in the
// middle the test shuts that redis-server down (`redis-cli shutdown nosave`) and later starts it again.
//
// Expected: no request ever gets a 5xx (Redis is an accelerator, not a dependency); readiness says
// "degraded" (HTTP 200) while Redis is away and "ok" once it is back; each instance logs the loss
// once, not per request; afterwards the shared cache fills again and the rate limit is global again.
//
// The load rotates over many client addresses (each request's rate-limit budget is its address's),
// so that a low RATE_LIMIT_MAX can be used to check the global limit at the end without the load
// ever reaching it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { USER_STATE_MAX_STALENESS_MS } from '../../src/app.js';
import { login, uniqueEmail, type Session } from '../helpers/auth.js';
import { postgresBackend, postgresSkipReason, type TestDatabase } from '../helpers/backends.js';
import { expectError } from '../helpers/errors.js';
import { createLoopbackClient, randomLoopbackAddress, type LoopbackClient } from '../helpers/loopback.js';
import { cacheCounters, counterDelta } from '../helpers/metrics.js';
import { inspectRedis, PrivateRedis, privateRedisSkipReason, untilCachedInRedis } from '../helpers/redis.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from '../helpers/server.js';
import { expectUser, type User } from '../helpers/users.js';
import { logLines, serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';

const RATE_LIMIT = 30;
const LOAD_WORKERS = 6;
/** Pause between one worker's requests: a steady load, not a stress test. */
const LOAD_PACE_MS = 40;
/** Client addresses the load rotates over; each sees far fewer than RATE_LIMIT requests per run. */
const LOAD_ADDRESSES = 150;
const PASSWORD = 'failure-password-1';

const say = (line: string) => process.stdout.write(`# ${line}\n`);
const dataOf = <T>(response: { body: unknown }): T => (response.body as { data: T }).data;

interface Outcome {
  readonly kind: string;
  readonly instance: number;
  readonly at: number;
  /** HTTP status, or the network error. */
  readonly result: number | string;
  readonly expected: boolean;
  readonly text: string;
}

interface Readiness {
  readonly instance: number;
  readonly at: number;
  readonly status: number | string;
  readonly redis: string | undefined;
  readonly database: string | undefined;
}

describe('two instances while the real Redis goes away and comes back', async () => {
  const skip = (await postgresSkipReason()) ?? (await privateRedisSkipReason());
  let redisServer: PrivateRedis | undefined;
  let database: TestDatabase | undefined;
  const processes: ServiceProcess[] = [];
  const clients = new Map<string, LoopbackClient>();

  /** The client for (instance, address), kept alive across requests. */
  const clientFor = (instance: number, address: string): LoopbackClient => {
    const key = `${instance}/${address}`;
    let client = clients.get(key);
    if (!client) {
      const service = processes[instance];
      assert.ok(service);
      client = createLoopbackClient(service.baseUrl, address);
      clients.set(key, client);
    }
    return client;
  };

  before(async () => {
    if (skip) return;
    redisServer = await PrivateRedis.create();
    database = await postgresBackend.createDatabase();
    const env = serviceEnv(database, {
      REDIS_URL: redisServer.url,
      RATE_LIMIT_MAX: String(RATE_LIMIT),
      RATE_LIMIT_WINDOW_MS: '3600000',
      DATABASE_POOL_SIZE: '4',
      LOG_LEVEL: 'info',
    });
    processes.push(...(await Promise.all([0, 1].map(() => startServiceProcess(env, { startTimeoutMs: 45_000 })))));
  });

  after(async () => {
    for (const client of clients.values()) client.close();
    await Promise.all(processes.map((service) => service.kill()));
    await redisServer?.stop();
    await database?.drop();
  });

  it('when redis-server stops and starts again under load, then no 5xx, readiness degrades and recovers, one log line, cache and global limit come back', { skip, timeout: 90_000 }, async () => {
    const setupAddress = randomLoopbackAddress();
    const [a, b] = [clientFor(0, setupAddress), clientFor(1, setupAddress)];
    const admin = await login(a, ADMIN_EMAIL, ADMIN_PASSWORD);
    const server = redisServer;
    assert.ok(server);

    // Three users who read their profile and log in; two funded accounts to transfer between.
    const users: Array<{ user: User; session: Session }> = [];
    for (let index = 0; index < 3; index++) {
      const email = uniqueEmail('failure');
      const created = await a.post('/api/v1/users', { email, name: `Load ${index}`, password: PASSWORD }, { token: admin.accessToken });
      assert.equal(created.status, 201, created.text);
      users.push({ user: expectUser(dataOf(created)), session: await login(b, email, PASSWORD) });
    }
    const accounts: string[] = [];
    for (let index = 0; index < 2; index++) {
      const account = await a.post('/api/v1/accounts', { currency: 'USD' }, { token: admin.accessToken });
      assert.equal(account.status, 201, account.text);
      const id = dataOf<{ id: string }>(account).id;
      const deposit = await b.post(`/api/v1/accounts/${id}/deposits`, { amount: 10_000_000 }, {
        token: admin.accessToken,
        headers: { 'idempotency-key': randomUUID() },
      });
      assert.equal(deposit.status, 201, deposit.text);
      accounts.push(id);
    }

    // ---- the steady load ----
    const addresses = Array.from({ length: LOAD_ADDRESSES }, randomLoopbackAddress);
    const outcomes: Outcome[] = [];
    let stopLoad = false;
    let sequence = 0;
    const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)] as T;
    const oneRequest = async (): Promise<void> => {
      const n = sequence++;
      const instance = n % 2;
      const client = clientFor(instance, addresses[n % LOAD_ADDRESSES] as string);
      const roll = Math.random();
      let kind: string;
      let call: Promise<{ status: number; text: string }>;
      let ok: (status: number) => boolean = (status) => status === 200;
      if (roll < 0.35) {
        kind = 'GET /users/me';
        call = client.get('/api/v1/users/me', { token: pick(users).session.accessToken });
      } else if (roll < 0.7) {
        kind = 'GET /users/:id';
        call = client.get(`/api/v1/users/${pick(users).user.id}`, { token: admin.accessToken });
      } else if (roll < 0.8) {
        kind = 'POST /auth/login';
        call = client.post('/api/v1/auth/login', { email: pick(users).user.email, password: PASSWORD });
      } else {
        kind = 'POST /transfers';
        const from = Math.random() < 0.5 ? 0 : 1;
        call = client.post(
          '/api/v1/transfers',
          { fromAccountId: accounts[from], toAccountId: accounts[1 - from], amount: 1 + Math.floor(Math.random() * 100) },
          { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } },
        );
        ok = (status) => status === 201;
      }
      try {
        const response = await call;
        outcomes.push({ kind, instance, at: performance.now(), result: response.status, expected: ok(response.status), text: response.text.slice(0, 300) });
      } catch (error) {
        outcomes.push({ kind, instance, at: performance.now(), result: (error as Error).message, expected: false, text: '' });
      }
    };
    const load = Promise.all(
      Array.from({ length: LOAD_WORKERS }, async () => {
        while (!stopLoad) {
          await oneRequest();
          await sleep(LOAD_PACE_MS);
        }
      }),
    );

    // ---- readiness, polled all along ----
    const readiness: Readiness[] = [];
    let stopPolling = false;
    const readinessOf = async (instance: number): Promise<Readiness> => {
      const service = processes[instance] as ServiceProcess;
      try {
        const response = await fetch(`${service.baseUrl}/health/ready`, { signal: AbortSignal.timeout(5_000) });
        const body = (await response.json()) as { checks?: Record<string, string> };
        return { instance, at: performance.now(), status: response.status, redis: body.checks?.['redis'], database: body.checks?.['database'] };
      } catch (error) {
        return { instance, at: performance.now(), status: (error as Error).message, redis: undefined, database: undefined };
      }
    };
    const polling = (async () => {
      while (!stopPolling) {
        readiness.push(...(await Promise.all([readinessOf(0), readinessOf(1)])));
        await sleep(100);
      }
    })();
    /** Waits until both instances' last readiness says `redis` = want; the ms it took, or undefined. */
    const untilBothRedis = async (want: string, since: number, withinMs: number): Promise<number | undefined> => {
      for (;;) {
        const latest = [0, 1].map((instance) => readiness.filter((entry) => entry.instance === instance && entry.at > since).at(-1));
        if (latest.every((entry) => entry?.redis === want)) return Math.max(...latest.map((entry) => (entry?.at ?? 0) - since));
        if (performance.now() - since > withinMs) return undefined;
        await sleep(20);
      }
    };

    let redisStoppedAt = 0;
    let redisStartedAt = 0;
    let writeDuringOutageMs: number | undefined;
    try {
      await sleep(1_500);
      assert.ok((await untilBothRedis('ok', 0, 5_000)) !== undefined, `readiness before the outage: ${JSON.stringify(readiness.slice(-2))}`);

      // ---- Redis goes away ----
      redisStoppedAt = performance.now();
      await server.stop();
      say(`redis-server stopped ${((performance.now() - redisStoppedAt) / 1000).toFixed(2)} s after shutdown nosave was sent`);
      const degradedAfter = await untilBothRedis('degraded', redisStoppedAt, 5_000);
      assert.ok(degradedAfter !== undefined, `readiness never said redis "degraded": ${JSON.stringify(readiness.slice(-4))}`);
      say(`readiness reported redis "degraded" on both instances ${degradedAfter.toFixed(0)} ms after the stop`);

      // While it is away: a write on A reaches B through the bounded lifetime of B's copy.
      const [target] = users;
      assert.ok(target);
      assert.equal((await b.get(`/api/v1/users/${target.user.id}`, { token: admin.accessToken })).status, 200);
      const renamed = await a.patch(`/api/v1/users/${target.user.id}`, { name: 'Renamed while Redis was away' }, { token: admin.accessToken });
      assert.equal(renamed.status, 200, renamed.text);
      const renamedAt = performance.now();
      for (;;) {
        // Each poll from its own address: the setup address has a budget of RATE_LIMIT requests.
        const poller = clientFor(1, randomLoopbackAddress());
        const seen: { status: number; text: string; body: unknown } = await poller.get(`/api/v1/users/${target.user.id}`, {
          token: admin.accessToken,
        });
        poller.close();
        assert.equal(seen.status, 200, seen.text);
        if (dataOf<User>(seen).name === 'Renamed while Redis was away') {
          writeDuringOutageMs = performance.now() - renamedAt;
          break;
        }
        if (performance.now() - renamedAt > 5_000) break;
        await sleep(5);
      }
      say(`during the outage, a rename on A was served by B after ${writeDuringOutageMs?.toFixed(0) ?? '>5000'} ms`);
      // Without invalidation messages only the staleness bound (800 ms from the read that produced
      // B's copy, which began before the rename) limits this; the 30 s L1 lifetime would show as >5000.
      assert.ok(writeDuringOutageMs !== undefined && writeDuringOutageMs < 1_000, `B served the old name for ${writeDuringOutageMs?.toFixed(0) ?? '>5000'} ms`);

      await sleep(2_500);

      // ---- Redis comes back ----
      redisStartedAt = performance.now();
      await server.start();
      say(`redis-server answers PONG ${((performance.now() - redisStartedAt) / 1000).toFixed(2)} s after it was started`);
      const okAfter = await untilBothRedis('ok', redisStartedAt, 15_000);
      assert.ok(okAfter !== undefined, `readiness never said redis "ok" again: ${JSON.stringify(readiness.slice(-4))}`);
      say(`readiness reported redis "ok" on both instances ${okAfter.toFixed(0)} ms after the start`);
      await sleep(1_500);
    } finally {
      stopLoad = true;
      stopPolling = true;
      await Promise.all([load, polling]);
      await server.start();
    }

    // ---- no request failed ----
    const tally = new Map<string, number>();
    for (const outcome of outcomes) tally.set(`${outcome.kind} → ${outcome.result}`, (tally.get(`${outcome.kind} → ${outcome.result}`) ?? 0) + 1);
    const duringOutage = outcomes.filter((outcome) => outcome.at > redisStoppedAt && outcome.at < redisStartedAt).length;
    say(`load: ${outcomes.length} requests, ${duringOutage} of them while Redis was down: ${[...tally].map(([key, count]) => `${key} ×${count}`).join('; ')}`);
    assert.ok(duringOutage >= 50, `only ${duringOutage} requests ran while Redis was down; the test proves little`);
    const serverErrors = outcomes.filter((outcome) => typeof outcome.result === 'number' && outcome.result >= 500);
    assert.deepEqual(serverErrors, [], 'requests answered 5xx');
    const networkErrors = outcomes.filter((outcome) => typeof outcome.result === 'string');
    assert.deepEqual(networkErrors, [], 'requests that got no answer');
    const unexpected = outcomes.filter((outcome) => !outcome.expected);
    assert.deepEqual(unexpected, [], 'requests answered something other than their success status');

    // ---- readiness: 200 throughout, degraded only while Redis was away ----
    const notOk = readiness.filter((entry) => entry.status !== 200 || entry.database !== 'ok');
    assert.deepEqual(notOk, [], '/health/ready answered other than 200 with database "ok"');
    const degradedOutsideOutage = readiness.filter((entry) => entry.redis === 'degraded' && (entry.at < redisStoppedAt || entry.at > redisStartedAt + 15_000));
    assert.deepEqual(degradedOutsideOutage, [], 'redis reported degraded while it was up');
    for (const instance of [0, 1]) {
      const mine = readiness.filter((entry) => entry.instance === instance);
      const firstDegraded = mine.find((entry) => entry.at > redisStoppedAt && entry.redis === 'degraded');
      assert.ok(firstDegraded, `instance ${instance} never reported redis degraded`);
      // Sent after the first "degraded" answer and answered before Redis was started again.
      const down = mine.filter((entry) => entry.at > firstDegraded.at + 150 && entry.at < redisStartedAt);
      assert.ok(down.length >= 10, `only ${down.length} readiness answers from instance ${instance} during the outage`);
      assert.deepEqual(down.filter((entry) => entry.redis !== 'degraded'), [], `instance ${instance}: readiness during the outage`);
    }

    // ---- one line per instance for the loss, not one per request ----
    for (const [index, service] of processes.entries()) {
      const lines = service.stdout().split('\n');
      const lost = lines.filter((line) => line.includes('redis: unavailable')).length;
      const back = lines.filter((line) => line.includes('redis: connected')).length;
      say(`instance ${index}: ${lost} "redis: unavailable" line(s), ${back} "redis: connected" line(s), ${lines.length} lines in all`);
      assert.equal(lost, 1, `instance ${index} logged the Redis loss ${lost} times`);
      assert.equal(back, 2, `instance ${index} logged "redis: connected" ${back} times (expected: at start and after the outage)`);
      const errors = logLines(service.stdout()).filter((line) => line['level'] === 'error' || line['level'] === 'fatal');
      assert.deepEqual(errors, [], `instance ${index} logged errors`);
    }

    // ---- the invalidation A could not send while Redis was away was delivered on its return ----
    for (const [index, service] of processes.entries()) {
      const metrics = await (await fetch(`${service.baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
      assert.match(metrics, /^bastion_cache_invalidations_pending\{cache="users"\} 0$/m, `instance ${index} still has invalidations pending`);
    }
    const replayedOnA = /^bastion_cache_invalidations_replayed_total\{cache="users"\} (\d+)$/m.exec(
      await (await fetch(`${processes[0]?.baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text(),
    );
    assert.ok(Number(replayedOnA?.[1]) >= 1, `A replayed ${replayedOnA?.[1] ?? 'no'} invalidations after the outage`);

    // ---- the shared cache fills again ----
    const fresh = await a.post('/api/v1/users', { email: uniqueEmail('after'), name: 'After the outage', password: PASSWORD }, { token: admin.accessToken });
    assert.equal(fresh.status, 201, fresh.text);
    const freshUser = expectUser(dataOf(fresh));
    // Copies live USER_STATE_MAX_STALENESS_MS from their load: let the admin's older copies expire,
    // then load them afresh on A and B, so the only reads below that can miss are the user's.
    await sleep(USER_STATE_MAX_STALENESS_MS);
    const warmedAt = performance.now();
    for (const client of [a, b]) assert.equal((await client.get('/api/v1/users/me', { token: admin.accessToken })).status, 200);
    const beforeA = await cacheCounters(processes[0]?.baseUrl ?? '');
    assert.deepEqual(dataOf(await a.get(`/api/v1/users/${freshUser.id}`, { token: admin.accessToken })), freshUser);
    const deltaA = counterDelta(beforeA, await cacheCounters(processes[0]?.baseUrl ?? ''));
    const redis = inspectRedis(server.url);
    try {
      assert.ok(await untilCachedInRedis(redis, 'users', freshUser.id), `the user never reached the restarted Redis (A: ${JSON.stringify(deltaA)})`);
    } finally {
      redis.disconnect();
    }
    // The same on B: the user should come from Redis, while its copy lives.
    const beforeB = await cacheCounters(processes[1]?.baseUrl ?? '');
    assert.deepEqual(dataOf(await b.get(`/api/v1/users/${freshUser.id}`, { token: admin.accessToken })), freshUser);
    const elapsedMs = performance.now() - warmedAt;
    const deltaB = counterDelta(beforeB, await cacheCounters(processes[1]?.baseUrl ?? ''));
    say(`after the outage: first read on A ${JSON.stringify(deltaA)}, then on B ${JSON.stringify(deltaB)} (${elapsedMs.toFixed(0)} ms after the loads)`);
    assert.equal(deltaA.miss, 1, 'A loaded the new user from the database');
    // Less 10 % jitter, a copy lives at least 0.9 of the bound: past 0.85 of it, B may find it gone.
    if (elapsedMs < USER_STATE_MAX_STALENESS_MS * 0.85) {
      assert.equal(deltaB.shared_hit, 1, 'B found the user in Redis');
      assert.equal(deltaB.miss, 0, 'B read the database although the user was in Redis');
    }

    // ---- the rate limit is global again ----
    const limitAddress = randomLoopbackAddress();
    for (let index = 0; index < RATE_LIMIT; index++) {
      const response = await clientFor(index % 2, limitAddress).get('/api/v1/users/me', { token: admin.accessToken });
      assert.equal(response.status, 200, `request ${index + 1} of ${RATE_LIMIT}: ${response.status} ${response.text}`);
    }
    for (const instance of [0, 1]) {
      const response = await clientFor(instance, limitAddress).get('/api/v1/users/me', { token: admin.accessToken });
      expectError(response, 429, 'RATE_LIMITED');
      assert.ok(Number(response.headers.get('retry-after')) >= 1, `Retry-After: ${response.headers.get('retry-after')}`);
    }
  });
});
