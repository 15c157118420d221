// Refresh-token rotation under attack and under races: the grace window hands a racing tab the same
// successor, a replay after the window is reuse and revokes the whole login, concurrent rotations
// never fork a family, and unknown / expired / revoked / logged-out tokens are refused.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { loginAdmin, login, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

interface TokenPairBody {
  data: { accessToken: string; refreshToken: string; tokenType: string; expiresIn: number };
}
interface ErrorBody {
  error: { code: string; message: string; requestId: string };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sha256 = (token: string): Buffer => createHash('sha256').update(token).digest();

function assertError(response: ApiResponse, status: number, code: string, what: string): void {
  assert.equal(response.status, status, `${what}: expected ${status} ${code}, got ${response.status} ${response.text}`);
  const body = response.body as ErrorBody;
  assert.equal(body.error.code, code, `${what}: ${response.text}`);
  assert.equal(body.error.requestId, response.headers.get('x-request-id'));
}

function refreshTokenOf(response: ApiResponse, what: string): string {
  assert.equal(response.status, 200, `${what}: expected 200, got ${response.status} ${response.text}`);
  const body = response.body as TokenPairBody;
  assert.equal(body.data.tokenType, 'Bearer');
  assert.ok(body.data.refreshToken.length > 0 && body.data.accessToken.length > 0);
  return body.data.refreshToken;
}

/** Database views of the refresh_tokens table, by the token's hash (the table holds nothing else). */
function tokenRows(server: TestServer) {
  const db = server.app.database.db;
  return {
    async of(token: string) {
      return db
        .selectFrom('refresh_tokens')
        .select(['id', 'family_id', 'parent_id', 'rotated_at', 'revoked_at', 'expires_at'])
        .where('token_hash', '=', sha256(token))
        .executeTakeFirst();
    },
    async childrenOf(id: string) {
      return db.selectFrom('refresh_tokens').select(['id', 'token_hash']).where('parent_id', '=', id).execute();
    },
    async family(familyId: string) {
      return db.selectFrom('refresh_tokens').select(['id', 'revoked_at']).where('family_id', '=', familyId).execute();
    },
  };
}

describeOnBackends('refresh-token rotation', ({ it, before, startServer }) => {
  let server: TestServer;
  const refresh = (refreshToken: string) => server.client.post<TokenPairBody>('/api/v1/auth/refresh', { refreshToken });
  const me = (accessToken: string) => server.client.get('/api/v1/users/me', { token: accessToken });

  before(async () => {
    server = await startServer();
  });

  it('when a spent token is presented within the grace window, then the same successor is returned', async () => {
    const session = await registerAndLogin(server.client);
    const first = await refresh(session.refreshToken);
    const successor = refreshTokenOf(first, 'first rotation');
    assert.notEqual(successor, session.refreshToken);

    const replay = await refresh(session.refreshToken);
    assert.equal(refreshTokenOf(replay, 'replay within grace'), successor, 'the replay hands out the same successor');
    assert.equal((await me(replay.body.data.accessToken)).status, 200, 'the replay access token works');

    const rows = tokenRows(server);
    const spent = await rows.of(session.refreshToken);
    assert.ok(spent?.rotated_at, 'the presented token is spent');
    assert.equal(spent.revoked_at, null);
    const children = await rows.childrenOf(spent.id);
    assert.equal(children.length, 1, 'exactly one successor row');
    assert.deepEqual(Buffer.from(children[0]?.token_hash ?? []), sha256(successor));
    assert.equal((await rows.family(spent.family_id)).length, 2);

    // the successor itself is live and rotates normally
    const next = refreshTokenOf(await refresh(successor), 'rotating the successor');
    assert.notEqual(next, successor);
    assert.notEqual(next, session.refreshToken);
  });

  it('when one token is refreshed 20 times in parallel, then every success carries one identical successor', async () => {
    const rows = tokenRows(server);
    for (let round = 0; round < 3; round++) {
      const session = await registerAndLogin(server.client);
      const responses = await Promise.all(Array.from({ length: 20 }, () => refresh(session.refreshToken)));
      const statuses = responses.map((response) => response.status);
      assert.deepEqual(
        statuses,
        statuses.map(() => 200),
        `round ${round}: racing tabs are within the grace window and must all succeed: ${responses.map((r) => r.text).join('\n')}`,
      );
      const successors = new Set(responses.map((response) => response.body.data.refreshToken));
      assert.equal(successors.size, 1, `round ${round}: ${successors.size} different successors`);
      const parent = await rows.of(session.refreshToken);
      assert.ok(parent);
      const children = await rows.childrenOf(parent.id);
      assert.equal(children.length, 1, `round ${round}: child rows of the parent`);
      assert.deepEqual(Buffer.from(children[0]?.token_hash ?? []), sha256([...successors][0] ?? ''));
      assert.equal((await rows.family(parent.family_id)).length, 2, `round ${round}: family size`);
    }
  });

  it('when a spent successor chain is raced, then each level still has exactly one child', async () => {
    const rows = tokenRows(server);
    const session = await registerAndLogin(server.client);
    let token = session.refreshToken;
    for (let level = 0; level < 3; level++) {
      const responses = await Promise.all(Array.from({ length: 10 }, () => refresh(token)));
      const successors = new Set(responses.map((response) => refreshTokenOf(response, `level ${level}`)));
      assert.equal(successors.size, 1);
      token = [...successors][0] ?? '';
    }
    const root = await rows.of(session.refreshToken);
    assert.ok(root);
    assert.equal((await rows.family(root.family_id)).length, 4, 'a chain of four tokens, no forks');
  });

  it('when the refresh token is unknown, then 401 INVALID_REFRESH_TOKEN', async () => {
    assertError(await refresh(randomBytes(32).toString('base64url')), 401, 'INVALID_REFRESH_TOKEN', 'random token');
    assertError(await refresh('x'), 401, 'INVALID_REFRESH_TOKEN', 'one character');
    const session = await registerAndLogin(server.client);
    assertError(await refresh(`${session.refreshToken}x`), 401, 'INVALID_REFRESH_TOKEN', 'a real token with a suffix');
    assertError(await refresh(session.accessToken), 401, 'INVALID_REFRESH_TOKEN', 'an access token');
    // the real token was not disturbed
    refreshTokenOf(await refresh(session.refreshToken), 'the real token');
  });

  it('when the refresh token has expired, then 401 INVALID_REFRESH_TOKEN and no successor is made', async () => {
    const rows = tokenRows(server);
    const session = await registerAndLogin(server.client);
    const row = await rows.of(session.refreshToken);
    assert.ok(row);
    assert.ok(row.expires_at.getTime() > Date.now(), 'a fresh token expires in the future');
    await server.app.database.db
      .updateTable('refresh_tokens')
      .set({ expires_at: new Date(Date.now() - 60_000) })
      .where('id', '=', row.id)
      .execute();
    assertError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN', 'expired token');
    assert.equal((await rows.childrenOf(row.id)).length, 0);
  });

  it('when every token of a login has expired, then the purge deletes that family whole and leaves families with a live token alone', async () => {
    const rows = tokenRows(server);
    const db = server.app.database.db;
    const expireFamily = (familyId: string, except?: string) =>
      db
        .updateTable('refresh_tokens')
        .set({ expires_at: new Date(Date.now() - 60_000) })
        .where('family_id', '=', familyId)
        .where('id', '!=', except ?? '00000000-0000-0000-0000-000000000000')
        .execute();

    // A: rotated twice, then everything expired. B: its first token expired, its successor lives.
    const a = await registerAndLogin(server.client);
    const aLast = refreshTokenOf(await refresh(refreshTokenOf(await refresh(a.refreshToken), 'A 1')), 'A 2');
    const aFamily = (await rows.of(a.refreshToken))!.family_id;
    assert.equal((await rows.family(aFamily)).length, 3);
    await expireFamily(aFamily);
    const b = await registerAndLogin(server.client);
    const bNext = refreshTokenOf(await refresh(b.refreshToken), 'B 1');
    const bFamily = (await rows.of(b.refreshToken))!.family_id;
    await expireFamily(bFamily, (await rows.of(bNext))!.id);
    const c = await registerAndLogin(server.client);
    const cFamily = (await rows.of(c.refreshToken))!.family_id;

    const deleted = await server.app.auth.purgeExpiredSessions();
    assert.ok(deleted >= 3, `deleted ${deleted} rows, expected at least A's three`);
    assert.deepEqual(await rows.family(aFamily), [], 'A is gone whole');
    assert.equal((await rows.family(bFamily)).length, 2, 'B keeps its expired parent while its successor lives');
    assert.equal((await rows.family(cFamily)).length, 1);
    assertError(await refresh(aLast), 401, 'INVALID_REFRESH_TOKEN', 'a purged token');
    refreshTokenOf(await refresh(bNext), 'B after the purge');
    assert.equal(await server.app.auth.purgeExpiredSessions(), 0, 'a second purge finds nothing');
  });

  it('when the refresh token was revoked by logout-all, then 401 INVALID_REFRESH_TOKEN', async () => {
    const rows = tokenRows(server);
    const session = await registerAndLogin(server.client);
    const other = await login(server.client, session.user.email, session.password);
    const done = await server.client.post('/api/v1/auth/logout-all', undefined, { token: session.accessToken });
    assert.equal(done.status, 204, done.text);
    assertError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN', 'first login after logout-all');
    assertError(await refresh(other.refreshToken), 401, 'INVALID_REFRESH_TOKEN', 'second login after logout-all');
    const row = await rows.of(session.refreshToken);
    assert.ok(row?.revoked_at);
    assert.equal((await rows.childrenOf(row.id)).length, 0);
  });

  it('when a user logs out, then refreshing that login (any token of it) is 401 and other logins live on', async () => {
    const rows = tokenRows(server);
    const session = await registerAndLogin(server.client);
    const otherLogin = await login(server.client, session.user.email, session.password);
    const successor = refreshTokenOf(await refresh(session.refreshToken), 'rotation before logout');

    const out = await server.client.post('/api/v1/auth/logout', { refreshToken: successor });
    assert.equal(out.status, 204, out.text);
    assertError(await refresh(successor), 401, 'INVALID_REFRESH_TOKEN', 'the logged-out token');
    // the spent parent is still inside the grace window, but its login is over
    assertError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN', 'the spent parent within grace');

    const root = await rows.of(session.refreshToken);
    assert.ok(root);
    const family = await rows.family(root.family_id);
    assert.ok(family.length >= 2 && family.every((row) => row.revoked_at !== null), 'the whole family is revoked');
    refreshTokenOf(await refresh(otherLogin.refreshToken), 'another login of the same user');

    // logging out again, or with an unknown token, is still 204
    assert.equal((await server.client.post('/api/v1/auth/logout', { refreshToken: successor })).status, 204);
    assert.equal((await server.client.post('/api/v1/auth/logout', { refreshToken: randomBytes(32).toString('base64url') })).status, 204);
  });

  it('when the spent parent is used to log out, then its successor dies too', async () => {
    const session = await registerAndLogin(server.client);
    const successor = refreshTokenOf(await refresh(session.refreshToken), 'rotation');
    assert.equal((await server.client.post('/api/v1/auth/logout', { refreshToken: session.refreshToken })).status, 204);
    assertError(await refresh(successor), 401, 'INVALID_REFRESH_TOKEN', 'successor of a logged-out parent');
  });

  it('when the user is deleted, then their refresh token is 401 INVALID_REFRESH_TOKEN', async () => {
    const session = await registerAndLogin(server.client);
    const admin = await loginAdmin(server.client);
    const deleted = await server.client.delete(`/api/v1/users/${session.user.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    assertError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN', 'deleted user');
  });
});

describeOnBackends('refresh-token reuse after the grace window', ({ it, before, startServer }) => {
  let server: TestServer;
  const refresh = (refreshToken: string) => server.client.post<TokenPairBody>('/api/v1/auth/refresh', { refreshToken });

  before(async () => {
    server = await startServer({ REFRESH_REUSE_GRACE_SECONDS: '1' });
  });

  it('when a spent token is presented after the grace, then 401 TOKEN_REUSED and the whole family is revoked', async () => {
    const rows = tokenRows(server);
    const session: Session & { password: string } = await registerAndLogin(server.client);
    const untouchedLogin = await login(server.client, session.user.email, session.password);
    const child = refreshTokenOf(await refresh(session.refreshToken), 'first rotation');
    const grandchild = refreshTokenOf(await refresh(child), 'second rotation');

    await sleep(1_600);
    assertError(await refresh(session.refreshToken), 401, 'TOKEN_REUSED', 'replay of the root after the grace');

    const root = await rows.of(session.refreshToken);
    assert.ok(root);
    const family = await rows.family(root.family_id);
    assert.equal(family.length, 3);
    assert.ok(family.every((row) => row.revoked_at !== null), 'every token of the login is revoked');
    assertError(await refresh(grandchild), 401, 'INVALID_REFRESH_TOKEN', 'the newest token of the revoked family');
    const newest = await rows.of(grandchild);
    assert.ok(newest);
    assert.equal((await rows.childrenOf(newest.id)).length, 0, 'no successor for a revoked token');

    // other logins of the same user are a different family and keep working
    refreshTokenOf(await refresh(untouchedLogin.refreshToken), 'another login');
  });

  it('when the middle of a chain is replayed after the grace, then the newest token fails too', async () => {
    const session = await registerAndLogin(server.client);
    const child = refreshTokenOf(await refresh(session.refreshToken), 'first rotation');
    await sleep(1_600);
    const grandchild = refreshTokenOf(await refresh(child), 'second rotation (child still live)');
    await sleep(1_600);
    assertError(await refresh(child), 401, 'TOKEN_REUSED', 'replay of the child');
    assertError(await refresh(grandchild), 401, 'INVALID_REFRESH_TOKEN', 'newest token after reuse');
    assertError(await refresh(session.refreshToken), 401, 'TOKEN_REUSED', 'the root is reuse as well');
  });
});
