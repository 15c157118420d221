// Secrets never leak: with LOG_LEVEL=trace, every auth and users flow is run (successes, failures,
// validation errors and malformed JSON that carry passwords, refresh rotation, grace replay, reuse,
// logout, logout-all, password change, deletion). Then every response body and every log line is
// searched for plaintext passwords, stored password hashes, refresh tokens (allowed only in the body
// of the response that issued them), access tokens and Authorization header values (never in logs).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { clientFrom, type ApiResponse, type Client, type RequestOptions } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, type TestServer } from '../helpers/server.js';

interface Exchange {
  readonly label: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly text: string;
  /** The refresh token this response issued (login, refresh, password change), if any. */
  readonly issuedRefreshToken: string | undefined;
  readonly issuedAccessToken: string | undefined;
}

interface Step {
  readonly label: string;
  readonly expected: number;
  readonly actual: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const hex = (bytes: number) => randomBytes(bytes).toString('hex');
/** '#' and '!' never occur in base64url tokens, UUIDs or hex, so a match cannot be a coincidence. */
const secretPassword = (label: string) => `${label}#${hex(6)}!pw`;

/** A Client that records every exchange; `label` names the step of the next call. */
function recordingClient(client: Client, exchanges: Exchange[], label: { current: string }): Client {
  const request = async <T,>(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<ApiResponse<T>> => {
    const response = await client.request<T>(method, path, body, options);
    const data = (response.body as { data?: { refreshToken?: unknown; accessToken?: unknown } } | undefined)?.data;
    exchanges.push({
      label: label.current,
      method,
      path,
      status: response.status,
      text: response.text,
      issuedRefreshToken: typeof data?.refreshToken === 'string' ? data.refreshToken : undefined,
      issuedAccessToken: typeof data?.accessToken === 'string' ? data.accessToken : undefined,
    });
    return response;
  };
  return clientFrom(client.baseUrl, request);
}

describeOnBackends('secrets never leak', ({ it, before, startServer }) => {
  let server: TestServer;
  const exchanges: Exchange[] = [];
  const steps: Step[] = [];
  const plaintextPasswords = new Set<string>([ADMIN_PASSWORD]);
  /** Refresh tokens that were only ever sent by the client (never issued). */
  const madeUpRefreshTokens = new Set<string>();
  const authorizationValues = new Set<string>();
  let passwordHashes: string[] = [];

  before(async () => {
    server = await startServer({ LOG_LEVEL: 'trace', REFRESH_REUSE_GRACE_SECONDS: '1' });
    const label = { current: '' };
    const client = recordingClient(server.client, exchanges, label);
    const password = (name: string) => {
      const value = secretPassword(name);
      plaintextPasswords.add(value);
      return value;
    };
    const bearer = (token: string): RequestOptions => {
      authorizationValues.add(`Bearer ${token}`);
      return { token };
    };
    const header = (value: string): RequestOptions => {
      authorizationValues.add(value);
      return { headers: { authorization: value } };
    };
    /** Runs one step, records its status against the expected one, and returns the response. */
    const step = async <T,>(name: string, expected: number, call: () => Promise<ApiResponse<T>>): Promise<ApiResponse<T>> => {
      label.current = name;
      const response = await call();
      steps.push({ label: name, expected, actual: response.status });
      return response;
    };
    type Tokens = { data: { accessToken: string; refreshToken: string; user?: { id: string } } };
    const tokensOf = (response: ApiResponse<Tokens>) => ({
      accessToken: response.body?.data?.accessToken ?? '',
      refreshToken: response.body?.data?.refreshToken ?? '',
      userId: response.body?.data?.user?.id ?? '',
    });

    const aliceEmail = `alice-${hex(4)}@example.com`;
    const alicePassword = password('Alice');
    const aliceNewPassword = password('AliceNew');
    const bobEmail = `bob-${hex(4)}@example.com`;
    const bobPassword = password('Bob');

    // registration, including validation errors whose bodies carry a password
    await step('register alice', 201, () => client.post('/api/v1/auth/register', { email: aliceEmail, name: 'Alice', password: alicePassword }));
    await step('register taken email', 409, () =>
      client.post('/api/v1/auth/register', { email: aliceEmail, name: 'Alice', password: password('Taken') }),
    );
    const shortPassword = `S#${hex(2)}!`; // 7 characters
    plaintextPasswords.add(shortPassword);
    await step('register short password', 400, () =>
      client.post('/api/v1/auth/register', { email: `s-${hex(4)}@example.com`, name: 'S', password: shortPassword }),
    );
    const longPassword = `L#${hex(4)}!${'p'.repeat(120)}`; // 131 characters
    plaintextPasswords.add(longPassword);
    await step('register long password', 400, () =>
      client.post('/api/v1/auth/register', { email: `l-${hex(4)}@example.com`, name: 'L', password: longPassword }),
    );
    await step('register with an unknown field', 400, () =>
      client.post('/api/v1/auth/register', { email: `u-${hex(4)}@example.com`, name: 'U', password: password('Extra'), admin: true }),
    );
    await step('register with a bad email', 400, () =>
      client.post('/api/v1/auth/register', { email: 'not-an-email', name: 'E', password: password('BadEmail') }),
    );
    await step('register with the password in an array', 400, () =>
      client.post('/api/v1/auth/register', { email: `a-${hex(4)}@example.com`, name: 'A', password: [password('Array')] }),
    );
    await step('register with malformed JSON', 400, () =>
      client.post('/api/v1/auth/register', undefined, {
        raw: `{"email":"m-${hex(4)}@example.com","name":"M","password":"${password('Malformed')}",`,
        headers: { 'content-type': 'application/json' },
      }),
    );
    await step('register as text/plain', 415, () =>
      client.post('/api/v1/auth/register', undefined, {
        raw: JSON.stringify({ email: `t-${hex(4)}@example.com`, name: 'T', password: password('TextPlain') }),
        headers: { 'content-type': 'text/plain' },
      }),
    );

    // login: failures, validation, malformed JSON, success
    await step('login wrong password', 401, () => client.post('/api/v1/auth/login', { email: aliceEmail, password: password('Wrong') }));
    await step('login unknown email', 401, () =>
      client.post('/api/v1/auth/login', { email: `nobody-${hex(4)}@example.com`, password: password('Unknown') }),
    );
    await step('login bad email', 400, () => client.post('/api/v1/auth/login', { email: 'nope', password: password('LoginBadEmail') }));
    await step('login with malformed JSON', 400, () =>
      client.post('/api/v1/auth/login', undefined, {
        raw: `{"email":"${aliceEmail}","password":"${password('LoginMalformed')}"`,
        headers: { 'content-type': 'application/json' },
      }),
    );
    const first = tokensOf(
      await step('login alice', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: aliceEmail, password: alicePassword })),
    );
    await step('me', 200, () => client.get('/api/v1/users/me', bearer(first.accessToken)));

    // refresh, grace replay, reuse after the grace
    const rotated = tokensOf(
      await step('refresh', 200, () => client.post<Tokens>('/api/v1/auth/refresh', { refreshToken: first.refreshToken })),
    );
    await step('refresh grace replay', 200, () => client.post<Tokens>('/api/v1/auth/refresh', { refreshToken: first.refreshToken }));
    await sleep(1_600);
    await step('refresh reuse after grace', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: first.refreshToken }));
    await step('refresh the revoked successor', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: rotated.refreshToken }));
    const madeUp = randomBytes(32).toString('base64url');
    madeUpRefreshTokens.add(madeUp);
    await step('refresh an unknown token', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: madeUp }));
    await step('refresh with an unknown field', 400, () =>
      client.post('/api/v1/auth/refresh', { refreshToken: rotated.refreshToken, password: password('RefreshExtra') }),
    );

    // logout and logout-all
    const second = tokensOf(
      await step('login alice again', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: aliceEmail, password: alicePassword })),
    );
    await step('logout', 204, () => client.post('/api/v1/auth/logout', { refreshToken: second.refreshToken }));
    await step('refresh after logout', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: second.refreshToken }));
    const madeUpLogout = randomBytes(32).toString('base64url');
    madeUpRefreshTokens.add(madeUpLogout);
    await step('logout unknown token', 204, () => client.post('/api/v1/auth/logout', { refreshToken: madeUpLogout }));
    const third = tokensOf(
      await step('login alice a third time', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: aliceEmail, password: alicePassword })),
    );
    await step('logout-all', 204, () => client.post('/api/v1/auth/logout-all', undefined, bearer(third.accessToken)));
    await step('refresh after logout-all', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: third.refreshToken }));

    // password change: wrong current, invalid new, success
    const fourth = tokensOf(
      await step('login alice a fourth time', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: aliceEmail, password: alicePassword })),
    );
    await step('password change with a wrong current password', 403, () =>
      client.post('/api/v1/auth/password', { currentPassword: password('WrongCurrent'), newPassword: password('Unused') }, bearer(fourth.accessToken)),
    );
    const shortNew = `N#${hex(2)}!`;
    plaintextPasswords.add(shortNew);
    await step('password change with a short new password', 400, () =>
      client.post('/api/v1/auth/password', { currentPassword: alicePassword, newPassword: shortNew }, bearer(fourth.accessToken)),
    );
    await step('password change with malformed JSON', 400, () =>
      client.post('/api/v1/auth/password', undefined, {
        ...bearer(fourth.accessToken),
        raw: `{"currentPassword":"${alicePassword}","newPassword":"${password('PwMalformed')}"`,
        headers: { 'content-type': 'application/json' },
      }),
    );
    const changed = tokensOf(
      await step('password change', 200, () =>
        client.post<Tokens>('/api/v1/auth/password', { currentPassword: alicePassword, newPassword: aliceNewPassword }, bearer(fourth.accessToken)),
      ),
    );
    await step('old password no longer logs in', 401, () => client.post('/api/v1/auth/login', { email: aliceEmail, password: alicePassword }));
    await step('new password logs in', 200, () => client.post('/api/v1/auth/login', { email: aliceEmail, password: aliceNewPassword }));
    await step('me with the new access token', 200, () => client.get('/api/v1/users/me', bearer(changed.accessToken)));
    await step('patch with a password field', 400, () =>
      client.patch(`/api/v1/users/${first.userId}`, { name: 'Alice', password: password('Patch') }, bearer(changed.accessToken)),
    );

    // bad Authorization headers
    await step('me with a garbage bearer token', 401, () => client.get('/api/v1/users/me', header(`Bearer garbage-${hex(8)}`)));
    await step('me with Basic credentials', 401, () =>
      client.get('/api/v1/users/me', header(`Basic ${Buffer.from(`${aliceEmail}:${aliceNewPassword}`).toString('base64')}`)),
    );
    await step('me with a refresh token as bearer', 401, () => client.get('/api/v1/users/me', header(`Bearer ${changed.refreshToken}`)));

    // admin: create (with validation errors), delete
    const admin = tokensOf(
      await step('login admin', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })),
    );
    const bob = await step('admin creates bob', 201, () =>
      client.post<{ data: { id: string } }>('/api/v1/users', { email: bobEmail, name: 'Bob', password: bobPassword }, bearer(admin.accessToken)),
    );
    await step('admin create with an unknown field', 400, () =>
      client.post('/api/v1/users', { email: `x-${hex(4)}@example.com`, name: 'X', password: password('AdminExtra'), isAdmin: true }, bearer(admin.accessToken)),
    );
    await step('admin create with a bad role', 400, () =>
      client.post('/api/v1/users', { email: `r-${hex(4)}@example.com`, name: 'R', password: password('AdminRole'), role: 'root' }, bearer(admin.accessToken)),
    );
    await step('non-admin create', 403, () =>
      client.post('/api/v1/users', { email: `y-${hex(4)}@example.com`, name: 'Y', password: password('NonAdmin') }, bearer(changed.accessToken)),
    );
    const bobSession = tokensOf(
      await step('login bob', 200, () => client.post<Tokens>('/api/v1/auth/login', { email: bobEmail, password: bobPassword })),
    );
    await step('admin deletes bob', 204, () => client.delete(`/api/v1/users/${bob.body?.data?.id ?? ''}`, bearer(admin.accessToken)));
    await step('deleted bob cannot log in', 401, () => client.post('/api/v1/auth/login', { email: bobEmail, password: bobPassword }));
    await step('deleted bob cannot refresh', 401, () => client.post('/api/v1/auth/refresh', { refreshToken: bobSession.refreshToken }));
    await step('deleted bob access token', 401, async () => {
      await sleep(1_100);
      return client.get('/api/v1/users/me', bearer(bobSession.accessToken));
    });
    await step('admin lists users', 200, () => client.get('/api/v1/users?page=1&limit=100', bearer(admin.accessToken)));
    await step('admin reads alice', 200, () => client.get(`/api/v1/users/${first.userId}`, bearer(admin.accessToken)));

    const rows = await server.app.database.db.selectFrom('users').select('password_hash').execute();
    passwordHashes = rows.map((row) => row.password_hash);
    await sleep(200); // let the last onResponse log lines land
  });

  const issuedRefreshTokens = () => exchanges.flatMap((exchange) => (exchange.issuedRefreshToken ? [exchange.issuedRefreshToken] : []));
  const issuedAccessTokens = () => exchanges.flatMap((exchange) => (exchange.issuedAccessToken ? [exchange.issuedAccessToken] : []));
  const leaks = (texts: Array<[string, string]>, secrets: Iterable<string>, kind: string) => {
    const found: string[] = [];
    for (const secret of secrets) {
      if (secret.length < 6) continue;
      for (const [where, text] of texts) if (text.includes(secret)) found.push(`${kind} ${JSON.stringify(secret.slice(0, 24))}… in ${where}`);
    }
    return found;
  };
  const bodies = (): Array<[string, string]> => exchanges.map((exchange) => [`response to "${exchange.label}" (${exchange.method} ${exchange.path})`, exchange.text]);
  const logLines = (): Array<[string, string]> => server.logs.map((line, index) => [`log line ${index}: ${line.slice(0, 300)}`, line]);

  it('when every flow ran at trace level, then each step answered its contract status and logs were captured', async () => {
    assert.deepEqual(
      steps.filter((step) => step.actual !== step.expected),
      [],
      'steps with an unexpected status',
    );
    assert.ok(steps.length >= 40, `${steps.length} steps ran`);
    const requestLines = server.logs.filter((line) => line.includes('"request completed"'));
    assert.ok(requestLines.length >= exchanges.length, `a log line per request (${requestLines.length} for ${exchanges.length})`);
    assert.ok(server.logs.some((line) => line.includes('refresh token reuse')), 'the reuse was logged');
    assert.ok(passwordHashes.length >= 3 && passwordHashes.every((hash) => hash.startsWith('$argon2id$')), 'argon2id hashes were read');
    assert.ok(issuedRefreshTokens().length >= 8 && issuedAccessTokens().length >= 8);
    // the search itself works: it finds each issued refresh token in the body that issued it
    assert.ok([...new Set(issuedRefreshTokens())].every((token) => leaks(bodies(), [token], 'control').length > 0));
  });

  it('when every flow ran, then no response body and no log line contains a plaintext password', async () => {
    assert.ok(plaintextPasswords.size >= 20);
    assert.deepEqual(leaks([...bodies(), ...logLines()], plaintextPasswords, 'password'), []);
  });

  it('when every flow ran, then no response body and no log line contains a stored password hash', async () => {
    const pieces = new Set<string>();
    for (const hash of passwordHashes) {
      pieces.add(hash);
      const digest = hash.split('$').at(-1);
      if (digest) pieces.add(digest);
    }
    assert.deepEqual(leaks([...bodies(), ...logLines()], pieces, 'password hash'), []);
    assert.deepEqual(leaks([...bodies(), ...logLines()], ['$argon2', '$2a$', '$2b$'], 'hash marker'), []);
  });

  it('when every flow ran, then a refresh token appears only in the body that issued it and never in a log', async () => {
    const tokens = new Set([...issuedRefreshTokens(), ...madeUpRefreshTokens]);
    const found: string[] = [];
    for (const token of tokens) {
      for (const exchange of exchanges) {
        if (exchange.text.includes(token) && exchange.issuedRefreshToken !== token) {
          found.push(`refresh token ${token.slice(0, 12)}… in the response to "${exchange.label}"`);
        }
        if (exchange.issuedRefreshToken === token && !/^\/api\/v1\/auth\/(login|refresh|password)$/.test(exchange.path)) {
          found.push(`refresh token issued by "${exchange.label}" (${exchange.path})`);
        }
      }
    }
    found.push(...leaks(logLines(), tokens, 'refresh token'));
    assert.deepEqual(found, []);
  });

  it('when every flow ran, then no log line contains an access token or an Authorization header value', async () => {
    const accessTokens = issuedAccessTokens();
    const signatures = accessTokens.map((token) => token.split('.')[2] ?? '');
    const headerTokens = [...authorizationValues].map((value) => value.replace(/^\S+\s+/, ''));
    assert.deepEqual(
      [
        ...leaks(logLines(), accessTokens, 'access token'),
        ...leaks(logLines(), signatures, 'access-token signature'),
        ...leaks(logLines(), authorizationValues, 'Authorization value'),
        ...leaks(logLines(), headerTokens, 'Authorization credential'),
      ],
      [],
    );
    assert.ok(!server.logs.some((line) => /"authorization"\s*:\s*"(?!\[REDACTED\])/i.test(line)), 'an authorization header was logged unredacted');
  });
});
