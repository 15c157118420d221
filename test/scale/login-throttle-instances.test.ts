// The login brute-force throttle across instances: three REAL service processes on one PostgreSQL
// database and the shared Redis reserve attempts in one Redis step, so a burst of wrong-password
// logins for one (email, client) spread over all three runs at most LOGIN_MAX_FAILURES password
// checks in total. Requests come from a loopback address chosen for this run (helpers/loopback.ts),
// so the client's state in Redis starts fresh whatever ran before.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loginAdmin, uniqueEmail } from '../helpers/auth.js';
import { postgresBackend, postgresSkipReason, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { expectError } from '../helpers/errors.js';
import { createLoopbackClient, randomLoopbackAddress, type LoopbackClient } from '../helpers/loopback.js';
import { forgetRateLimitState } from '../helpers/redis.js';
import { serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';

const INSTANCES = 3;
const BURST = 100;
const LOGIN_MAX_FAILURES = 5;
const LOGIN = '/api/v1/auth/login';

describe(`login throttle over ${INSTANCES} instances on one PostgreSQL and one Redis`, async () => {
  const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
  let database: TestDatabase | undefined;
  let processes: ServiceProcess[] = [];
  let clients: LoopbackClient[] = [];

  before(async () => {
    if (skip) return;
    database = await postgresBackend.createDatabase();
    const env = serviceEnv(database, {
      REDIS_URL: TEST_REDIS_URL,
      DATABASE_POOL_SIZE: '4',
      LOG_LEVEL: 'warn',
      LOGIN_MAX_FAILURES: String(LOGIN_MAX_FAILURES),
    });
    processes = await Promise.all(Array.from({ length: INSTANCES }, () => startServiceProcess(env, { startTimeoutMs: 45_000 })));
    const address = randomLoopbackAddress();
    clients = processes.map((service) => createLoopbackClient(service.baseUrl, address, { timeoutMs: 60_000 }));
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(processes.map((service) => service.kill()));
    await forgetRateLimitState(new Set(clients.map((client) => client.localAddress)));
    await database?.drop();
  });

  const burstOverInstances = (email: string) =>
    Promise.all(
      Array.from({ length: BURST }, (_, index) =>
        (clients[index % INSTANCES] as LoopbackClient).post(LOGIN, { email, password: 'definitely-wrong' }),
      ),
    );

  const countsOf = (statuses: number[]) =>
    statuses.reduce<Record<number, number>>((counts, status) => ({ ...counts, [status]: (counts[status] ?? 0) + 1 }), {});

  it(`when ${BURST} wrong-password logins for one email are spread over ${INSTANCES} instances at once, then at most LOGIN_MAX_FAILURES are checked in total`, { skip, timeout: 120_000 }, async () => {
    const [first] = clients;
    assert.ok(first);
    const admin = await loginAdmin(first);
    const email = uniqueEmail('throttle-scale');
    const created = await first.post('/api/v1/users', { email, name: 'Victim', password: 'victim-password-1' }, { token: admin.accessToken });
    assert.equal(created.status, 201, created.text);

    const responses = await burstOverInstances(email);
    const counts = countsOf(responses.map((response) => response.status));
    process.stdout.write(`# ${BURST} logins over ${INSTANCES} instances: ${JSON.stringify(counts)}\n`);
    assert.ok((counts[401] ?? 0) <= LOGIN_MAX_FAILURES, `at most ${LOGIN_MAX_FAILURES} password checks in total; statuses: ${JSON.stringify(counts)}`);
    assert.equal((counts[401] ?? 0) + (counts[429] ?? 0), BURST, `statuses: ${JSON.stringify(counts)}`);
    for (const response of responses) {
      if (response.status === 401) expectError(response, 401, 'INVALID_CREDENTIALS');
      else expectError(response, 429, 'RATE_LIMITED');
    }
    // The client is locked out for that email on every instance, even with the right password.
    for (const client of clients) {
      const response = await client.post(LOGIN, { email, password: 'victim-password-1' });
      expectError(response, 429, 'RATE_LIMITED');
      const retryAfter = Number(response.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After: ${response.headers.get('retry-after')}`);
    }
  });
});
