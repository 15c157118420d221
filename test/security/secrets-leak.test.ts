// Secrets never leak: with LOG_LEVEL=trace, every auth and users flow is run (successes, failures,
// validation errors and malformed JSON that carry passwords, refresh rotation, grace replay, reuse,
// logout, logout-all, password change, deletion). Then every response body and every log line is
// searched for plaintext passwords, stored password hashes, refresh tokens (allowed only in the body
// of the response that issued them), access tokens and Authorization header values (never in logs).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { generate as generateTotp } from 'otplib';
import { clientFrom, createClient, type ApiResponse, type Client, type RequestOptions } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { freePort } from '../helpers/ports.js';
import { startSmtp, type Mail } from '../helpers/smtp.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, type TestServer } from '../helpers/server.js';
import { startLocalIdp } from '../identity/oidc-idp.js';

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
    // A grace of 2 s: the replay right after the rotation must land within it on a loaded machine too.
    server = await startServer({ LOG_LEVEL: 'trace', REFRESH_REUSE_GRACE_SECONDS: '2' });
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
    await sleep(2_600);
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

// ---- Identity secrets (API keys, MFA, mailed tokens, OIDC) ----
//
// The same at trace level, with mail over real SMTP and a real OpenID provider: an API key's `bsk_`
// secret appears only in the body that created it; a TOTP secret only in its enrolment's body, the
// recovery codes only in the confirmation's, an mfaToken only in the login body that issued it;
// mailed tokens only in the mails; none of them, nor the codes used, nor a reset's new password,
// nor an OIDC callback's code and state, in a log line or in the audit table's text.
//
// SMTP mode only: without SMTP_URL the development transport logs each mail's link (token included)
// at info level by design, so a log line holding a mailed token is not a leak there and is not
// asserted against.

const PUBLIC_URL = 'https://bastion.example.test';
const mailedToken = (mail: Mail, path: '/verify-email' | '/reset-password'): string => {
  const match = new RegExp(`${PUBLIC_URL.replace(/\./g, '\\.')}${path}\\?token=([A-Za-z0-9_-]+)`).exec(mail.text);
  assert.ok(match?.[1], `no ${path} link in the mail: ${mail.text}`);
  return match[1];
};

type SecretKind = 'api key' | 'totp secret' | 'recovery code' | 'mfa token' | 'mailed token' | 'oidc code' | 'oidc state';

interface TrackedSecret {
  readonly kind: SecretKind;
  readonly value: string;
  /** The one response allowed to carry it (undefined: none may). */
  readonly issuer: Exchange | undefined;
}

describeOnBackends('identity secrets never leak', ({ it, before, defer, startApplication }) => {
  let server: TestServer;
  let smtp: Awaited<ReturnType<typeof startSmtp>>;
  const exchanges: Exchange[] = [];
  const steps: Step[] = [];
  const secrets: TrackedSecret[] = [];
  /** Passwords set by a reset (or tried in one): in no body, log, mail or audit event. */
  const resetPasswords = new Set<string>();
  /** Every TOTP code sent (right, wrong, replayed): in no log line and no audit event. */
  const sentCodes = new Set<string>();
  const authorizationValues = new Set<string>();
  let auditText = '';
  // The service's MFA clock: real time plus an offset moved one step per code, so that each code is
  // of a step newer than the last accepted one without waiting 30 s.
  let mfaOffsetMs = 0;
  const mfaClock = () => Date.now() + mfaOffsetMs;
  const freshCode = (secret: string) => {
    mfaOffsetMs += 30_000;
    return generateTotp({ secret, epoch: Math.floor(mfaClock() / 1000) });
  };

  before(async () => {
    smtp = await startSmtp();
    defer(() => smtp.close());
    // The redirect URI names the service's port, which the provider must know first.
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const callbackUrl = `${baseUrl}/api/v1/auth/oidc/test/callback`;
    const idp = await startLocalIdp({ redirectUris: [callbackUrl] });
    defer(() => idp.close());
    const started = await startApplication(
      {
        LOG_LEVEL: 'trace',
        SMTP_URL: smtp.url,
        MAIL_FROM: 'Bastion <no-reply@bastion.example.test>',
        PUBLIC_URL,
        KEY_ENCRYPTION_SECRET: 'secrets-leak-key-encryption-secret-0123456789',
        OIDC_PROVIDERS: JSON.stringify([{ name: 'test', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret }]),
        OIDC_REDIRECT_URIS: callbackUrl,
      },
      { application: { mfa: { now: mfaClock } } },
    );
    await started.app.http.listen({ port, host: '127.0.0.1' });
    server = { ...started, baseUrl, client: createClient(baseUrl) };

    const label = { current: '' };
    const client = recordingClient(server.client, exchanges, label);
    const step = async <T,>(name: string, expected: number, call: () => Promise<ApiResponse<T>>): Promise<ApiResponse<T>> => {
      label.current = name;
      const response = await call();
      steps.push({ label: name, expected, actual: response.status });
      return response;
    };
    const lastExchange = () => exchanges.at(-1);
    const track = (kind: SecretKind, value: string, issuer?: Exchange) => {
      assert.ok(value.length >= 6, `a ${kind} was not read from the answer`);
      secrets.push({ kind, value, issuer });
    };
    const bearer = (token: string): RequestOptions => {
      authorizationValues.add(`Bearer ${token}`);
      return { token };
    };
    type Tokens = { data: { accessToken: string; refreshToken: string; user: { id: string } } };
    const loginAs = async (name: string, email: string, pw: string) =>
      (await step(name, 200, () => client.post<Tokens>('/api/v1/auth/login', { email, password: pw }))).body.data;

    // ---- email verification and password reset (SMTP) ----
    const aliceEmail = `alice-${hex(4)}@example.com`;
    const alicePassword = secretPassword('Alice');
    await step('register alice', 201, () => client.post('/api/v1/auth/register', { email: aliceEmail, name: 'Alice', password: alicePassword }));
    const firstVerification = mailedToken(await smtp.mailTo(aliceEmail, 1), '/verify-email');
    track('mailed token', firstVerification);
    const alice = await loginAs('login alice', aliceEmail, alicePassword);
    await step('resend the verification mail', 202, () => client.post('/api/v1/auth/verify-email/resend', undefined, bearer(alice.accessToken)));
    track('mailed token', mailedToken(await smtp.mailTo(aliceEmail, 2), '/verify-email'));
    await step('verify the email', 200, () => client.post('/api/v1/auth/verify-email', { token: firstVerification }));
    await step('verify with a spent token', 400, () => client.post('/api/v1/auth/verify-email', { token: firstVerification }));
    const madeUpVerification = randomBytes(32).toString('base64url');
    track('mailed token', madeUpVerification);
    await step('verify with an unknown token', 400, () => client.post('/api/v1/auth/verify-email', { token: madeUpVerification }));

    await step('password reset for alice', 202, () => client.post('/api/v1/auth/password-reset', { email: aliceEmail }));
    await step('password reset for an unknown email', 202, () => client.post('/api/v1/auth/password-reset', { email: `nobody-${hex(4)}@example.com` }));
    const resetToken = mailedToken(await smtp.mailTo(aliceEmail, 3), '/reset-password');
    track('mailed token', resetToken);
    const madeUpReset = randomBytes(32).toString('base64url');
    track('mailed token', madeUpReset);
    const unusedPassword = secretPassword('ResetUnknown');
    resetPasswords.add(unusedPassword);
    await step('reset with an unknown token', 400, () =>
      client.post('/api/v1/auth/password-reset/confirm', { token: madeUpReset, newPassword: unusedPassword }),
    );
    const shortReset = `R#${hex(2)}!`;
    resetPasswords.add(shortReset);
    await step('reset with a short password', 400, () => client.post('/api/v1/auth/password-reset/confirm', { token: resetToken, newPassword: shortReset }));
    await step('reset with an unknown field', 400, () =>
      client.post('/api/v1/auth/password-reset/confirm', { token: resetToken, newPassword: unusedPassword, password: unusedPassword }),
    );
    const aliceNewPassword = secretPassword('AliceReset');
    resetPasswords.add(aliceNewPassword);
    await step('reset the password', 204, () => client.post('/api/v1/auth/password-reset/confirm', { token: resetToken, newPassword: aliceNewPassword }));
    const lateReset = secretPassword('ResetLate');
    resetPasswords.add(lateReset);
    await step('reset again with the spent token', 400, () => client.post('/api/v1/auth/password-reset/confirm', { token: resetToken, newPassword: lateReset }));
    await step('the old password no longer logs in', 401, () => client.post('/api/v1/auth/login', { email: aliceEmail, password: alicePassword }));
    const aliceAgain = await loginAs('login alice with the reset password', aliceEmail, aliceNewPassword);

    // ---- API keys ----
    const created = await step('create an api key', 201, () =>
      client.post<{ data: { id: string; secret: string } }>('/api/v1/api-keys', { name: 'script', scopes: ['users:read'] }, bearer(aliceAgain.accessToken)),
    );
    const key = created.body.data;
    track('api key', key.secret, lastExchange());
    await step('create an api key with an unknown field', 400, () =>
      client.post('/api/v1/api-keys', { name: 'x', scopes: ['users:read'], secret: `bsk_${randomBytes(32).toString('base64url')}` }, bearer(aliceAgain.accessToken)),
    );
    const admin = await loginAs('login admin', ADMIN_EMAIL, ADMIN_PASSWORD);
    const forAlice = await step('admin creates a key for alice', 201, () =>
      client.post<{ data: { secret: string } }>(
        '/api/v1/api-keys',
        { name: 'for alice', scopes: ['users:read'], ownerId: aliceAgain.user.id },
        bearer(admin.accessToken),
      ),
    );
    track('api key', forAlice.body.data.secret, lastExchange());
    await step('list api keys', 200, () => client.get('/api/v1/api-keys', bearer(aliceAgain.accessToken)));
    await step("admin lists alice's api keys", 200, () => client.get(`/api/v1/api-keys?ownerId=${aliceAgain.user.id}`, bearer(admin.accessToken)));
    await step('me with the api key', 200, () => client.get('/api/v1/users/me', bearer(key.secret)));
    await step('read alice with the api key', 200, () => client.get(`/api/v1/users/${aliceAgain.user.id}`, bearer(key.secret)));
    await step('patch with an api key lacking users:write', 403, () =>
      client.patch(`/api/v1/users/${aliceAgain.user.id}`, { name: 'Alice K' }, bearer(key.secret)),
    );
    await step('list api keys with an api key', 403, () => client.get('/api/v1/api-keys', bearer(key.secret)));
    await step('enrol mfa with an api key', 403, () => client.post('/api/v1/auth/mfa/totp', undefined, bearer(key.secret)));
    const madeUpKey = `bsk_${randomBytes(32).toString('base64url')}`;
    track('api key', madeUpKey);
    await step('me with an unknown api key', 401, () => client.get('/api/v1/users/me', bearer(madeUpKey)));
    await step('revoke the api key', 204, () => client.delete(`/api/v1/api-keys/${key.id}`, bearer(aliceAgain.accessToken)));
    await step('me with the revoked api key', 401, () => client.get('/api/v1/users/me', bearer(key.secret)));
    await step("me with admin's key for alice", 200, () => client.get('/api/v1/users/me', bearer(forAlice.body.data.secret)));

    // ---- MFA ----
    const bobEmail = `bob-${hex(4)}@example.com`;
    const bobPassword = secretPassword('Bob');
    await step('register bob', 201, () => client.post('/api/v1/auth/register', { email: bobEmail, name: 'Bob', password: bobPassword }));
    track('mailed token', mailedToken(await smtp.mailTo(bobEmail, 1), '/verify-email'));
    const bob = await loginAs('login bob', bobEmail, bobPassword);
    type Enrolment = { data: { secret: string; otpauthUrl: string } };
    const firstEnrolment = await step('enrol totp', 201, () => client.post<Enrolment>('/api/v1/auth/mfa/totp', undefined, bearer(bob.accessToken)));
    track('totp secret', firstEnrolment.body.data.secret, lastExchange());
    const enrolment = await step('enrol totp again (replaces)', 201, () => client.post<Enrolment>('/api/v1/auth/mfa/totp', undefined, bearer(bob.accessToken)));
    const totpSecret = enrolment.body.data.secret;
    track('totp secret', totpSecret, lastExchange());
    const wrong = (right: string) => {
      const code = right === '987650' ? '987651' : '987650';
      sentCodes.add(code);
      return code;
    };
    const confirmCode = await freshCode(totpSecret);
    sentCodes.add(confirmCode);
    await step('confirm with a wrong code', 400, () => client.post('/api/v1/auth/mfa/totp/confirm', { code: wrong(confirmCode) }, bearer(bob.accessToken)));
    const confirmed = await step('confirm totp', 200, () =>
      client.post<{ data: { recoveryCodes: string[] } }>('/api/v1/auth/mfa/totp/confirm', { code: confirmCode }, bearer(bob.accessToken)),
    );
    const recoveryCodes = confirmed.body.data.recoveryCodes;
    for (const code of recoveryCodes) track('recovery code', code, lastExchange());
    await step('enrol while active', 409, () => client.post('/api/v1/auth/mfa/totp', undefined, bearer(bob.accessToken)));

    type Challenge = { data: { mfaToken: string } };
    const challenge = async (name: string) => {
      const response = await step(name, 200, () => client.post<Challenge>('/api/v1/auth/login', { email: bobEmail, password: bobPassword }));
      track('mfa token', response.body.data.mfaToken, lastExchange());
      return response.body.data.mfaToken;
    };
    const verify = (mfaToken: string, code: string) => client.post('/api/v1/auth/mfa/verify', { mfaToken, code });
    const firstChallenge = await challenge('login bob (mfa challenge)');
    const loginCode = await freshCode(totpSecret);
    sentCodes.add(loginCode);
    await step('verify a wrong code', 401, () => verify(firstChallenge, wrong(loginCode)));
    await step('verify a totp code', 200, () => verify(firstChallenge, loginCode));
    await step('verify with the spent mfa token', 401, () => verify(firstChallenge, loginCode));
    const secondChallenge = await challenge('login bob (second challenge)');
    await step('verify the replayed totp code', 401, () => verify(secondChallenge, loginCode));
    await step('verify a recovery code', 200, () => verify(secondChallenge, recoveryCodes[0] ?? ''));
    const thirdChallenge = await challenge('login bob (third challenge)');
    await step('verify the spent recovery code', 401, () => verify(thirdChallenge, recoveryCodes[0] ?? ''));
    await step('verify a recovery code typed loosely', 200, () => verify(thirdChallenge, (recoveryCodes[1] ?? '').replace(/-/g, ' ').toUpperCase()));
    const madeUpMfaToken = randomBytes(32).toString('base64url');
    track('mfa token', madeUpMfaToken);
    await step('verify an unknown mfa token', 401, () => verify(madeUpMfaToken, wrong('')));
    await step('disable with a wrong password', 403, () =>
      client.request('DELETE', '/api/v1/auth/mfa/totp', { password: secretPassword('DisableWrong') }, bearer(bob.accessToken)),
    );
    const disableCode = await freshCode(totpSecret);
    sentCodes.add(disableCode);
    await step('disable totp with a code', 204, () => client.request('DELETE', '/api/v1/auth/mfa/totp', { code: disableCode }, bearer(bob.accessToken)));

    // ---- OIDC: one login through a real provider, then callbacks that fail ----
    const authorize = async (name: string): Promise<URL> => {
      label.current = name;
      const response = await fetch(`${baseUrl}/api/v1/auth/oidc/test/authorize?redirect_uri=${encodeURIComponent(callbackUrl)}`, { redirect: 'manual' });
      const text = await response.text();
      exchanges.push({ label: name, method: 'GET', path: '/api/v1/auth/oidc/test/authorize', status: response.status, text, issuedRefreshToken: undefined, issuedAccessToken: undefined });
      steps.push({ label: name, expected: 302, actual: response.status });
      return new URL(response.headers.get('location') ?? 'about:blank');
    };
    const sub = `subject-${hex(6)}`;
    idp.accounts.set(sub, { sub, email: `oidc-${hex(4)}@example.com`, email_verified: true, name: 'Oidc User' });
    const answer = await idp.loginAs((await authorize('oidc authorize')).href, sub);
    const code = answer.searchParams.get('code') ?? '';
    const state = answer.searchParams.get('state') ?? '';
    track('oidc code', code);
    track('oidc state', state);
    await step('oidc callback', 200, () => client.get(`${answer.pathname}${answer.search}`));
    await step('oidc callback replayed', 401, () => client.get(`${answer.pathname}${answer.search}`));
    const second = await idp.loginAs((await authorize('oidc authorize again')).href, sub);
    const secondState = second.searchParams.get('state') ?? '';
    track('oidc code', second.searchParams.get('code') ?? '');
    track('oidc state', secondState);
    const madeUpCode = `code-${hex(16)}`;
    track('oidc code', madeUpCode);
    await step('oidc callback with a made-up code (exchange refused)', 401, () =>
      client.get(`${second.pathname}?code=${madeUpCode}&state=${encodeURIComponent(secondState)}&iss=${encodeURIComponent(idp.issuer)}`),
    );
    const madeUpState = `state-${hex(16)}`;
    track('oidc state', madeUpState);
    await step('oidc callback with a made-up state', 401, () => client.get(`${second.pathname}?state=${madeUpState}&code=${madeUpCode}`));

    const rows = await sql<{ row: string }>`select a::text as row from audit_events a`.execute(server.app.database.db);
    auditText = rows.rows.map((row) => row.row).join('\n');
    await sleep(200); // let the last onResponse log lines land
  });

  const logLines = (): Array<[string, string]> => server.logs.map((line, index) => [`log line ${index}: ${line.slice(0, 300)}`, line]);
  const auditTexts = (): Array<[string, string]> => [['the audit table', auditText]];
  const mailTexts = (): Array<[string, string]> => smtp.mails.map((mail, index) => [`mail ${index} to ${mail.to.join(', ')}`, mail.text]);
  const leaks = (texts: Array<[string, string]>, values: Iterable<string>, kind: string) => {
    const found: string[] = [];
    for (const value of values) {
      if (value.length < 6) continue;
      for (const [where, text] of texts) if (text.includes(value)) found.push(`${kind} ${JSON.stringify(value.slice(0, 24))}… in ${where}`);
    }
    return found;
  };
  const ofKind = (...kinds: SecretKind[]) => secrets.filter((secret) => kinds.includes(secret.kind));
  /** Each secret in a response body other than the one that issued it. */
  const misplaced = (tracked: readonly TrackedSecret[]) =>
    tracked.flatMap((secret) =>
      exchanges
        .filter((exchange) => exchange !== secret.issuer && exchange.text.includes(secret.value))
        .map((exchange) => `${secret.kind} ${secret.value.slice(0, 12)}… in the response to "${exchange.label}"`),
    );
  const values = (tracked: readonly TrackedSecret[]) => tracked.map((secret) => secret.value);

  it('when every identity flow ran at trace level, then each step answered its contract status and each secret was where it belongs', async () => {
    assert.deepEqual(
      steps.filter((step) => step.actual !== step.expected),
      [],
      'steps with an unexpected status',
    );
    assert.ok(steps.length >= 50, `${steps.length} steps ran`);
    const requestLines = server.logs.filter((line) => line.includes('"request completed"'));
    assert.ok(requestLines.length >= exchanges.length, `a log line per request (${requestLines.length} for ${exchanges.length})`);
    // the searches work: each issued secret is found in the body that issued it, each mailed one in a mail
    for (const secret of secrets) {
      if (secret.issuer) assert.ok(secret.issuer.text.includes(secret.value), `${secret.kind} not in the body of "${secret.issuer.label}"`);
    }
    assert.equal(ofKind('api key').filter((secret) => secret.issuer).length, 2);
    assert.equal(ofKind('totp secret').length, 2);
    assert.equal(ofKind('recovery code').length, 10);
    assert.ok(ofKind('mfa token').filter((secret) => secret.issuer).length >= 3);
    const mailed = ofKind('mailed token').filter((secret) => leaks(mailTexts(), [secret.value], 'control').length > 0);
    assert.equal(mailed.length, 4, 'two verification mails and a reset mail for alice, a verification mail for bob');
    assert.ok(auditText.includes('api_key.created') && auditText.includes('mfa.enabled') && auditText.includes('user.password_reset'), 'the audit table was read');
    // the access log has a line for each callback, its code and state redacted
    const callbackLines = server.logs.filter((line) => line.includes('"request completed"') && line.includes('/oidc/test/callback?'));
    assert.equal(callbackLines.length, 4, callbackLines.join('\n'));
    assert.ok(callbackLines.every((line) => line.includes('code=[redacted]') && line.includes('state=[redacted]')), callbackLines.join('\n'));
  });

  it('when api keys were created, listed and used, then a bsk_ secret is only in the body that created it, never in a log or the audit table', async () => {
    const keys = ofKind('api key');
    const listBodies = exchanges.filter((exchange) => exchange.method === 'GET' && exchange.path.startsWith('/api/v1/api-keys') && exchange.status === 200);
    assert.equal(listBodies.length, 2);
    // the list shows each key's prefix (bsk_ and 8 characters), never more of the secret
    for (const secret of keys.filter((tracked) => tracked.issuer)) {
      assert.ok(listBodies.some((exchange) => exchange.text.includes(secret.value.slice(0, 12))), 'the prefix is listed');
    }
    assert.deepEqual(
      [...misplaced(keys), ...leaks([...logLines(), ...auditTexts()], values(keys), 'api key'), ...leaks([...logLines(), ...auditTexts()], values(keys).map((value) => value.slice(4)), 'api key body')],
      [],
    );
  });

  it('when mfa was enrolled, confirmed, used and disabled, then the totp secret, recovery codes and mfa tokens are only in their own bodies, and no code is logged', async () => {
    const tracked = ofKind('totp secret', 'recovery code', 'mfa token');
    const recovery = ofKind('recovery code').map((secret) => secret.value);
    const loose = recovery.flatMap((code) => [code.replace(/-/g, ''), code.replace(/-/g, ' ').toUpperCase()]);
    // Six digits could occur by chance inside longer numbers or ids: only a standalone match counts.
    assert.ok(sentCodes.size >= 4);
    const codeLeaks = [...sentCodes].flatMap((code) => {
      const standalone = new RegExp(`(?<![0-9A-Za-z])${code}(?![0-9A-Za-z])`);
      return [...logLines(), ...auditTexts()].filter(([, text]) => standalone.test(text)).map(([where]) => `totp code ${code} in ${where}`);
    });
    assert.deepEqual(
      [
        ...misplaced(tracked),
        ...leaks([...logLines(), ...auditTexts()], values(tracked), 'mfa secret'),
        ...leaks([...logLines(), ...auditTexts()], loose, 'recovery code as typed'),
        ...codeLeaks,
      ],
      [],
    );
  });

  it('when mail went out over SMTP, then verification and reset tokens are only in the mails, and a reset password is nowhere', async () => {
    const tokens = ofKind('mailed token');
    assert.deepEqual(
      [
        ...misplaced(tokens),
        ...leaks([...logLines(), ...auditTexts()], values(tokens), 'mailed token'),
        ...leaks(
          [...exchanges.map((exchange): [string, string] => [`response to "${exchange.label}"`, exchange.text]), ...logLines(), ...auditTexts(), ...mailTexts()],
          resetPasswords,
          'reset password',
        ),
      ],
      [],
    );
  });

  it('when an oidc login and failing callbacks ran, then no log line and no audit event holds a code or a state', async () => {
    const tracked = ofKind('oidc code', 'oidc state');
    assert.equal(tracked.length, 6);
    assert.deepEqual(leaks([...logLines(), ...auditTexts()], values(tracked), 'oidc'), []);
  });

  it('when identity flows ran, then no log line holds an issued token or an Authorization header value', async () => {
    const issued = exchanges.flatMap((exchange) => [exchange.issuedAccessToken, exchange.issuedRefreshToken]).filter((token): token is string => token !== undefined);
    assert.ok(issued.length >= 10, `${issued.length} tokens issued`);
    const headerTokens = [...authorizationValues].map((value) => value.replace(/^\S+\s+/, ''));
    assert.deepEqual(
      [...leaks(logLines(), issued, 'issued token'), ...leaks(logLines(), authorizationValues, 'Authorization value'), ...leaks(logLines(), headerTokens, 'Authorization credential')],
      [],
    );
    assert.ok(!server.logs.some((line) => /"authorization"\s*:\s*"(?!\[REDACTED\])/i.test(line)), 'an authorization header was logged unredacted');
  });
});
