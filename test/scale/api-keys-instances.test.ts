// Three REAL service processes on one PostgreSQL database and one Redis: an API key revoked on one
// instance, or whose owner is deleted there, stops working on the other two within the contract's
// 1 second, although both had the key (and its owner) cached.
//
// Every request comes from a loopback address chosen for this run (see helpers/loopback.ts), so the
// per-client limits kept in Redis start fresh.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { login, loginAdmin, uniqueEmail, type Session } from '../helpers/auth.js';
import { postgresBackend, postgresSkipReason, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { expectError } from '../helpers/errors.js';
import { createLoopbackClient, randomLoopbackAddress, type LoopbackClient } from '../helpers/loopback.js';
import { msUntil as pollUntil } from '../helpers/poll.js';
import { forgetRateLimitState } from '../helpers/redis.js';
import { serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';

/** The contract's bound for a revocation to reach every instance. */
const PROPAGATION_BOUND_MS = 1_000;
/** How long a poll keeps going, so that a late propagation is measured rather than only reported as late. */
const POLL_LIMIT_MS = 3_000;

const say = (line: string) => process.stdout.write(`# ${line}\n`);
const dataOf = <T>(response: { body: unknown }): T => (response.body as { data: T }).data;
const msUntil = (since: number, probe: () => Promise<boolean>) => pollUntil(since, probe, POLL_LIMIT_MS);
const formatDelays = (delays: ReadonlyArray<number | undefined>) =>
  delays.map((delay) => (delay === undefined ? `>${POLL_LIMIT_MS}` : delay.toFixed(1))).join(' ms, ') + ' ms';

describe('API keys on three instances (one PostgreSQL, one Redis)', async () => {
  const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
  const address = randomLoopbackAddress();
  let database: TestDatabase | undefined;
  const processes: ServiceProcess[] = [];
  const clients: LoopbackClient[] = [];
  let trio: [LoopbackClient, LoopbackClient, LoopbackClient];
  let admin: Session;

  before(async () => {
    if (skip) return;
    database = await postgresBackend.createDatabase();
    const env = serviceEnv(database, {
      REDIS_URL: TEST_REDIS_URL,
      DATABASE_POOL_SIZE: '4',
      LOG_LEVEL: 'warn',
      // The polls below use a key hundreds of times a second: its own budget must not answer first.
      API_KEY_RATE_LIMIT_MAX: '1000000',
    });
    const started = await Promise.all(Array.from({ length: 3 }, () => startServiceProcess(env, { startTimeoutMs: 120_000 })));
    processes.push(...started);
    const [a, b, c] = started.map((service) => createLoopbackClient(service.baseUrl, address));
    assert.ok(a && b && c);
    clients.push(a, b, c);
    trio = [a, b, c];
    admin = await loginAdmin(a);
    say(`instances on ports ${processes.map((service) => service.port).join(', ')}; client address ${address}`);
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(processes.map((service) => service.kill()));
    await forgetRateLimitState(new Set(clients.map((client) => client.localAddress)));
    await database?.drop();
  });

  /** A user created and logged in through A, with a key that B and C have both accepted twice (cached). */
  const userWithCachedKey = async (): Promise<{ userId: string; session: Session; key: { id: string; secret: string } }> => {
    const [a, b, c] = trio;
    const email = uniqueEmail('key-scale');
    const password = 'key-scale-password-1';
    const created = await a.post('/api/v1/users', { email, name: 'Key owner', password }, { token: admin.accessToken });
    assert.equal(created.status, 201, created.text);
    const session = await login(a, email, password);
    const made = await a.post('/api/v1/api-keys', { name: 'scale', scopes: ['users:read'] }, { token: session.accessToken });
    assert.equal(made.status, 201, made.text);
    const key = dataOf<{ id: string; secret: string }>(made);
    for (const client of [b, c]) {
      for (let read = 0; read < 2; read++) {
        const response = await client.get('/api/v1/users/me', { token: key.secret });
        assert.equal(response.status, 200, response.text);
      }
    }
    return { userId: dataOf<{ id: string }>(created).id, session, key };
  };

  /** Polls B and C with the key until each answers 401: the ms each took after `since`. */
  const untilRefusedOnBC = (secret: string, since: number) =>
    Promise.all(
      [trio[1], trio[2]].map((client) =>
        msUntil(since, async () => {
          const response = await client.get('/api/v1/users/me', { token: secret });
          if (response.status === 200) return false;
          expectError(response, 401, 'UNAUTHENTICATED');
          return true;
        }),
      ),
    );

  it('when A revokes a key that B and C have accepted, then the key is 401 on B and C within 1 s, and the owner\'s other key still works', { skip, timeout: 30_000 }, async () => {
    const [a, b, c] = trio;
    const { session, key } = await userWithCachedKey();
    const otherMade = await a.post('/api/v1/api-keys', { name: 'other', scopes: ['users:read'] }, { token: session.accessToken });
    const other = dataOf<{ secret: string }>(otherMade);
    const revoked = await a.delete(`/api/v1/api-keys/${key.id}`, { token: session.accessToken });
    assert.equal(revoked.status, 204, revoked.text);
    const since = performance.now();
    const delays = await untilRefusedOnBC(key.secret, since);
    say(`key revoked on A refused on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} accepted the revoked key for ${formatDelays([delay])}`);
    }
    expectError(await a.get('/api/v1/users/me', { token: key.secret }), 401, 'UNAUTHENTICATED');
    for (const client of [a, b, c]) assert.equal((await client.get('/api/v1/users/me', { token: other.secret })).status, 200);
  });

  it("when A deletes a key's owner whom B and C have cached, then the key is 401 on B and C within 1 s", { skip, timeout: 30_000 }, async () => {
    const [a] = trio;
    const { userId, key } = await userWithCachedKey();
    const deleted = await a.delete(`/api/v1/users/${userId}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    const since = performance.now();
    const delays = await untilRefusedOnBC(key.secret, since);
    say(`owner deleted on A: key refused on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} accepted the deleted owner's key for ${formatDelays([delay])}`);
    }
    expectError(await a.get('/api/v1/users/me', { token: key.secret }), 401, 'UNAUTHENTICATED');
  });
});
