// Sessions (devices): each login is a session its user can list and end; ending one stops its
// refresh tokens at once and its access tokens within a second, and leaves the others working.
import assert from 'node:assert/strict';
import { login, registerAndLogin, type Session } from '../helpers/auth.js';
import type { Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, ISO_UTC, UUID } from '../helpers/errors.js';
import { eventually } from '../helpers/poll.js';
import type { TestServer } from '../helpers/server.js';

interface SessionView {
  id: string;
  createdAt: string;
  lastUsedAt: string;
  userAgent: string | null;
  ip: string | null;
  current: boolean;
}
interface SessionList {
  data: SessionView[];
  meta: { nextCursor: string | null };
}

const sessionIdOf = (accessToken: string): string =>
  (JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sid: string }).sid;

const loginAs = async (client: Client, email: string, password: string, userAgent: string): Promise<Session> => {
  const response = await client.post<{ data: Session }>('/api/v1/auth/login', { email, password }, { headers: { 'user-agent': userAgent } });
  assert.equal(response.status, 200, response.text);
  return response.body.data;
};

describeOnBackends('sessions (devices)', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });

  it('when a user logs in from two devices, then both sessions are listed newest first with their user agent and address, and `current` marks the caller', async () => {
    const { client } = server;
    const first = await registerAndLogin(client);
    const email = first.user.email;
    const laptop = await loginAs(client, email, first.password, 'Laptop/1.0');
    const phone = await loginAs(client, email, first.password, 'Phone/2.0');

    const listed = await client.get<SessionList>('/api/v1/auth/sessions', { token: phone.accessToken });
    assert.equal(listed.status, 200, listed.text);
    assert.equal(listed.headers.get('cache-control'), 'no-store');
    const sessions = listed.body.data;
    assert.deepEqual(
      sessions.map((session) => session.id),
      [sessionIdOf(phone.accessToken), sessionIdOf(laptop.accessToken), sessionIdOf(first.accessToken)],
    );
    for (const session of sessions) {
      assert.deepEqual(Object.keys(session).sort(), ['createdAt', 'current', 'id', 'ip', 'lastUsedAt', 'userAgent']);
      assert.match(session.id, UUID);
      assert.match(session.createdAt, ISO_UTC);
      assert.match(session.lastUsedAt, ISO_UTC);
      assert.equal(session.ip, '127.0.0.1');
    }
    assert.deepEqual(sessions.map((session) => session.current), [true, false, false]);
    assert.equal(sessions[0]?.userAgent, 'Phone/2.0');
    assert.equal(sessions[1]?.userAgent, 'Laptop/1.0');
    assert.equal(listed.body.meta.nextCursor, null);

    const fromLaptop = await client.get<SessionList>('/api/v1/auth/sessions', { token: laptop.accessToken });
    assert.deepEqual(fromLaptop.body.data.map((session) => session.current), [false, true, false]);
  });

  it('when sessions are listed one per page, then the cursor walks them all once, newest first', async () => {
    const { client } = server;
    const first = await registerAndLogin(client);
    const second = await login(client, first.user.email, first.password);
    const third = await login(client, first.user.email, first.password);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? '?limit=1' : `?limit=1&cursor=${cursor}`;
      const page = await client.get<SessionList>(`/api/v1/auth/sessions${query}`, { token: third.accessToken });
      assert.equal(page.status, 200, page.text);
      assert.ok(page.body.data.length <= 1);
      seen.push(...page.body.data.map((session) => session.id));
      cursor = page.body.meta.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(seen, [third, second, first].map((session) => sessionIdOf(session.accessToken)));

    expectError(await client.get('/api/v1/auth/sessions?cursor=not-a-cursor!', { token: third.accessToken }), 400, 'VALIDATION_FAILED');
    expectError(await client.get('/api/v1/auth/sessions?limit=0', { token: third.accessToken }), 400, 'VALIDATION_FAILED');
    expectError(await client.get('/api/v1/auth/sessions?limit=abc', { token: third.accessToken }), 400, 'VALIDATION_FAILED');
    expectError(await client.get('/api/v1/auth/sessions?extra=1', { token: third.accessToken }), 400, 'VALIDATION_FAILED');
  });

  it('when a session is revoked, then its refresh token fails at once, its access token within 1 s, and the caller\'s own session keeps working', async () => {
    const { client } = server;
    const mine = await registerAndLogin(client);
    const stolen = await login(client, mine.user.email, mine.password);
    // The stolen session's token is in use (verified and cached) before it is revoked.
    assert.equal((await client.get('/api/v1/users/me', { token: stolen.accessToken })).status, 200);

    const revoked = await client.delete(`/api/v1/auth/sessions/${sessionIdOf(stolen.accessToken)}`, { token: mine.accessToken });
    assert.equal(revoked.status, 204, revoked.text);
    assert.equal(revoked.text, '');

    expectError(await client.post('/api/v1/auth/refresh', { refreshToken: stolen.refreshToken }), 401, 'INVALID_REFRESH_TOKEN');
    expectError(await eventually(() => client.get('/api/v1/users/me', { token: stolen.accessToken }), 401), 401, 'UNAUTHENTICATED');

    assert.equal((await client.get('/api/v1/users/me', { token: mine.accessToken })).status, 200);
    const refreshed = await client.post('/api/v1/auth/refresh', { refreshToken: mine.refreshToken });
    assert.equal(refreshed.status, 200, refreshed.text);
    const listed = await client.get<SessionList>('/api/v1/auth/sessions', { token: mine.accessToken });
    assert.deepEqual(listed.body.data.map((session) => session.id), [sessionIdOf(mine.accessToken)]);
  });

  it("when a user names someone else's session, an unknown one or a malformed id, then it is 404, 404 and 400, and nothing is revoked", async () => {
    const { client } = server;
    const alice = await registerAndLogin(client);
    const bob = await registerAndLogin(client);
    expectError(await client.delete(`/api/v1/auth/sessions/${sessionIdOf(bob.accessToken)}`, { token: alice.accessToken }), 404, 'NOT_FOUND');
    expectError(await client.delete('/api/v1/auth/sessions/0190a000-0000-7000-8000-000000000000', { token: alice.accessToken }), 404, 'NOT_FOUND');
    expectError(await client.delete('/api/v1/auth/sessions/not-a-uuid', { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
    expectError(await client.get('/api/v1/auth/sessions'), 401, 'UNAUTHENTICATED');
    assert.equal((await client.get('/api/v1/users/me', { token: bob.accessToken })).status, 200);
    assert.equal((await client.post('/api/v1/auth/refresh', { refreshToken: bob.refreshToken })).status, 200);
  });

  it('when a session is refreshed, then its lastUsedAt moves on; a logout ends it: gone from the list and its access token refused within 1 s', async () => {
    const { client } = server;
    const keeper = await registerAndLogin(client);
    const leaving = await login(client, keeper.user.email, keeper.password);
    const before = (await client.get<SessionList>('/api/v1/auth/sessions', { token: keeper.accessToken })).body.data.find(
      (session) => session.id === sessionIdOf(leaving.accessToken),
    );
    assert.ok(before);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const refreshed = await client.post<{ data: Session }>('/api/v1/auth/refresh', { refreshToken: leaving.refreshToken });
    assert.equal(refreshed.status, 200, refreshed.text);
    const after = (await client.get<SessionList>('/api/v1/auth/sessions', { token: keeper.accessToken })).body.data.find(
      (session) => session.id === sessionIdOf(leaving.accessToken),
    );
    assert.ok(after);
    assert.ok(Date.parse(after.lastUsedAt) > Date.parse(before.lastUsedAt), `${after.lastUsedAt} after ${before.lastUsedAt}`);
    assert.equal(after.createdAt, before.createdAt);

    const logout = await client.post('/api/v1/auth/logout', { refreshToken: refreshed.body.data.refreshToken });
    assert.equal(logout.status, 204, logout.text);
    const listed = await client.get<SessionList>('/api/v1/auth/sessions', { token: keeper.accessToken });
    assert.deepEqual(listed.body.data.map((session) => session.id), [sessionIdOf(keeper.accessToken)]);
    expectError(await eventually(() => client.get('/api/v1/users/me', { token: refreshed.body.data.accessToken }), 401), 401, 'UNAUTHENTICATED');
  });

  it('when a refresh token is reused after its grace window, then that session ends: its access token is refused too', async () => {
    const reuse = await startServer({ REFRESH_REUSE_GRACE_SECONDS: '0' });
    const { client } = reuse;
    const user = await registerAndLogin(client);
    const rotated = await client.post<{ data: Session }>('/api/v1/auth/refresh', { refreshToken: user.refreshToken });
    assert.equal(rotated.status, 200, rotated.text);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expectError(await client.post('/api/v1/auth/refresh', { refreshToken: user.refreshToken }), 401, 'TOKEN_REUSED');
    expectError(await eventually(() => client.get('/api/v1/users/me', { token: rotated.body.data.accessToken }), 401), 401, 'UNAUTHENTICATED');
  });
});
