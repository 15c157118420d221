// The auth component's actions in the audit log, over HTTP: each sign-in, failure, lockout, reuse,
// logout-all, password change and session revocation leaves one event with the request's address,
// user agent and id, and no secret.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AuditEvent } from '../../src/components/audit/index.js';
import { login, loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const originHeaders = (label: string) => ({
  'x-request-id': `${label}-${randomBytes(6).toString('hex')}`,
  'user-agent': `auth-audit/${label} (${randomBytes(4).toString('hex')})`,
});

const sessionIdOf = (accessToken: string): string =>
  (JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sid: string }).sid;

describeOnBackends('auth actions in the audit log', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;

  before(async () => {
    server = await startServer({ LOGIN_MAX_FAILURES: '2', REFRESH_REUSE_GRACE_SECONDS: '0' });
    admin = await loginAdmin(server.client);
  });

  /** The one event its request left, found by the request id it sent. */
  const eventOf = async (headers: Record<string, string>): Promise<AuditEvent> => {
    const response = await server.client.get<{ data: AuditEvent[] }>('/api/v1/audit?limit=100', { token: admin.accessToken });
    assert.equal(response.status, 200, response.text);
    const events = response.body.data.filter((event) => event.requestId === headers['x-request-id']);
    assert.equal(events.length, 1, `events of ${headers['x-request-id']}: ${JSON.stringify(events)}`);
    const [event] = events;
    assert.ok(event);
    assert.equal(event.userAgent, headers['user-agent']);
    assert.equal(event.ip, '127.0.0.1');
    return event;
  };

  it('when a user logs in, fails twice and is locked out, then auth.login, auth.login_failed and auth.locked are recorded without the password', async () => {
    const user = await registerAndLogin(server.client);
    const ok = originHeaders('login');
    assert.equal((await server.client.post('/api/v1/auth/login', { email: user.user.email, password: user.password }, { headers: ok })).status, 200);
    const signedIn = await eventOf(ok);
    assert.equal(signedIn.action, 'auth.login');
    assert.equal(signedIn.actorId, user.user.id);
    assert.equal(signedIn.targetId, user.user.id);
    assert.equal(signedIn.details['method'], 'password');

    const wrong = 'not-the-password-1';
    const first = originHeaders('fail1');
    assert.equal((await server.client.post('/api/v1/auth/login', { email: user.user.email, password: wrong }, { headers: first })).status, 401);
    const failed = await eventOf(first);
    assert.equal(failed.action, 'auth.login_failed');
    assert.equal(failed.details['email'], user.user.email);

    // The second failure uses the window's last attempt: the failure and the lock are both recorded.
    const second = originHeaders('fail2');
    assert.equal((await server.client.post('/api/v1/auth/login', { email: user.user.email, password: wrong }, { headers: second })).status, 401);
    const response = await server.client.get<{ data: AuditEvent[] }>('/api/v1/audit?limit=100', { token: admin.accessToken });
    const actions = response.body.data.filter((event) => event.requestId === second['x-request-id']).map((event) => event.action).sort();
    assert.deepEqual(actions, ['auth.locked', 'auth.login_failed']);

    const everything = JSON.stringify(response.body);
    assert.ok(!everything.includes(wrong) && !everything.includes(user.password), 'a password reached the audit log');
  });

  it('when a refresh token is reused, a session revoked, the password changed and every session ended, then each is recorded with its actor and target', async () => {
    const user = await registerAndLogin(server.client);
    const rotated = await server.client.post('/api/v1/auth/refresh', { refreshToken: user.refreshToken });
    assert.equal(rotated.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const reuse = originHeaders('reuse');
    assert.equal((await server.client.post('/api/v1/auth/refresh', { refreshToken: user.refreshToken }, { headers: reuse })).status, 401);
    const reused = await eventOf(reuse);
    assert.equal(reused.action, 'auth.refresh_reuse');
    assert.equal(reused.targetId, user.user.id);
    assert.equal(reused.details['sessionId'], sessionIdOf(user.accessToken));

    const laptop = await login(server.client, user.user.email, user.password);
    const phone = await login(server.client, user.user.email, user.password);
    const revoke = originHeaders('revoke');
    assert.equal((await server.client.delete(`/api/v1/auth/sessions/${sessionIdOf(phone.accessToken)}`, { token: laptop.accessToken, headers: revoke })).status, 204);
    const revoked = await eventOf(revoke);
    assert.equal(revoked.action, 'auth.session_revoked');
    assert.equal(revoked.actorId, user.user.id);
    assert.equal(revoked.details['sessionId'], sessionIdOf(phone.accessToken));

    const change = originHeaders('password');
    const newPassword = `pw-${randomBytes(6).toString('hex')}`;
    const changed = await server.client.post<{ data: Session }>(
      '/api/v1/auth/password',
      { currentPassword: user.password, newPassword },
      { token: laptop.accessToken, headers: change },
    );
    assert.equal(changed.status, 200, changed.text);
    const events = await server.client.get<{ data: AuditEvent[] }>('/api/v1/audit?limit=100', { token: admin.accessToken });
    const ofChange = events.body.data.filter((event) => event.requestId === change['x-request-id']);
    assert.deepEqual(ofChange.map((event) => event.action).sort(), ['auth.login', 'user.password_changed']);
    for (const event of ofChange) {
      assert.equal(event.actorId, user.user.id);
      assert.equal(event.userAgent, change['user-agent']);
    }
    assert.ok(!JSON.stringify(events.body).includes(newPassword));

    const all = originHeaders('logout-all');
    assert.equal((await server.client.post('/api/v1/auth/logout-all', {}, { token: changed.body.data.accessToken, headers: all })).status, 204);
    const ended = await eventOf(all);
    assert.equal(ended.action, 'auth.logout_all');
    assert.equal(ended.actorId, user.user.id);
    assert.equal(ended.targetId, user.user.id);
  });
});
