// Contract: "Email verification and password reset" (and the last bullet: common passwords refused).
// A real SMTP server (smtp-server) runs in the test; the service sends to it over SMTP_URL, and each
// mail is parsed (mailparser) to take the token from its text part, as a user's click would.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { sql } from 'kysely';
import { login, loginAdmin, registerAndLogin, uniqueEmail } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, ISO_UTC, UUID } from '../helpers/errors.js';
import { eventually } from '../helpers/poll.js';
import { freePort } from '../helpers/ports.js';
import { startSmtp, type Mail, type SmtpSink } from '../helpers/smtp.js';
import type { TestServer } from '../helpers/server.js';
import { gql } from '../graphql/gql.js';
import { UserService } from '../../src/transports/grpc/gen/bastion/v1/user_service_pb.js';

const REGISTER = '/api/v1/auth/register';
const LOGIN = '/api/v1/auth/login';
const REFRESH = '/api/v1/auth/refresh';
const PASSWORD = '/api/v1/auth/password';
const VERIFY = '/api/v1/auth/verify-email';
const RESEND = '/api/v1/auth/verify-email/resend';
const RESET = '/api/v1/auth/password-reset';
const RESET_CONFIRM = '/api/v1/auth/password-reset/confirm';
const ME = '/api/v1/users/me';

const PUBLIC_URL = 'https://bastion.example.test';
const MAIL_FROM = 'Bastion <no-reply@bastion.example.test>';

interface MailUser {
  id: string;
  email: string;
  name: string;
  role: string;
  emailVerified: boolean;
  createdAt: string;
  updatedAt: string;
}

/** A User body exactly, emailVerified included. */
function expectMailUser(value: unknown): MailUser {
  assert.ok(value && typeof value === 'object');
  assert.deepEqual(Object.keys(value).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role', 'updatedAt']);
  const user = value as MailUser;
  assert.match(user.id, UUID);
  assert.equal(typeof user.emailVerified, 'boolean');
  assert.match(user.createdAt, ISO_UTC);
  assert.match(user.updatedAt, ISO_UTC);
  return user;
}

/** The token of the link in a mail's text part (`token=...`), checking the link points at PUBLIC_URL. */
function tokenOf(mail: Mail, path: '/verify-email' | '/reset-password'): string {
  const match = new RegExp(`${PUBLIC_URL.replace(/\./g, '\\.')}${path}\\?token=([A-Za-z0-9_-]+)`).exec(mail.text);
  assert.ok(match?.[1], `no ${path} link with token= in the mail's text: ${mail.text}`);
  return match[1];
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();
const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};

function expectFieldError(response: ApiResponse<unknown>, path: string): void {
  const error = expectError(response, 400, 'VALIDATION_FAILED');
  assert.deepEqual(
    error.errors?.map((fieldError) => fieldError.path),
    [path],
    `expected exactly one field error at "${path}": ${response.text}`,
  );
}

describeOnBackends('email verification and password reset', ({ it, before, defer, startServer }) => {
  let server: TestServer;
  let smtp: SmtpSink;

  before(async () => {
    smtp = await startSmtp();
    defer(() => smtp.close());
    server = await startServer({ SMTP_URL: smtp.url, MAIL_FROM, PUBLIC_URL, GRPC_PORT: '0' });
  });

  /** Registers a user and returns the verification token from the mail registration sent. */
  const registerWithMail = async (password = 'a-decent-pw-1') => {
    const email = uniqueEmail('mail');
    const registered = await server.client.post<{ data: unknown }>(REGISTER, { email, name: 'Mail User', password });
    assert.equal(registered.status, 201, registered.text);
    assert.equal(expectMailUser(registered.body.data).emailVerified, false);
    const mail = await smtp.mailTo(email);
    return { email, password, user: registered.body.data as MailUser, mail, token: tokenOf(mail, '/verify-email') };
  };

  it('when a user registers, then a verification mail with the link arrives; the token verifies the email once', async () => {
    const { email, password, mail, token } = await registerWithMail();
    assert.deepEqual(mail.to, [email]);
    assert.equal(mail.from, MAIL_FROM);
    assert.ok(mail.subject.length > 0);

    const session = await login(server.client, email, password);
    const before = await server.client.get<{ data: unknown }>(ME, { token: session.accessToken });
    assert.equal(expectMailUser(before.body.data).emailVerified, false);

    const verified = await server.client.post<{ data: unknown }>(VERIFY, { token });
    assert.equal(verified.status, 200, verified.text);
    const user = expectMailUser(verified.body.data);
    assert.equal(user.emailVerified, true);
    assert.equal(user.email, email);
    assert.equal(verified.headers.get('cache-control'), 'no-store');

    // Through the cache as every read is: the change is seen at once.
    const after = await server.client.get<{ data: unknown }>(ME, { token: session.accessToken });
    assert.equal(expectMailUser(after.body.data).emailVerified, true);

    expectError(await server.client.post(VERIFY, { token }), 400, 'INVALID_TOKEN');
    const admin = await loginAdmin(server.client);
    const audited = await server.client.get<{ data: unknown[] }>(`/api/v1/audit?action=user.email_verified&targetId=${user.id}`, {
      token: admin.accessToken,
    });
    assert.equal(audited.status, 200, audited.text);
    assert.equal(audited.body.data.length, 1, audited.text);
    // SMTP mode: no token in any log line.
    assert.ok(!server.logs.some((line) => line.includes(token)), 'a verification token reached the logs');
  });

  it('when a user verifies, then emailVerified reads true over GraphQL and gRPC as over REST', async () => {
    const { email, password, token } = await registerWithMail();
    const session = await login(server.client, email, password);
    assert.ok(server.app.grpc, 'GRPC_PORT set: the application has a gRPC server');
    const port = await server.app.grpc.listen(0, '127.0.0.1');
    const users = createClient(UserService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    const headers = { authorization: `Bearer ${session.accessToken}` };
    const viaGraphql = async () =>
      (await gql<{ me: { emailVerified: boolean } }>(server.client, '{ me { emailVerified } }', {}, { token: session.accessToken })).body.data?.me
        .emailVerified;

    assert.equal(await viaGraphql(), false);
    assert.equal((await users.getMe({}, { headers })).user?.emailVerified, false);
    assert.equal((await server.client.post(VERIFY, { token })).status, 200);
    assert.equal(await viaGraphql(), true);
    assert.equal((await users.getMe({}, { headers })).user?.emailVerified, true);
  });

  it('when a token is unknown, malformed, of the other purpose or expired, then 400 INVALID_TOKEN', async () => {
    expectError(await server.client.post(VERIFY, { token: 'x'.repeat(43) }), 400, 'INVALID_TOKEN');
    expectError(await server.client.post(VERIFY, { token: 'not a token at all' }), 400, 'INVALID_TOKEN');
    expectError(await server.client.post(RESET_CONFIRM, { token: 'y'.repeat(43), newPassword: 'brand-new-pw-1' }), 400, 'INVALID_TOKEN');
    expectFieldError(await server.client.post(VERIFY, { token: '' }), 'token');
    expectFieldError(await server.client.post(VERIFY, { token: 'abc', extra: 1 }), 'extra');

    const { token } = await registerWithMail();
    // A verification token is no reset token.
    expectError(await server.client.post(RESET_CONFIRM, { token, newPassword: 'brand-new-pw-1' }), 400, 'INVALID_TOKEN');
    await sql`update email_tokens set expires_at = now() - interval '1 second' where token_hash = ${sha256(token)}`.execute(server.app.database.db);
    expectError(await server.client.post(VERIFY, { token }), 400, 'INVALID_TOKEN');
  });

  it('when two requests confirm one verification token at the same time, then exactly one succeeds', async () => {
    for (let round = 0; round < 3; round++) {
      const { token } = await registerWithMail();
      const answers = await Promise.all([server.client.post(VERIFY, { token }), server.client.post(VERIFY, { token })]);
      const statuses = answers.map((answer) => answer.status).sort();
      assert.deepEqual(statuses, [200, 400], answers.map((answer) => answer.text).join('\n'));
    }
  });

  it('when a user asks for a new verification mail, then 202 and a new working link; verified: nothing sent; API key: 403', async () => {
    const { email, password, token: first } = await registerWithMail();
    const session = await login(server.client, email, password);
    expectError(await server.client.post(RESEND, {}), 401, 'UNAUTHENTICATED');

    const resent = await server.client.post(RESEND, undefined, { token: session.accessToken });
    assert.equal(resent.status, 202, resent.text);
    assert.deepEqual(resent.body, { data: {} });
    const second = tokenOf(await smtp.mailTo(email, 2), '/verify-email');
    assert.notEqual(second, first);
    assert.equal((await server.client.post(VERIFY, { token: second })).status, 200);

    // Already verified: accepted, no third mail.
    assert.equal((await server.client.post(RESEND, {}, { token: session.accessToken })).status, 202);
    await sleep(300);
    assert.equal(smtp.mailsTo(email).length, 2);

    const key = await server.client.post<{ data: { secret: string } }>(
      '/api/v1/api-keys',
      { name: 'resend probe', scopes: ['users:read'] },
      { token: session.accessToken },
    );
    assert.equal(key.status, 201, key.text);
    expectError(await server.client.post(RESEND, {}, { token: key.body.data.secret }), 403, 'FORBIDDEN');
  });

  it('when a user changes their email, then it is no longer verified', async () => {
    const { email, password, token } = await registerWithMail();
    const session = await login(server.client, email, password);
    assert.equal((await server.client.post(VERIFY, { token })).status, 200);
    const patched = await server.client.patch<{ data: unknown }>(
      `/api/v1/users/${session.user.id}`,
      { email: uniqueEmail('moved') },
      { token: session.accessToken },
    );
    assert.equal(patched.status, 200, patched.text);
    assert.equal(expectMailUser(patched.body.data).emailVerified, false);
  });

  it('when a verification link was mailed to an address the user no longer has, then it does not verify the new one', async () => {
    const { email, password, token } = await registerWithMail();
    const session = await login(server.client, email, password);
    const patched = await server.client.patch(`/api/v1/users/${session.user.id}`, { email: uniqueEmail('moved') }, { token: session.accessToken });
    assert.equal(patched.status, 200, patched.text);
    expectError(await server.client.post(VERIFY, { token }), 400, 'INVALID_TOKEN');
    const me = await server.client.get<{ data: unknown }>(ME, { token: session.accessToken });
    assert.equal(expectMailUser(me.body.data).emailVerified, false);
  });

  it('when a password is reset, then every earlier refresh and access token stops, the new password logs in, the token is single use', async () => {
    const user = await registerAndLogin(server.client);
    const other = await login(server.client, user.user.email, user.password); // a second device

    const requested = await server.client.post(RESET, { email: `  ${user.user.email.toUpperCase()} ` });
    assert.equal(requested.status, 202, requested.text);
    assert.deepEqual(requested.body, { data: {} });
    const mail = await smtp.mailTo(user.user.email, 2); // the first is registration's verification mail
    assert.match(mail.subject, /password/i);
    const token = tokenOf(mail, '/reset-password');

    // Still working before the reset.
    assert.equal((await server.client.get(ME, { token: user.accessToken })).status, 200);

    const confirmed = await server.client.post(RESET_CONFIRM, { token, newPassword: 'after-reset-pw-1' });
    assert.equal(confirmed.status, 204, confirmed.text);
    assert.equal(confirmed.text, '');

    expectError(await server.client.post(REFRESH, { refreshToken: user.refreshToken }), 401, 'INVALID_REFRESH_TOKEN');
    expectError(await server.client.post(REFRESH, { refreshToken: other.refreshToken }), 401, 'INVALID_REFRESH_TOKEN');
    for (const accessToken of [user.accessToken, other.accessToken]) {
      expectError(await eventually(() => server.client.get(ME, { token: accessToken }), 401, 1_000), 401, 'UNAUTHENTICATED');
    }
    expectError(await server.client.post(LOGIN, { email: user.user.email, password: user.password }), 401, 'INVALID_CREDENTIALS');
    const fresh = await login(server.client, user.user.email, 'after-reset-pw-1');
    assert.equal((await server.client.get(ME, { token: fresh.accessToken })).status, 200);

    expectError(await server.client.post(RESET_CONFIRM, { token, newPassword: 'another-pw-22' }), 400, 'INVALID_TOKEN');
    // The reset left the new session alone.
    assert.equal((await server.client.get(ME, { token: fresh.accessToken })).status, 200);

    const admin = await loginAdmin(server.client);
    const audited = await server.client.get<{ data: Array<{ action: string; actorId: string; targetId: string; details: unknown }> }>(
      `/api/v1/audit?action=user.password_reset&targetId=${user.user.id}`,
      { token: admin.accessToken },
    );
    assert.equal(audited.status, 200, audited.text);
    assert.equal(audited.body.data.length, 1, audited.text);
    assert.equal(audited.body.data[0]?.actorId, user.user.id);
    assert.ok(!audited.text.includes(token));
    assert.ok(!server.logs.some((line) => line.includes(token)), 'a reset token reached the logs');
  });

  it('when a password is reset, then the links of earlier reset requests are spent too', async () => {
    const user = await registerAndLogin(server.client);
    assert.equal((await server.client.post(RESET, { email: user.user.email })).status, 202);
    assert.equal((await server.client.post(RESET, { email: user.user.email })).status, 202);
    const first = tokenOf(await smtp.mailTo(user.user.email, 2), '/reset-password');
    const second = tokenOf(await smtp.mailTo(user.user.email, 3), '/reset-password');
    assert.notEqual(first, second);
    assert.equal((await server.client.post(RESET_CONFIRM, { token: second, newPassword: 'second-link-pw-1' })).status, 204);
    expectError(await server.client.post(RESET_CONFIRM, { token: first, newPassword: 'first-link-pw-1' }), 400, 'INVALID_TOKEN');
    await login(server.client, user.user.email, 'second-link-pw-1');
  });

  it('when two requests confirm one reset token at the same time, then exactly one succeeds', async () => {
    for (let round = 0; round < 2; round++) {
      const user = await registerAndLogin(server.client);
      assert.equal((await server.client.post(RESET, { email: user.user.email })).status, 202);
      const token = tokenOf(await smtp.mailTo(user.user.email, 2), '/reset-password');
      const answers = await Promise.all([
        server.client.post(RESET_CONFIRM, { token, newPassword: 'racer-one-pw-1' }),
        server.client.post(RESET_CONFIRM, { token, newPassword: 'racer-two-pw-2' }),
      ]);
      assert.deepEqual(answers.map((answer) => answer.status).sort(), [204, 400], answers.map((answer) => answer.text).join('\n'));
      const winner = answers[0]?.status === 204 ? 'racer-one-pw-1' : 'racer-two-pw-2';
      const loser = winner === 'racer-one-pw-1' ? 'racer-two-pw-2' : 'racer-one-pw-1';
      await login(server.client, user.user.email, winner);
      expectError(await server.client.post(LOGIN, { email: user.user.email, password: loser }), 401, 'INVALID_CREDENTIALS');
    }
  });

  it('when a reset is asked for an unknown or deleted user, then the same 202 body and no mail', async () => {
    const unknown = uniqueEmail('nobody');
    const answer = await server.client.post(RESET, { email: unknown });
    assert.equal(answer.status, 202, answer.text);
    assert.deepEqual(answer.body, { data: {} });

    const victim = await registerAndLogin(server.client);
    const admin = await loginAdmin(server.client);
    assert.equal((await server.client.delete(`/api/v1/users/${victim.user.id}`, { token: admin.accessToken })).status, 204);
    const deleted = await server.client.post(RESET, { email: victim.user.email });
    assert.equal(deleted.status, 202);
    assert.equal(deleted.text, answer.text);

    // A known user's mail, asked for after both, arrives: the other two had their chance.
    const known = await registerAndLogin(server.client);
    assert.equal((await server.client.post(RESET, { email: known.user.email })).status, 202);
    await smtp.mailTo(known.user.email, 2);
    await sleep(200);
    assert.equal(smtp.mailsTo(unknown).length, 0);
    assert.equal(smtp.mailsTo(victim.user.email).length, 1, 'only the registration mail');
    expectFieldError(await server.client.post(RESET, { email: 'not-an-email' }), 'email');
  });

  it('when one user is sent reset mails, then at most 5 an hour; further requests still answer 202 and send nothing', async () => {
    const user = await registerAndLogin(server.client);
    for (let index = 0; index < 7; index++) {
      const answer = await server.client.post(RESET, { email: user.user.email });
      assert.equal(answer.status, 202);
      assert.deepEqual(answer.body, { data: {} });
    }
    await smtp.mailTo(user.user.email, 6); // registration + 5 resets
    await server.app.emailFlows.idle();
    await sleep(200);
    assert.equal(smtp.mailsTo(user.user.email).length, 6);
  });

  it('when known and unknown emails ask for a reset, then the answers take about the same time (medians within 50 ms)', async (t) => {
    // One user per request: each known request then really stores a token (the hourly cap stays far).
    const knownEmails: string[] = [];
    for (let index = 0; index < 15; index++) {
      const email = uniqueEmail('timed');
      assert.equal((await server.client.post(REGISTER, { email, name: 'Timed', password: 'a-decent-pw-1' })).status, 201);
      knownEmails.push(email);
    }
    const timings: { known: number[]; unknown: number[] } = { known: [], unknown: [] };
    const timed = async (email: string) => {
      const started = performance.now();
      const response = await server.client.post(RESET, { email });
      const elapsed = performance.now() - started;
      assert.equal(response.status, 202);
      return elapsed;
    };
    await timed(uniqueEmail('warm-up'));
    for (const email of knownEmails) {
      timings.known.push(await timed(email));
      timings.unknown.push(await timed(uniqueEmail('nobody')));
    }
    const difference = Math.abs(median(timings.known) - median(timings.unknown));
    t.diagnostic(`median known ${median(timings.known).toFixed(1)} ms, unknown ${median(timings.unknown).toFixed(1)} ms`);
    assert.ok(difference < 50, `medians differ by ${difference.toFixed(1)} ms: ${JSON.stringify(timings)}`);
  });

  it('when a new password is one of the most common, then register, admin create, change and reset refuse it (path "password")', async () => {
    // Case-insensitive: the list is lower case.
    expectFieldError(await server.client.post(REGISTER, { email: uniqueEmail(), name: 'Common', password: 'IloveYou' }), 'password');

    const admin = await loginAdmin(server.client);
    expectFieldError(
      await server.client.post('/api/v1/users', { email: uniqueEmail(), name: 'Common', password: 'Sunshine' }, { token: admin.accessToken }),
      'password',
    );

    const user = await registerAndLogin(server.client);
    expectFieldError(
      await server.client.post(PASSWORD, { currentPassword: user.password, newPassword: 'BASEBALL' }, { token: user.accessToken }),
      'password',
    );
    // Nothing changed: the old password and tokens still work.
    assert.equal((await server.client.get(ME, { token: user.accessToken })).status, 200);

    assert.equal((await server.client.post(RESET, { email: user.user.email })).status, 202);
    const token = tokenOf(await smtp.mailTo(user.user.email, 2), '/reset-password');
    expectFieldError(await server.client.post(RESET_CONFIRM, { token, newPassword: 'password1' }), 'password');
    // A refused password does not spend the link.
    assert.equal((await server.client.post(RESET_CONFIRM, { token, newPassword: 'uncommon-pw-77' })).status, 204);

    // GraphQL goes through the same use case.
    const refused = await gql(server.client, 'mutation ($input: RegisterInput!) { register(input: $input) { id } }', {
      input: { email: uniqueEmail(), name: 'Common', password: 'trustno1' },
    });
    const error = refused.body.errors?.[0];
    assert.equal(error?.extensions.code, 'VALIDATION_FAILED', refused.text);
    assert.deepEqual(error?.extensions.errors?.map((fieldError) => fieldError.path), ['password']);
  });
});

describeOnBackends('email flows without SMTP_URL', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ PUBLIC_URL });
  });

  it('when a user registers, then the verification link is logged at info level, and it works', async () => {
    const email = uniqueEmail('devmail');
    const registered = await server.client.post(REGISTER, { email, name: 'Dev Mail', password: 'a-decent-pw-1' });
    assert.equal(registered.status, 201, registered.text);
    let entry: { level?: string; link?: string; to?: string } | undefined;
    const deadline = Date.now() + 5_000;
    while (!entry && Date.now() < deadline) {
      entry = server.logs
        .map((line) => JSON.parse(line) as { level?: string; link?: string; to?: string })
        .find((logged) => logged.to === email && typeof logged.link === 'string');
      if (!entry) await sleep(20);
    }
    assert.ok(entry, 'no log line with the link');
    assert.equal(entry.level, 'info');
    const match = new RegExp(`^${PUBLIC_URL.replace(/\./g, '\\.')}/verify-email\\?token=([A-Za-z0-9_-]+)$`).exec(entry.link ?? '');
    assert.ok(match?.[1], `unexpected link ${entry.link}`);
    const verified = await server.client.post<{ data: unknown }>(VERIFY, { token: match[1] });
    assert.equal(verified.status, 200, verified.text);
    assert.equal(expectMailUser(verified.body.data).emailVerified, true);
  });
});

describeOnBackends('email flows with the mail server away', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ SMTP_URL: `smtp://127.0.0.1:${await freePort()}`, MAIL_FROM, PUBLIC_URL });
  });

  it('when mail cannot be sent, then registration and reset still answer, and the failure is a warning without the token', async () => {
    const user = await registerAndLogin(server.client);
    const reset = await server.client.post(RESET, { email: user.user.email });
    assert.equal(reset.status, 202, reset.text);
    await server.app.emailFlows.idle();
    const warnings = server.logs
      .map((line) => JSON.parse(line) as { level?: string; msg?: string })
      .filter((logged) => logged.level === 'warn' && logged.msg === 'mail: sending failed');
    assert.equal(warnings.length, 2, server.logs.join('\n'));
    assert.ok(!server.logs.some((line) => /token=/.test(line)), 'a link reached the logs in SMTP mode');
  });
});
