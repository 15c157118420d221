// Three REAL service processes (`node --import tsx src/main.ts serve`) on one PostgreSQL database and
// one Redis, as behind a load balancer: limits are global, a write or a revocation on one instance is
// seen by the others within the contract's 1 second, refresh-token rotation has one successor across
// instances, and a cold key costs one database read per instance (and none on the next instance, which
// finds it in Redis).
//
// Every request comes from a loopback address chosen for this run (see helpers/loopback.ts): limits
// kept in Redis by client address therefore start fresh on every run, whatever ran before.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { login, loginAdmin, uniqueEmail, type Session } from '../helpers/auth.js';
import { postgresBackend, postgresSkipReason, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { expectError } from '../helpers/errors.js';
import { createLoopbackClient, randomLoopbackAddress, type LoopbackClient } from '../helpers/loopback.js';
import { cacheCounters, counterDelta } from '../helpers/metrics.js';
import { forgetRateLimitState, inspectRedis, untilCachedInRedis } from '../helpers/redis.js';
import { msUntil as pollUntil } from '../helpers/poll.js';
import { expectUser, type User } from '../helpers/users.js';
import { USER_STATE_MAX_STALENESS_MS } from '../../src/app.js';
import { serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';

/** The contract's bound for a write or a revocation to reach every instance. */
const PROPAGATION_BOUND_MS = 1_000;
/** How long a poll keeps going, so that a late propagation is measured rather than only reported as late. */
const POLL_LIMIT_MS = 3_000;
const RATE_LIMIT = 30;

const say = (line: string) => process.stdout.write(`# ${line}\n`);

const instanceEnv = (database: TestDatabase, extra: Record<string, string> = {}): Record<string, string> =>
  serviceEnv(database, { REDIS_URL: TEST_REDIS_URL, DATABASE_POOL_SIZE: '4', LOG_LEVEL: 'warn', ...extra });

const dataOf = <T>(response: { body: unknown }): T => (response.body as { data: T }).data;

/** Times `probe` until it says yes (see helpers/poll.ts), up to POLL_LIMIT_MS. */
const msUntil = (since: number, probe: () => Promise<boolean>) => pollUntil(since, probe, POLL_LIMIT_MS);

const formatDelays = (delays: ReadonlyArray<number | undefined>) =>
  delays.map((delay) => (delay === undefined ? `>${POLL_LIMIT_MS}` : delay.toFixed(1))).join(' ms, ') + ' ms';

describe('three instances on one PostgreSQL and one Redis', async () => {
  const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
  const address = randomLoopbackAddress();
  let database: TestDatabase | undefined;
  const processes: ServiceProcess[] = [];
  const clients: LoopbackClient[] = [];
  /** The trio A, B, C (rate limit out of the way). */
  let trio: [LoopbackClient, LoopbackClient, LoopbackClient];
  let admin: Session;

  const start = async (count: number, extra: Record<string, string> = {}): Promise<LoopbackClient[]> => {
    const started = await Promise.all(
      Array.from({ length: count }, () => startServiceProcess(instanceEnv(database as TestDatabase, extra), { startTimeoutMs: 45_000 })),
    );
    processes.push(...started);
    const made = started.map((service) => createLoopbackClient(service.baseUrl, address));
    clients.push(...made);
    return made;
  };
  const asTrio = (list: LoopbackClient[]): [LoopbackClient, LoopbackClient, LoopbackClient] => {
    const [a, b, c] = list;
    assert.ok(a && b && c);
    return [a, b, c];
  };

  before(async () => {
    if (skip) return;
    database = await postgresBackend.createDatabase();
    trio = asTrio(await start(3));
    admin = await loginAdmin(trio[0]);
    say(`instances on ports ${processes.map((service) => service.port).join(', ')}; client address ${address}`);
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all(processes.map((service) => service.kill()));
    await forgetRateLimitState(new Set(clients.map((client) => client.localAddress)));
    await database?.drop();
  });

  /** Creates a user through A (no instance has read it yet) and logs them in there. */
  const createUser = async (role: 'user' | 'admin' = 'user'): Promise<{ user: User; session: Session }> => {
    const [a] = trio;
    const email = uniqueEmail(`scale-${role}`);
    const password = 'scale-password-1';
    const created = await a.post('/api/v1/users', { email, name: 'Before', password, role }, { token: admin.accessToken });
    assert.equal(created.status, 201, created.text);
    return { user: expectUser(dataOf(created)), session: await login(a, email, password) };
  };

  it(`when ${RATE_LIMIT} /api/ requests go round-robin over three instances, then all are allowed and the next one is 429 on every instance`, { skip, timeout: 60_000 }, async () => {
    // A separate trio with a low limit and a long window (nothing refills during the test).
    const limited = asTrio(await start(3, { RATE_LIMIT_MAX: String(RATE_LIMIT), RATE_LIMIT_WINDOW_MS: '3600000' }));
    const limitedAddress = randomLoopbackAddress();
    const viaFreshAddress = limited.map((client) => createLoopbackClient(client.baseUrl, limitedAddress));
    clients.push(...viaFreshAddress);
    try {
      for (let index = 0; index < RATE_LIMIT; index++) {
        const client = viaFreshAddress[index % 3] as LoopbackClient;
        const response = await client.get('/api/v1/users/me', { token: admin.accessToken });
        assert.equal(response.status, 200, `request ${index + 1} of ${RATE_LIMIT} (on instance ${index % 3}): ${response.status} ${response.text}`);
      }
      for (const [index, client] of viaFreshAddress.entries()) {
        const response = await client.get('/api/v1/users/me', { token: admin.accessToken });
        expectError(response, 429, 'RATE_LIMITED');
        const retryAfter = Number(response.headers.get('retry-after'));
        assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After on instance ${index}: ${response.headers.get('retry-after')}`);
      }
      // Another client is not affected.
      const other = createLoopbackClient(limited[0].baseUrl, randomLoopbackAddress());
      clients.push(other);
      assert.equal((await other.get('/api/v1/users/me', { token: admin.accessToken })).status, 200);
    } finally {
      const mine = processes.splice(3, 3);
      await Promise.all(mine.map((service) => service.kill()));
    }
  });

  it('when 5 logins fail on different instances, then the 6th attempt is 429 on every instance, even with the right password', { skip, timeout: 30_000 }, async () => {
    const { user } = await createUser();
    for (let attempt = 0; attempt < 5; attempt++) {
      const client = trio[attempt % 3] as LoopbackClient;
      const response = await client.post('/api/v1/auth/login', { email: user.email, password: 'wrong-password-1' });
      expectError(response, 401, 'INVALID_CREDENTIALS');
    }
    for (const [index, client] of trio.entries()) {
      const response = await client.post('/api/v1/auth/login', { email: user.email, password: 'scale-password-1' });
      expectError(response, 429, 'RATE_LIMITED');
      const retryAfter = Number(response.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After on instance ${index}: ${response.headers.get('retry-after')}`);
    }
  });

  it('when A renames a user that B and C have cached, then B and C serve the new name within 1 s', { skip, timeout: 30_000 }, async () => {
    const [a, b, c] = trio;
    const { user } = await createUser();
    // The admin's copies from earlier tests expire now, not between the two reads below (a reload of
    // the admin would count as a miss too): every copy lives USER_STATE_MAX_STALENESS_MS from its load.
    await new Promise((resolve) => setTimeout(resolve, USER_STATE_MAX_STALENESS_MS));
    for (const client of [b, c]) {
      const first = await client.get(`/api/v1/users/${user.id}`, { token: admin.accessToken });
      assert.equal(dataOf<User>(first).name, 'Before');
      // Served from memory the second time: no database read.
      const before = await cacheCounters(client.baseUrl);
      const second = await client.get(`/api/v1/users/${user.id}`, { token: admin.accessToken });
      assert.equal(dataOf<User>(second).name, 'Before');
      assert.equal(counterDelta(before, await cacheCounters(client.baseUrl)).miss, 0, `${client.baseUrl} did not have the user cached`);
    }

    const patched = await a.patch(`/api/v1/users/${user.id}`, { name: 'After' }, { token: admin.accessToken });
    assert.equal(patched.status, 200, patched.text);
    const since = performance.now();
    const delays = await Promise.all(
      [b, c].map((client) =>
        msUntil(since, async () => {
          const response = await client.get(`/api/v1/users/${user.id}`, { token: admin.accessToken });
          assert.equal(response.status, 200, response.text);
          return dataOf<User>(response).name === 'After';
        }),
      ),
    );
    say(`rename on A seen on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} served the old name for ${formatDelays([delay])}`);
    }
    // And it stays fresh (no stale copy comes back from Redis).
    for (const client of [a, b, c]) {
      assert.equal(dataOf<User>(await client.get(`/api/v1/users/${user.id}`, { token: admin.accessToken })).name, 'After');
    }
  });

  it('when A deletes a user whose state B and C have cached, then their access token is 401 on B and C within 1 s', { skip, timeout: 30_000 }, async () => {
    const [a, b, c] = trio;
    const { user, session } = await createUser();
    for (const client of [b, c]) {
      for (let read = 0; read < 2; read++) {
        assert.equal((await client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
      }
    }
    const deleted = await a.delete(`/api/v1/users/${user.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    const since = performance.now();
    const delays = await Promise.all(
      [b, c].map((client) =>
        msUntil(since, async () => {
          const response = await client.get('/api/v1/users/me', { token: session.accessToken });
          if (response.status === 200) return false;
          expectError(response, 401, 'UNAUTHENTICATED');
          return true;
        }),
      ),
    );
    say(`delete on A enforced on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} accepted the deleted user's token for ${formatDelays([delay])}`);
    }
  });

  it('when A revokes a session whose access token B and C have accepted, then that token is 401 on B and C within 1 s and the other session still works', { skip, timeout: 30_000 }, async () => {
    const [a, b, c] = trio;
    const { user, session } = await createUser();
    const other = await login(a, user.email, 'scale-password-1');
    for (const client of [b, c]) {
      for (let read = 0; read < 2; read++) {
        assert.equal((await client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
      }
    }
    const sessionId = JSON.parse(Buffer.from(session.accessToken.split('.')[1] ?? '', 'base64url').toString('utf8')).sid as string;
    const revoked = await a.delete(`/api/v1/auth/sessions/${sessionId}`, { token: other.accessToken });
    assert.equal(revoked.status, 204, revoked.text);
    const since = performance.now();
    const delays = await Promise.all(
      [b, c].map((client) =>
        msUntil(since, async () => {
          const response = await client.get('/api/v1/users/me', { token: session.accessToken });
          if (response.status === 200) return false;
          expectError(response, 401, 'UNAUTHENTICATED');
          return true;
        }),
      ),
    );
    say(`session revoked on A enforced on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} accepted the revoked session's token for ${formatDelays([delay])}`);
    }
    for (const client of [a, b, c]) assert.equal((await client.get('/api/v1/users/me', { token: other.accessToken })).status, 200);
  });

  it('when A demotes an admin whose state B and C have cached, then B and C refuse them admin routes within 1 s', { skip, timeout: 30_000 }, async () => {
    const [a, b, c] = trio;
    const { user, session } = await createUser('admin');
    for (const client of [b, c]) {
      for (let read = 0; read < 2; read++) {
        const listed = await client.get('/api/v1/users?limit=1', { token: session.accessToken });
        assert.equal(listed.status, 200, listed.text);
      }
    }
    const demoted = await a.patch(`/api/v1/users/${user.id}`, { role: 'user' }, { token: admin.accessToken });
    assert.equal(demoted.status, 200, demoted.text);
    const since = performance.now();
    const delays = await Promise.all(
      [b, c].map((client) =>
        msUntil(since, async () => {
          const response = await client.get('/api/v1/users?limit=1', { token: session.accessToken });
          if (response.status === 200) return false;
          expectError(response, 403, 'FORBIDDEN');
          return true;
        }),
      ),
    );
    say(`demotion on A enforced on B, C after ${formatDelays(delays)}`);
    for (const [index, delay] of delays.entries()) {
      assert.ok(delay !== undefined && delay < PROPAGATION_BOUND_MS, `instance ${'BC'[index]} kept admin rights for ${formatDelays([delay])}`);
    }
    // Still a user: their own profile works everywhere.
    for (const client of [a, b, c]) assert.equal((await client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
  });

  it('when one refresh token is refreshed 10 times on A and 10 times on B at once, then there is exactly one successor', { skip, timeout: 30_000 }, async () => {
    const [a, b] = trio;
    const { session } = await createUser();
    const attempts = [...Array.from({ length: 10 }, () => a), ...Array.from({ length: 10 }, () => b)].map((client) =>
      client.post('/api/v1/auth/refresh', { refreshToken: session.refreshToken }),
    );
    const responses = await Promise.all(attempts);
    const statuses = responses.map((response) => response.status);
    assert.ok(statuses.every((status) => status === 200), `refresh statuses: ${statuses.join(', ')}; ${responses.find((r) => r.status !== 200)?.text ?? ''}`);
    const successors = new Set(responses.map((response) => dataOf<{ refreshToken: string }>(response).refreshToken));
    assert.equal(successors.size, 1, `${successors.size} different successor refresh tokens`);
    const [successor] = [...successors];
    assert.ok(successor && successor !== session.refreshToken);

    const sha256 = (token: string) => createHash('sha256').update(token).digest();
    const client = new pg.Client({ connectionString: database?.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ token_hash: Buffer }>(
        'select child.token_hash from refresh_tokens child join refresh_tokens parent on child.parent_id = parent.id where parent.token_hash = $1',
        [sha256(session.refreshToken)],
      );
      assert.equal(rows.length, 1, `the parent has ${rows.length} children in refresh_tokens`);
      assert.ok(rows[0]?.token_hash.equals(sha256(successor)), 'the stored child is not the successor that was handed out');
    } finally {
      await client.end();
    }
    // The successor works on the third instance.
    assert.equal((await trio[2].post('/api/v1/auth/refresh', { refreshToken: successor })).status, 200);
  });

  it('when 50 requests read a cold user at once on one instance, then it reads the database once, and the next instance finds it in Redis', { skip, timeout: 30_000 }, async () => {
    const [, b, c] = trio;
    const { user } = await createUser();
    // The admin's own state is freshly loaded on C and B, so the only cold key is the user's: every
    // copy lives USER_STATE_MAX_STALENESS_MS from its load, so wait until older copies are gone first.
    await new Promise((resolve) => setTimeout(resolve, USER_STATE_MAX_STALENESS_MS));
    const warmedAt = performance.now();
    for (const client of [b, c]) assert.equal((await client.get('/api/v1/users/me', { token: admin.accessToken })).status, 200);

    const before = await cacheCounters(c.baseUrl);
    const reads = await Promise.all(Array.from({ length: 50 }, () => c.get(`/api/v1/users/${user.id}`, { token: admin.accessToken })));
    const delta = counterDelta(before, await cacheCounters(c.baseUrl));
    assert.deepEqual(
      reads.map((response) => response.status),
      Array.from({ length: 50 }, () => 200),
    );
    for (const response of reads) assert.deepEqual(dataOf(response), user);
    say(`50 cold reads on C: ${JSON.stringify(delta)}`);
    assert.equal(delta.miss, 1, `50 concurrent cold reads caused ${delta.miss} database reads`);
    assert.equal(delta.l1_hit + delta.shared_hit + delta.miss, 100, 'every request read the admin and the user once each');

    // The load stored it in Redis; B, which never read it, gets it from there.
    const redis = inspectRedis();
    try {
      assert.ok(await untilCachedInRedis(redis, 'users', user.id), 'the user never appeared in the shared cache');
    } finally {
      redis.disconnect();
    }
    const beforeB = await cacheCounters(b.baseUrl);
    const onB = await b.get(`/api/v1/users/${user.id}`, { token: admin.accessToken });
    const elapsedMs = performance.now() - warmedAt;
    assert.deepEqual(dataOf(onB), user);
    const deltaB = counterDelta(beforeB, await cacheCounters(b.baseUrl));
    say(`first read on B, ${elapsedMs.toFixed(0)} ms after the admin's and the user's copies were loaded: ${JSON.stringify(deltaB)}`);
    // Every copy lives at most USER_STATE_MAX_STALENESS_MS from its load (less 10 % jitter): on a box
    // so loaded that B reads later than that, the copy may be gone by design and B reads the database.
    if (elapsedMs < USER_STATE_MAX_STALENESS_MS * 0.85) {
      assert.deepEqual(deltaB, { l1_hit: 1, shared_hit: 1, miss: 0 }, 'B: the admin from memory, the user from Redis, no database read');
    } else {
      assert.equal(deltaB.l1_hit + deltaB.shared_hit + deltaB.miss, 2, 'B: the admin and the user, from wherever their copies still live');
    }
  });
});
