// The login brute-force throttle under concurrency, in one process: an attempt is reserved before the
// password is checked, in one atomic step, so a burst of logins for one (email, client) runs at most
// LOGIN_MAX_FAILURES password checks however many arrive at once; the rest are 429 without hashing.
// Run on both backends, with the in-process throttle and with the Redis one.
import assert from 'node:assert/strict';
import { registerAndLogin, uniqueEmail } from '../helpers/auth.js';
import { redisSkipReason, TEST_REDIS_URL } from '../helpers/backends.js';
import type { ApiResponse } from '../helpers/client.js';
import { expectError } from '../helpers/errors.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const LOGIN = '/api/v1/auth/login';
const BURST = 100;

const statusCounts = (responses: ReadonlyArray<ApiResponse<unknown>>): Record<number, number> => {
  const counts: Record<number, number> = {};
  for (const response of responses) counts[response.status] = (counts[response.status] ?? 0) + 1;
  return counts;
};

// Probed once, before any suite is declared: a describe that awaits long is cut off by its parent.
const stores: ReadonlyArray<{ name: 'memory' | 'redis'; env: Record<string, string>; skipReason: string | undefined }> = [
  { name: 'memory', env: {}, skipReason: undefined },
  { name: 'redis', env: { REDIS_URL: TEST_REDIS_URL }, skipReason: await redisSkipReason() },
];

for (const store of stores) {
  describeOnBackends('login throttle under concurrency', { variant: `${store.name} throttle`, skip: store.skipReason }, ({ it, before, startServer }) => {
    let server: TestServer;
    let maxFailures: number;

    before(async () => {
      // One hashing thread: checks queue, which widens the window a check-then-record throttle loses.
      server = await startServer({ ...store.env, PASSWORD_HASH_CONCURRENCY: '1' });
      maxFailures = server.app.config.loginMaxFailures;
    });

    const burstOfWrongPasswords = (email: string) =>
      Promise.all(Array.from({ length: BURST }, () => server.client.post(LOGIN, { email, password: 'definitely-wrong' })));

    const expectThrottled = (response: ApiResponse<unknown>) => {
      expectError(response, 429, 'RATE_LIMITED');
      const retryAfter = Number(response.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 900, `Retry-After: ${response.headers.get('retry-after')}`);
    };

    it(`when ${BURST} wrong-password logins for one email arrive at once, then at most LOGIN_MAX_FAILURES are checked (401) and the rest are 429`, { timeout: 60_000 }, async () => {
      const victim = await registerAndLogin(server.client);
      const responses = await burstOfWrongPasswords(victim.user.email);
      const counts = statusCounts(responses);
      assert.equal(counts[401] ?? 0, maxFailures, `at most ${maxFailures} password checks; statuses: ${JSON.stringify(counts)}`);
      assert.equal(counts[429] ?? 0, BURST - maxFailures, `statuses: ${JSON.stringify(counts)}`);
      for (const response of responses) {
        if (response.status === 401) expectError(response, 401, 'INVALID_CREDENTIALS');
        else expectThrottled(response);
      }
      // Locked for this client even with the right password.
      expectThrottled(await server.client.post(LOGIN, { email: victim.user.email, password: victim.password }));
    });

    it(`when ${BURST} logins for an unknown email arrive at once, then it is throttled the same way`, { timeout: 60_000 }, async () => {
      const counts = statusCounts(await burstOfWrongPasswords(uniqueEmail('ghost')));
      assert.equal(counts[401] ?? 0, maxFailures, `statuses: ${JSON.stringify(counts)}`);
      assert.equal(counts[429] ?? 0, BURST - maxFailures, `statuses: ${JSON.stringify(counts)}`);
    });

    it('when LOGIN_MAX_FAILURES - 1 logins failed and the right password comes, then it succeeds and the count starts over', { timeout: 60_000 }, async () => {
      const session = await registerAndLogin(server.client);
      const almost = await Promise.all(
        Array.from({ length: maxFailures - 1 }, () => server.client.post(LOGIN, { email: session.user.email, password: 'definitely-wrong' })),
      );
      for (const response of almost) expectError(response, 401, 'INVALID_CREDENTIALS');
      const right = await server.client.post(LOGIN, { email: session.user.email, password: session.password });
      assert.equal(right.status, 200, right.text);
      // Reset: a full allowance of checks again, then the lock.
      const counts = statusCounts(await burstOfWrongPasswords(session.user.email));
      assert.equal(counts[401] ?? 0, maxFailures, `after a successful login the count starts over; statuses: ${JSON.stringify(counts)}`);
      expectThrottled(await server.client.post(LOGIN, { email: session.user.email, password: session.password }));
    });
  });
}
