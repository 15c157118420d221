// Contract: "Auth" — register, login (with brute-force protection), refresh-token rotation, logout,
// logout-all, password change, JWKS and the access tokens it verifies.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK } from 'jose';
import type { ApiResponse, Client } from '../helpers/client.js';
import { login, loginAdmin, registerAndLogin, uniqueEmail } from '../helpers/auth.js';
import { expectError, pathsOf } from '../helpers/errors.js';
import { eventually } from '../helpers/poll.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { expectUser, type User } from '../helpers/users.js';

const REGISTER = '/api/v1/auth/register';
const LOGIN = '/api/v1/auth/login';
const REFRESH = '/api/v1/auth/refresh';
const LOGOUT = '/api/v1/auth/logout';
const LOGOUT_ALL = '/api/v1/auth/logout-all';
const PASSWORD = '/api/v1/auth/password';
const ME = '/api/v1/users/me';
const JWKS = '/.well-known/jwks.json';

interface TokenPair {
  accessToken: string;
  refreshToken: string;
  tokenType: string;
  expiresIn: number;
}
interface LoginResult extends TokenPair {
  user: User;
}
interface PublicKey {
  kid?: unknown;
  kty?: unknown;
  crv?: unknown;
  x?: unknown;
  [member: string]: unknown;
}

function expectTokenPair(value: unknown, keys: string[]): TokenPair {
  assert.ok(value && typeof value === 'object');
  assert.deepEqual(Object.keys(value).sort(), [...keys].sort());
  const pair = value as TokenPair;
  assert.equal(typeof pair.accessToken, 'string');
  assert.equal(pair.accessToken.split('.').length, 3, 'access token is not a JWS');
  assert.ok(typeof pair.refreshToken === 'string' && pair.refreshToken.length > 0);
  assert.equal(pair.tokenType, 'Bearer');
  assert.ok(Number.isInteger(pair.expiresIn) && pair.expiresIn > 0);
  return pair;
}

const expectLoginResult = (value: unknown): LoginResult => {
  const result = expectTokenPair(value, ['accessToken', 'refreshToken', 'tokenType', 'expiresIn', 'user']) as LoginResult;
  expectUser(result.user);
  return result;
};

const base64UrlJson = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const jwtPart = (token: string, index: 0 | 1): Record<string, unknown> => {
  const part = token.split('.')[index];
  assert.ok(part !== undefined);
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
};

describeOnBackends('auth', ({ it, before, startServer }) => {
  let server: TestServer;
  /** Behind a trusted proxy (X-Forwarded-For names the client), 1 s reuse grace, 1 s access tokens. */
  let proxied: TestServer;
  let client: Client;

  before(async () => {
    [server, proxied] = await Promise.all([
      startServer(),
      startServer({ TRUST_PROXY: '127.0.0.1', REFRESH_REUSE_GRACE_SECONDS: '1', ACCESS_TOKEN_TTL: '1' }),
    ]);
    client = server.client;
  });
  const userRowsWithEmail = (email: string) =>
    server.app.database.db.selectFrom('users').select(['id', 'email', 'password_hash']).where('email', '=', email).execute();
  const liveRefreshTokensOf = async (userId: string): Promise<number> => {
    const row = await server.app.database.db
      .selectFrom('refresh_tokens')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('user_id', '=', userId)
      .where('revoked_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  };
  const me = (token: string) => client.get(ME, { token });
  const refresh = (refreshToken: string, on: Client = client) => on.post<{ data: TokenPair }>(REFRESH, { refreshToken });

  describe('register', () => {
    it('when a user registers, then 201 {data: User} with role user, and the password is stored only as an argon2id hash', async () => {
      const email = uniqueEmail('reg');
      const password = 'register-pw-1';
      const response = await client.post<{ data: User }>(REGISTER, { email, name: 'Reg Istered', password });
      assert.equal(response.status, 201, response.text);
      assert.deepEqual(Object.keys(response.body), ['data']);
      const user = expectUser(response.body.data);
      assert.equal(user.email, email);
      assert.equal(user.name, 'Reg Istered');
      assert.equal(user.role, 'user');
      assert.doesNotMatch(response.text, new RegExp(password));
      const rows = await userRowsWithEmail(email);
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.id, user.id);
      assert.match(rows[0]?.password_hash ?? '', /^\$argon2id\$/);
      assert.ok(!rows[0]?.password_hash.includes(password));
    });

    it('when the email has spaces and capitals, then it is stored and answered trimmed and lower-cased', async () => {
      const local = `Mixed.Case-${Date.now()}`;
      const response = await client.post<{ data: User }>(REGISTER, {
        email: `  ${local}@Example.COM \t`,
        name: 'Mixed',
        password: 'mixed-case-1',
      });
      assert.equal(response.status, 201, response.text);
      const expected = `${local.toLowerCase()}@example.com`;
      assert.equal(response.body.data.email, expected);
      assert.equal((await userRowsWithEmail(expected)).length, 1);
      const session = await login(client, expected, 'mixed-case-1');
      assert.equal(session.user.id, response.body.data.id);
    });

    it('when the email is already taken in another case or with spaces, then 409 EMAIL_TAKEN and no second user', async () => {
      const email = uniqueEmail('taken');
      assert.equal((await client.post(REGISTER, { email, name: 'First', password: 'first-pw-1' })).status, 201);
      for (const variant of [email, email.toUpperCase(), ` ${email} `]) {
        const response = await client.post(REGISTER, { email: variant, name: 'Second', password: 'second-pw-1' });
        expectError(response, 409, 'EMAIL_TAKEN');
      }
      const rows = await server.app.database.db
        .selectFrom('users')
        .select('id')
        .where((eb) => eb(eb.fn('lower', ['email']), '=', email))
        .execute();
      assert.equal(rows.length, 1);
      await login(client, email, 'first-pw-1');
    });

    it('when the name is 1 or 100 characters, then 201; when it is empty or 101, then 400 naming it', async () => {
      for (const name of ['a', 'n'.repeat(100)]) {
        const response = await client.post<{ data: User }>(REGISTER, { email: uniqueEmail('name'), name, password: 'name-pw-12' });
        assert.equal(response.status, 201, `name of ${name.length}: ${response.text}`);
        assert.equal(response.body.data.name, name);
      }
      for (const name of ['', 'n'.repeat(101)]) {
        const email = uniqueEmail('name');
        const response = await client.post(REGISTER, { email, name, password: 'name-pw-12' });
        assert.deepEqual(pathsOf(expectError(response, 400, 'VALIDATION_FAILED')), ['name'], `name of ${name.length}`);
        assert.equal((await userRowsWithEmail(email)).length, 0);
      }
    });

    it('when the password is 8 or 128 characters, then 201 and it logs in; when 7 or 129, then 400 naming it', async () => {
      for (const password of ['p'.repeat(8), 'p'.repeat(128)]) {
        const email = uniqueEmail('pw');
        const response = await client.post(REGISTER, { email, name: 'Pw', password });
        assert.equal(response.status, 201, `password of ${password.length}: ${response.text}`);
        await login(client, email, password);
      }
      for (const password of ['p'.repeat(7), 'p'.repeat(129)]) {
        const email = uniqueEmail('pw');
        const response = await client.post(REGISTER, { email, name: 'Pw', password });
        assert.deepEqual(pathsOf(expectError(response, 400, 'VALIDATION_FAILED')), ['password'], `password of ${password.length}`);
        assert.equal((await userRowsWithEmail(email)).length, 0);
      }
    });

    it('when the email is not an email, then 400 naming it', async () => {
      for (const email of ['not-an-email', '', 'a@', '@example.com']) {
        const response = await client.post(REGISTER, { email, name: 'Bad', password: 'bad-email-1' });
        assert.deepEqual(pathsOf(expectError(response, 400, 'VALIDATION_FAILED')), ['email'], JSON.stringify(email));
      }
    });

    it('when a registration asks for role admin, then it is refused and no user is created', async () => {
      // An unknown field (400) or a non-admin sending `role` (403): either way, no admin appears.
      const email = uniqueEmail('wannabe');
      const response = await client.post(REGISTER, { email, name: 'Wannabe', password: 'wannabe-pw-1', role: 'admin' });
      assert.ok(response.status === 400 || response.status === 403, `got ${response.status}: ${response.text}`);
      expectError(response, response.status, response.status === 400 ? 'VALIDATION_FAILED' : 'FORBIDDEN');
      assert.equal((await userRowsWithEmail(email)).length, 0);
    });
  });

  describe('login', () => {
    it('when the credentials are right, then 200 {data: {accessToken, refreshToken, tokenType: "Bearer", expiresIn, user}}', async () => {
      const email = uniqueEmail('login');
      const registered = await client.post<{ data: User }>(REGISTER, { email, name: 'Log In', password: 'login-pw-1' });
      const response = await client.post<{ data: LoginResult }>(LOGIN, { email, password: 'login-pw-1' });
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(Object.keys(response.body), ['data']);
      const result = expectLoginResult(response.body.data);
      assert.equal(result.expiresIn, 900);
      assert.deepEqual(result.user, registered.body.data);
      assert.equal((await me(result.accessToken)).status, 200);
      assert.equal((await refresh(result.refreshToken)).status, 200);
    });

    it('when the email is sent with capitals and spaces, then the login succeeds', async () => {
      const session = await registerAndLogin(client);
      const result = await login(client, `  ${session.user.email.toUpperCase()} `, session.password);
      assert.equal(result.user.id, session.user.id);
    });

    it('when the password is wrong or the email unknown, then the same 401 INVALID_CREDENTIALS', async () => {
      const session = await registerAndLogin(client);
      const wrongPassword = expectError(await client.post(LOGIN, { email: session.user.email, password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
      const unknownEmail = expectError(await client.post(LOGIN, { email: uniqueEmail('ghost'), password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
      assert.equal(wrongPassword.message, unknownEmail.message);
    });

    it('when the email is unknown, then the answer takes about as long as for a wrong password', async () => {
      const session = await registerAndLogin(client);
      const timeOf = async (email: string): Promise<number> => {
        const started = performance.now();
        expectError(await client.post(LOGIN, { email, password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
        return performance.now() - started;
      };
      const median = (values: number[]) => [...values].sort((a, b) => a - b)[1] ?? 0;
      const known: number[] = [];
      const unknown: number[] = [];
      const ghost = uniqueEmail('ghost');
      for (let round = 0; round < 3; round++) {
        known.push(await timeOf(session.user.email));
        unknown.push(await timeOf(ghost));
      }
      // Loose bound: skipping the hash for unknown emails would make them ~10x faster.
      assert.ok(median(unknown) > median(known) * 0.3, `unknown ${median(unknown).toFixed(1)} ms vs known ${median(known).toFixed(1)} ms`);
    });

    it('when the user was deleted, then its old credentials give 401 INVALID_CREDENTIALS', async () => {
      const admin = await loginAdmin(client);
      const session = await registerAndLogin(client);
      assert.equal((await client.delete(`/api/v1/users/${session.user.id}`, { token: admin.accessToken })).status, 204);
      expectError(await client.post(LOGIN, { email: session.user.email, password: session.password }), 401, 'INVALID_CREDENTIALS');
    });
  });

  describe('login brute-force protection', () => {
    const failLogin = async (on: Client, email: string, headers: Record<string, string> = {}) =>
      expectError(await on.post(LOGIN, { email, password: 'definitely-wrong' }, { headers }), 401, 'INVALID_CREDENTIALS');
    const expectThrottled = (response: ApiResponse<unknown>) => {
      expectError(response, 429, 'RATE_LIMITED');
      const retryAfter = response.headers.get('retry-after');
      assert.match(retryAfter ?? '', /^\d+$/, `Retry-After: ${retryAfter}`);
      assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 900, `Retry-After: ${retryAfter}`);
    };

    it('when one client fails 5 times for an email, then the 6th attempt is 429 with Retry-After even with the right password', async () => {
      const session = await registerAndLogin(client);
      for (let attempt = 1; attempt <= 5; attempt++) await failLogin(client, session.user.email);
      expectThrottled(await client.post(LOGIN, { email: session.user.email, password: session.password }));
      expectThrottled(await client.post(LOGIN, { email: session.user.email, password: 'definitely-wrong' }));
      // The same email in another spelling is the same email.
      expectThrottled(await client.post(LOGIN, { email: ` ${session.user.email.toUpperCase()}`, password: session.password }));
    });

    it('when one email is throttled, then other emails from the same client are unaffected', async () => {
      const victim = await registerAndLogin(client);
      const bystander = await registerAndLogin(client);
      for (let attempt = 1; attempt <= 5; attempt++) await failLogin(client, victim.user.email);
      expectThrottled(await client.post(LOGIN, { email: victim.user.email, password: victim.password }));
      await login(client, bystander.user.email, bystander.password);
      await failLogin(client, bystander.user.email);
    });

    it('when an unknown email fails 5 times, then it is throttled the same way', async () => {
      const ghost = uniqueEmail('ghost');
      for (let attempt = 1; attempt <= 5; attempt++) await failLogin(client, ghost);
      expectThrottled(await client.post(LOGIN, { email: ghost, password: 'definitely-wrong' }));
    });

    it('when a login succeeds before the 5th failure, then the count starts again', async () => {
      const session = await registerAndLogin(client);
      for (let attempt = 1; attempt <= 4; attempt++) await failLogin(client, session.user.email);
      await login(client, session.user.email, session.password);
      // Without the reset the 2nd failure from here would already be the 6th.
      for (let attempt = 1; attempt <= 5; attempt++) await failLogin(client, session.user.email);
      expectThrottled(await client.post(LOGIN, { email: session.user.email, password: session.password }));
    });

    it('when TRUST_PROXY is unset, then X-Forwarded-For does not make a new client', async () => {
      const session = await registerAndLogin(client);
      for (let attempt = 1; attempt <= 5; attempt++) {
        await failLogin(client, session.user.email, { 'x-forwarded-for': `198.51.100.${attempt}` });
      }
      expectThrottled(
        await client.post(LOGIN, { email: session.user.email, password: session.password }, { headers: { 'x-forwarded-for': '203.0.113.77' } }),
      );
      expectThrottled(await client.post(LOGIN, { email: session.user.email, password: session.password }));
    });

    it('when TRUST_PROXY trusts the proxy, then each forwarded address is its own client', async () => {
      const session = await registerAndLogin(proxied.client);
      const attacker = { 'x-forwarded-for': '198.51.100.10' };
      for (let attempt = 1; attempt <= 5; attempt++) await failLogin(proxied.client, session.user.email, attacker);
      expectThrottled(await proxied.client.post(LOGIN, { email: session.user.email, password: session.password }, { headers: attacker }));
      // A client cannot escape by prepending its own X-Forwarded-For entry: the proxy's is the one that counts.
      expectThrottled(
        await proxied.client.post(
          LOGIN,
          { email: session.user.email, password: session.password },
          { headers: { 'x-forwarded-for': '203.0.113.5, 198.51.100.10' } },
        ),
      );
      // Another client, and the proxy's own address, still log in; that does not unlock the attacker.
      const other = await proxied.client.post<{ data: LoginResult }>(
        LOGIN,
        { email: session.user.email, password: session.password },
        { headers: { 'x-forwarded-for': '198.51.100.11' } },
      );
      assert.equal(other.status, 200, other.text);
      await login(proxied.client, session.user.email, session.password);
      expectThrottled(await proxied.client.post(LOGIN, { email: session.user.email, password: session.password }, { headers: attacker }));
    });
  });

  describe('refresh', () => {
    it('when a refresh token is presented, then 200 with a new pair whose refresh token differs and whose access token works', async () => {
      const session = await registerAndLogin(client);
      const response = await refresh(session.refreshToken);
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(Object.keys(response.body), ['data']);
      const pair = expectTokenPair(response.body.data, ['accessToken', 'refreshToken', 'tokenType', 'expiresIn']);
      assert.notEqual(pair.refreshToken, session.refreshToken);
      assert.equal(pair.expiresIn, 900);
      const self = await me(pair.accessToken);
      assert.equal(self.status, 200);
      assert.equal((self.body as { data: User }).data.id, session.user.id);
      // The successor rotates in turn.
      const next = await refresh(pair.refreshToken);
      assert.equal(next.status, 200, next.text);
      assert.notEqual(next.body.data.refreshToken, pair.refreshToken);
    });

    it('when a spent token is presented again within the grace period, then it returns the SAME successor', async () => {
      const session = await registerAndLogin(client);
      const first = await refresh(session.refreshToken);
      assert.equal(first.status, 200, first.text);
      const again = await refresh(session.refreshToken);
      assert.equal(again.status, 200, again.text);
      assert.equal(again.body.data.refreshToken, first.body.data.refreshToken);
      assert.equal((await me(again.body.data.accessToken)).status, 200);
      // The successor is still good and rotates normally.
      const next = await refresh(first.body.data.refreshToken);
      assert.equal(next.status, 200, next.text);
    });

    it('when one token is refreshed concurrently, then every answer carries the same successor', async () => {
      const session = await registerAndLogin(client);
      const responses = await Promise.all(Array.from({ length: 6 }, () => refresh(session.refreshToken)));
      for (const response of responses) assert.equal(response.status, 200, response.text);
      assert.equal(new Set(responses.map((response) => response.body.data.refreshToken)).size, 1);
      const rows = await server.app.database.db
        .selectFrom('refresh_tokens')
        .select('id')
        .where('user_id', '=', session.user.id)
        .execute();
      assert.equal(rows.length, 2, 'one login token and exactly one successor');
    });

    it('when a spent token is presented after the grace period, then 401 TOKEN_REUSED and the whole login is revoked', async () => {
      const session = await registerAndLogin(proxied.client);
      const first = await refresh(session.refreshToken, proxied.client);
      assert.equal(first.status, 200, first.text);
      await sleep(1_300); // past REFRESH_REUSE_GRACE_SECONDS=1
      expectError(await refresh(session.refreshToken, proxied.client), 401, 'TOKEN_REUSED');
      expectError(await refresh(first.body.data.refreshToken, proxied.client), 401, 'INVALID_REFRESH_TOKEN');
      // Another login of the same user is a different family and survives.
      const other = await login(proxied.client, session.user.email, session.password);
      assert.equal((await refresh(other.refreshToken, proxied.client)).status, 200);
    });

    it('when the refresh token is unknown, then 401 INVALID_REFRESH_TOKEN', async () => {
      expectError(await refresh('no-such-token'), 401, 'INVALID_REFRESH_TOKEN');
      expectError(await refresh('x'.repeat(43)), 401, 'INVALID_REFRESH_TOKEN');
    });

    it('when the body is missing the token, then 400 VALIDATION_FAILED', async () => {
      const error = expectError(await client.post(REFRESH, {}), 400, 'VALIDATION_FAILED');
      assert.deepEqual(pathsOf(error), ['refreshToken']);
    });
  });

  describe('logout', () => {
    it('when a user logs out with a refresh token (no access token), then 204 and that login is revoked, other logins not', async () => {
      const session = await registerAndLogin(client);
      const rotated = await refresh(session.refreshToken);
      assert.equal(rotated.status, 200);
      const otherLogin = await login(client, session.user.email, session.password);

      const response = await client.post(LOGOUT, { refreshToken: rotated.body.data.refreshToken });
      assert.equal(response.status, 204);
      assert.equal(response.text, '');

      expectError(await refresh(rotated.body.data.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      // The spent parent is of the same family: within grace it must not hand out the revoked successor.
      expectError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      assert.equal(await liveRefreshTokensOf(session.user.id), 1, 'only the other login remains');
      assert.equal((await refresh(otherLogin.refreshToken)).status, 200);
    });

    it('when the refresh token is unknown or already revoked, then 204 as well', async () => {
      const unknown = await client.post(LOGOUT, { refreshToken: 'no-such-token' });
      assert.equal(unknown.status, 204);
      const session = await registerAndLogin(client);
      assert.equal((await client.post(LOGOUT, { refreshToken: session.refreshToken })).status, 204);
      assert.equal((await client.post(LOGOUT, { refreshToken: session.refreshToken })).status, 204);
    });
  });

  describe('logout-all', () => {
    it('when a user logs out everywhere, then 204, every refresh token is revoked and old access tokens fail within 1 s', async () => {
      const first = await registerAndLogin(client);
      const second = await login(client, first.user.email, first.password);
      const rotated = await refresh(second.refreshToken);
      assert.equal(rotated.status, 200);

      const response = await client.post(LOGOUT_ALL, undefined, { token: first.accessToken });
      assert.equal(response.status, 204, response.text);
      assert.equal(response.text, '');

      for (const token of [first.accessToken, second.accessToken, rotated.body.data.accessToken]) {
        expectError(await eventually(() => me(token), 401), 401, 'UNAUTHENTICATED');
      }
      for (const token of [first.refreshToken, rotated.body.data.refreshToken]) {
        expectError(await refresh(token), 401, 'INVALID_REFRESH_TOKEN');
      }
      assert.equal(await liveRefreshTokensOf(first.user.id), 0);

      // Logging in again works normally.
      const fresh = await login(client, first.user.email, first.password);
      assert.equal((await me(fresh.accessToken)).status, 200);
      assert.equal((await refresh(fresh.refreshToken)).status, 200);
    });

    it('when logout-all is called without an access token, then 401 UNAUTHENTICATED', async () => {
      expectError(await client.post(LOGOUT_ALL), 401, 'UNAUTHENTICATED');
    });
  });

  describe('password change', () => {
    it('when the current password is right, then 200 with a fresh login body, and every earlier token stops working', async () => {
      const session = await registerAndLogin(client);
      const otherLogin = await login(client, session.user.email, session.password);
      const newPassword = 'brand-new-password-1';

      const response = await client.post<{ data: LoginResult }>(
        PASSWORD,
        { currentPassword: session.password, newPassword },
        { token: session.accessToken },
      );
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(Object.keys(response.body), ['data']);
      const result = expectLoginResult(response.body.data);
      assert.equal(result.user.id, session.user.id);
      assert.doesNotMatch(response.text, new RegExp(newPassword));

      for (const token of [session.accessToken, otherLogin.accessToken]) {
        expectError(await eventually(() => me(token), 401), 401, 'UNAUTHENTICATED');
      }
      for (const token of [session.refreshToken, otherLogin.refreshToken]) {
        expectError(await refresh(token), 401, 'INVALID_REFRESH_TOKEN');
      }
      // The tokens handed out by the change itself work.
      assert.equal((await me(result.accessToken)).status, 200);
      assert.equal((await refresh(result.refreshToken)).status, 200);
      // The new password logs in, the old one does not.
      await login(client, session.user.email, newPassword);
      expectError(await client.post(LOGIN, { email: session.user.email, password: session.password }), 401, 'INVALID_CREDENTIALS');
    });

    it('when the current password is wrong, then 403 INVALID_CURRENT_PASSWORD and nothing changes', async () => {
      const session = await registerAndLogin(client);
      const response = await client.post(
        PASSWORD,
        { currentPassword: 'not-my-password', newPassword: 'brand-new-password-2' },
        { token: session.accessToken },
      );
      expectError(response, 403, 'INVALID_CURRENT_PASSWORD');
      assert.equal((await me(session.accessToken)).status, 200);
      assert.equal((await refresh(session.refreshToken)).status, 200);
      await login(client, session.user.email, session.password);
      expectError(await client.post(LOGIN, { email: session.user.email, password: 'brand-new-password-2' }), 401, 'INVALID_CREDENTIALS');
    });

    it('when the new password is too short or too long, then 400 naming newPassword', async () => {
      const session = await registerAndLogin(client);
      for (const newPassword of ['p'.repeat(7), 'p'.repeat(129)]) {
        const response = await client.post(PASSWORD, { currentPassword: session.password, newPassword }, { token: session.accessToken });
        assert.deepEqual(pathsOf(expectError(response, 400, 'VALIDATION_FAILED')), ['newPassword']);
      }
      await login(client, session.user.email, session.password);
    });

    it('when no access token is sent, then 401 UNAUTHENTICATED', async () => {
      expectError(await client.post(PASSWORD, { currentPassword: 'whatever-1', newPassword: 'whatever-2' }), 401, 'UNAUTHENTICATED');
    });
  });

  describe('JWKS and access tokens', () => {
    const fetchJwks = async (): Promise<PublicKey[]> => {
      const response = await client.get<{ keys: PublicKey[] }>(JWKS);
      assert.equal(response.status, 200, response.text);
      assert.ok(Array.isArray(response.body.keys) && response.body.keys.length > 0);
      return response.body.keys;
    };

    it('when the JWKS is fetched, then every key is a public Ed25519 OKP key with a kid and no private member', async () => {
      const keys = await fetchJwks();
      for (const key of keys) {
        assert.ok(typeof key.kid === 'string' && key.kid.length > 0);
        assert.equal(key.kty, 'OKP');
        assert.equal(key.crv, 'Ed25519');
        assert.ok(typeof key.x === 'string' && key.x.length > 0);
        for (const privateMember of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.ok(!(privateMember in key), `JWKS leaks "${privateMember}"`);
      }
      assert.equal(new Set(keys.map((key) => key.kid)).size, keys.length);
    });

    it('when an access token is issued, then its header is alg EdDSA with a kid the JWKS has, and the JWKS verifies it', async () => {
      const session = await registerAndLogin(client);
      const header = decodeProtectedHeader(session.accessToken);
      assert.equal(header.alg, 'EdDSA');
      const keys = await fetchJwks();
      assert.ok(keys.some((key) => key.kid === header.kid), `kid ${String(header.kid)} not in JWKS`);
      const { payload } = await jwtVerify(session.accessToken, createLocalJWKSet({ keys: keys as JWK[] }));
      assert.ok(typeof payload.exp === 'number' && payload.exp > Date.now() / 1000);
    });

    it('when the access token is missing, malformed or not Bearer, then 401 UNAUTHENTICATED', async () => {
      const session = await registerAndLogin(client);
      expectError(await client.get(ME), 401, 'UNAUTHENTICATED');
      expectError(await me('not-a-jwt'), 401, 'UNAUTHENTICATED');
      expectError(await client.get(ME, { headers: { authorization: `Basic ${session.accessToken}` } }), 401, 'UNAUTHENTICATED');
      expectError(await client.get(ME, { headers: { authorization: session.accessToken } }), 401, 'UNAUTHENTICATED');
    });

    it('when a token is forged (alg none, HS256/RS256 confusion, other key, bad signature, edited claims), then 401', async () => {
      const session = await registerAndLogin(client);
      const [encodedHeader, encodedPayload, signature] = session.accessToken.split('.');
      assert.ok(encodedHeader && encodedPayload && signature);
      const header = jwtPart(session.accessToken, 0);
      const payload = jwtPart(session.accessToken, 1);
      const kid = String(header['kid']);
      const [publicJwk] = (await fetchJwks()).filter((key) => key.kid === kid);
      assert.ok(publicJwk);
      const forgeries: Record<string, string> = {};

      forgeries['alg none'] = `${base64UrlJson({ alg: 'none', typ: 'JWT', kid })}.${encodedPayload}.`;
      forgeries['alg none, kept signature'] = `${base64UrlJson({ alg: 'none', typ: 'JWT', kid })}.${encodedPayload}.${signature}`;
      forgeries['HS256 with the public key as secret'] = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid })
        .sign(new TextEncoder().encode(JSON.stringify(publicJwk)));
      forgeries['HS256 with the raw public key as secret'] = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid })
        .sign(Buffer.from(String(publicJwk.x), 'base64url'));
      const rsa = await generateKeyPair('RS256');
      forgeries['RS256 with another key'] = await new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(rsa.privateKey);
      const otherEd = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      forgeries['EdDSA with another key, real kid'] = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid })
        .sign(otherEd.privateKey);
      forgeries['EdDSA with another key, unknown kid'] = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: 'made-up-kid' })
        .sign(otherEd.privateKey);
      forgeries['EdDSA with another key embedded as jwk'] = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', jwk: await exportJWK(otherEd.publicKey) })
        .sign(otherEd.privateKey);
      const middle = Math.floor(signature.length / 2);
      const flipped = signature[middle] === 'A' ? 'B' : 'A';
      forgeries['bad signature'] = `${encodedHeader}.${encodedPayload}.${signature.slice(0, middle)}${flipped}${signature.slice(middle + 1)}`;
      forgeries['claims edited to admin'] = `${encodedHeader}.${base64UrlJson({ ...payload, role: 'admin' })}.${signature}`;
      forgeries['expiry pushed out'] = `${encodedHeader}.${base64UrlJson({ ...payload, exp: Number(payload['exp']) + 86_400 })}.${signature}`;

      for (const [name, token] of Object.entries(forgeries)) {
        const response = await me(token);
        assert.equal(response.status, 401, `${name}: ${response.status} ${response.text}`);
        expectError(response, 401, 'UNAUTHENTICATED');
      }
      assert.equal((await me(session.accessToken)).status, 200, 'the genuine token still works');
    });

    it('when an access token has expired, then 401 UNAUTHENTICATED', async () => {
      const session = await registerAndLogin(proxied.client);
      const response = await proxied.client.post<{ data: LoginResult }>(LOGIN, { email: session.user.email, password: session.password });
      assert.equal(response.body.data.expiresIn, 1);
      const token = response.body.data.accessToken;
      // `exp` is in whole seconds, so a 1 s token lives 0–1 s after its issue: it is checked live
      // only when the answer came early enough (on a loaded machine the login can take longer).
      const expiresAtMs = Number(decodeJwt(token).exp) * 1000;
      if (Date.now() < expiresAtMs - 300) assert.equal((await proxied.client.get(ME, { token })).status, 200);
      await sleep(Math.max(0, expiresAtMs - Date.now()) + 300);
      expectError(await proxied.client.get(ME, { token }), 401, 'UNAUTHENTICATED');
    });
  });
});
