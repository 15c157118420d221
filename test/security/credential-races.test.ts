// Credential races: a password change or logout-all shuts out every earlier credential, whatever is in
// flight. Each race is forced, not hoped for: a request is held right after its password check (the
// users service's test-only pause) while the competing request runs to completion, or, on PostgreSQL,
// a row lock held by the test orders a refresh rotation and a logout-all the way READ COMMITTED lets
// a successor escape the revoke.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { hash as bcryptHash } from '@node-rs/bcrypt';
import { describe } from 'node:test';
import pg from 'pg';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { expectError } from '../helpers/errors.js';
import { eventually, untilLockWaiters } from '../helpers/poll.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const LOGIN = '/api/v1/auth/login';
const REFRESH = '/api/v1/auth/refresh';
const LOGOUT_ALL = '/api/v1/auth/logout-all';
const PASSWORD = '/api/v1/auth/password';
const ME = '/api/v1/users/me';

interface TokenPair {
  accessToken: string;
  refreshToken: string;
}

const sha256 = (token: string): Buffer => createHash('sha256').update(token).digest();

/** Holds the next password check of an armed user until the test releases it; every other passes. */
function createPasswordCheckGate() {
  const armed = new Map<string, { reached: () => void; released: Promise<void> }>();
  return {
    pauses: {
      async afterPasswordCheck(userId: string): Promise<void> {
        const hold = armed.get(userId);
        if (!hold) return;
        armed.delete(userId);
        hold.reached();
        await hold.released;
      },
    },
    /**
     * Sends `request` with the user's next password check held; resolves once it is held, with the
     * pending response and the release. Fails if the request answers without reaching the check.
     */
    async holdDuring<T>(userId: string, request: () => Promise<ApiResponse<T>>) {
      let reached!: () => void;
      let release!: () => void;
      const reachedCheck = new Promise<void>((resolve) => (reached = resolve));
      const released = new Promise<void>((resolve) => (release = resolve));
      armed.set(userId, { reached, released });
      const response = request();
      await Promise.race([
        reachedCheck,
        response.then((answer) => assert.fail(`answered ${answer.status} without reaching the password check: ${answer.text}`)),
      ]);
      return { response, release };
    },
  };
}

describeOnBackends('credential races', ({ backend, it, before, startServer }) => {
  const gate = createPasswordCheckGate();
  let server: TestServer;

  before(async () => {
    server = await startServer({}, { application: { credentialPauses: gate.pauses } });
  });

  const client = () => server.client;
  const login = (email: string, password: string) => client().post<{ data: TokenPair }>(LOGIN, { email, password });
  const refresh = (refreshToken: string) => client().post<{ data: TokenPair }>(REFRESH, { refreshToken });
  const changePassword = (session: Session, currentPassword: string, newPassword: string) =>
    client().post<{ data: TokenPair }>(PASSWORD, { currentPassword, newPassword }, { token: session.accessToken });
  const me = (accessToken: string) => client().get(ME, { token: accessToken });

  /**
   * The forced interleaving under READ COMMITTED (PostgreSQL): a row lock held on the presented
   * token, the rotation queued on it first, then `second` queued behind it with its snapshot already
   * taken, then the lock released. Resolves to both answers, `second`'s first.
   */
  const rotationThenBehindHeldRow = async <T>(rowId: string, refreshToken: string, second: () => Promise<T>) => {
    const blocker = new pg.Client({ connectionString: server.database.databaseUrl });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select 1 from refresh_tokens where id = $1 for update', [rowId]);
      const rotation = refresh(refreshToken);
      await untilLockWaiters(blocker, 1, 'the held row', 200);
      const queued = second();
      await untilLockWaiters(blocker, 2, 'the held row', 200);
      await blocker.query('commit');
      return { second: await queued, rotated: await rotation };
    } finally {
      await blocker.end();
    }
  };

  const db = () => server.app.database.db;
  const liveRefreshTokensOf = async (userId: string): Promise<number> => {
    const rows = await db().selectFrom('refresh_tokens').select('id').where('user_id', '=', userId).where('revoked_at', 'is', null).execute();
    return rows.length;
  };
  const storedHash = async (userId: string) =>
    (await db().selectFrom('users').select('password_hash').where('id', '=', userId).executeTakeFirstOrThrow()).password_hash;
  const setHash = (userId: string, passwordHash: string) =>
    db().updateTable('users').set({ password_hash: passwordHash }).where('id', '=', userId).execute();
  /** What a revoke that missed these tokens leaves behind: the rows live again. */
  const unrevoke = (...tokens: string[]) =>
    db()
      .updateTable('refresh_tokens')
      .set({ revoked_at: null })
      .where('token_hash', 'in', tokens.map(sha256))
      .execute();

  describe('POST /auth/password', () => {
    it('when a change checked the current password before another change committed, then it answers 403 INVALID_CURRENT_PASSWORD and writes nothing', async () => {
      const session = await registerAndLogin(client());
      const held = await gate.holdDuring(session.user.id, () => changePassword(session, session.password, 'held-new-pw-1'));
      const winner = await changePassword(session, session.password, 'winner-new-pw-1');
      assert.equal(winner.status, 200, winner.text);
      const hashAfterWinner = await storedHash(session.user.id);
      held.release();

      expectError(await held.response, 403, 'INVALID_CURRENT_PASSWORD');
      assert.equal(await storedHash(session.user.id), hashAfterWinner, 'the losing change wrote no hash');
      assert.equal((await login(session.user.email, 'winner-new-pw-1')).status, 200);
      expectError(await login(session.user.email, 'held-new-pw-1'), 401, 'INVALID_CREDENTIALS');
      // the loser revoked nothing either: the winner's login lives on
      assert.equal((await refresh(winner.body.data.refreshToken)).status, 200);
    });

    it('when six changes from the same current password are sent at once, then exactly one succeeds and its password stands', async () => {
      const session = await registerAndLogin(client());
      const newPasswords = Array.from({ length: 6 }, (_, index) => `concurrent-new-pw-${index}`);
      const responses = await Promise.all(newPasswords.map((newPassword) => changePassword(session, session.password, newPassword)));
      const winners = newPasswords.filter((_, index) => responses[index]?.status === 200);
      assert.equal(winners.length, 1, `statuses: ${responses.map((response) => response.status).join(', ')}`);
      for (const response of responses.filter((answer) => answer.status !== 200)) {
        // refused on the password (403), or earlier on the access token the winner ended (401)
        assert.ok([401, 403].includes(response.status), response.text);
      }
      for (const newPassword of newPasswords) {
        assert.equal((await login(session.user.email, newPassword)).status, newPassword === winners[0] ? 200 : 401, newPassword);
      }
    });

    it('when a login re-hashed a legacy hash while a change was in flight, then the change still succeeds', async () => {
      const session = await registerAndLogin(client());
      await setHash(session.user.id, await bcryptHash(session.password, 10));
      const held = await gate.holdDuring(session.user.id, () => changePassword(session, session.password, 'after-upgrade-pw-1'));
      assert.equal((await login(session.user.email, session.password)).status, 200, 'the login upgrading the hash');
      assert.match(await storedHash(session.user.id), /^\$argon2id\$/);
      held.release();

      assert.equal((await held.response).status, 200, 'the current password still matches the upgraded hash');
      assert.equal((await login(session.user.email, 'after-upgrade-pw-1')).status, 200);
    });
  });

  describe('login racing a credential change', () => {
    const interventions: Array<{ what: string; run: (session: Session & { password: string }) => Promise<ApiResponse<unknown>>; status: number }> = [
      { what: 'a password change', run: (session) => changePassword(session, session.password, 'changed-pw-12'), status: 200 },
      { what: 'a logout-all', run: (session) => client().post(LOGOUT_ALL, undefined, { token: session.accessToken }), status: 204 },
      {
        what: 'a deletion',
        run: async (session) => client().delete(`/api/v1/users/${session.user.id}`, { token: (await loginAdmin(client())).accessToken }),
        status: 204,
      },
    ];
    for (const intervention of interventions) {
      it(`when a login checked the password before ${intervention.what} committed, then it answers 401 INVALID_CREDENTIALS and leaves no refresh token`, async () => {
        const session = await registerAndLogin(client());
        const held = await gate.holdDuring(session.user.id, () => login(session.user.email, session.password));
        const done = await intervention.run(session);
        assert.equal(done.status, intervention.status, done.text);
        const liveAfterIntervention = await liveRefreshTokensOf(session.user.id);
        held.release();

        const answer = await held.response;
        if (answer.status === 200) {
          const pair = answer.body.data;
          assert.fail(`the stale login got tokens; refresh ${(await refresh(pair.refreshToken)).status}, me ${(await me(pair.accessToken)).status}`);
        }
        expectError(answer, 401, 'INVALID_CREDENTIALS');
        assert.equal(await liveRefreshTokensOf(session.user.id), liveAfterIntervention, 'the stale login added no refresh token');
      });
    }

    it('when a login re-hashing a legacy hash checked the password before a change committed, then the new password stands', async () => {
      const session = await registerAndLogin(client());
      await setHash(session.user.id, await bcryptHash(session.password, 10));
      const held = await gate.holdDuring(session.user.id, () => login(session.user.email, session.password));
      const changed = await changePassword(session, session.password, 'changed-during-upgrade-1');
      assert.equal(changed.status, 200, changed.text);
      const hashAfterChange = await storedHash(session.user.id);
      held.release();

      expectError(await held.response, 401, 'INVALID_CREDENTIALS');
      assert.equal(await storedHash(session.user.id), hashAfterChange, 'the re-hash did not overwrite the changed password');
      assert.equal((await login(session.user.email, 'changed-during-upgrade-1')).status, 200);
      expectError(await login(session.user.email, session.password), 401, 'INVALID_CREDENTIALS');
    });
  });

  describe('refresh tokens outliving a logout-all', () => {
    it('when a login token, a successor and a spent token within grace escaped the revoke, then each is refused', async () => {
      const session = await registerAndLogin(client());
      const other = await registerAndLogin(client());
      const secondLogin = (await login(session.user.email, session.password)).body.data;
      const rotated = await refresh(session.refreshToken);
      assert.equal(rotated.status, 200, rotated.text);
      const successor = rotated.body.data.refreshToken;

      assert.equal((await client().post(LOGOUT_ALL, undefined, { token: session.accessToken })).status, 204);
      await unrevoke(secondLogin.refreshToken, session.refreshToken, successor);

      expectError(await refresh(secondLogin.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      expectError(await refresh(successor), 401, 'INVALID_REFRESH_TOKEN');
      expectError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN'); // spent within grace
      // another user's login was untouched
      assert.equal((await refresh(other.refreshToken)).status, 200);
    });

    it(
      'when a rotation and a logout-all race under READ COMMITTED, then no successor works and no new access token does',
      { skip: backend.name === 'pglite' ? 'PGlite has one connection: statements cannot interleave' : undefined },
      async () => {
        const session = await registerAndLogin(client());
        const presented = await db().selectFrom('refresh_tokens').select('id').where('token_hash', '=', sha256(session.refreshToken)).executeTakeFirstOrThrow();
        // The rotation queues on the row first; the logout-all bumps the version, then queues behind it
        // with its revoke's snapshot already taken: the successor the rotation inserts is not in it.
        const { second: logoutAll, rotated } = await rotationThenBehindHeldRow(presented.id, session.refreshToken, () =>
          client().post(LOGOUT_ALL, undefined, { token: session.accessToken }),
        );
        assert.equal(logoutAll.status, 204);
        // The race was the one forced: the successor was inserted, and the revoke did not see it.
        const successorRow = await db()
          .selectFrom('refresh_tokens')
          .select(['revoked_at', 'token_version'])
          .where('parent_id', '=', presented.id)
          .executeTakeFirstOrThrow();
        assert.equal(successorRow.revoked_at, null, 'the successor escaped the revoke');
        const user = await db().selectFrom('users').select('token_version').where('id', '=', session.user.id).executeTakeFirstOrThrow();
        assert.ok(successorRow.token_version < user.token_version, 'the successor carries the version before the logout-all');

        // Depending on whether the rotation read the user before or after the logout-all's commit, it
        // answers a pair of dead tokens or is refused; either way nothing it made works.
        if (rotated.status !== 200) {
          expectError(rotated, 401, 'INVALID_REFRESH_TOKEN');
        } else {
          expectError(await refresh(rotated.body.data.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
          expectError(await eventually(() => me(rotated.body.data.accessToken), 401), 401, 'UNAUTHENTICATED');
        }
        expectError(await refresh(session.refreshToken), 401, 'INVALID_REFRESH_TOKEN'); // within grace, revoked
      },
    );

    it(
      'when a rotation and a session revocation race under READ COMMITTED, then the successor the revoke did not see is refused too',
      { skip: backend.name === 'pglite' ? 'PGlite has one connection: statements cannot interleave' : undefined },
      async () => {
        const session = await registerAndLogin(client());
        const other = (await login(session.user.email, session.password)).body.data;
        const presented = await db()
          .selectFrom('refresh_tokens')
          .select(['id', 'family_id'])
          .where('token_hash', '=', sha256(session.refreshToken))
          .executeTakeFirstOrThrow();
        // The rotation queues on the row first; the revocation's token update queues behind it with
        // its snapshot already taken: the successor the rotation inserts is not in it.
        const { second: revocation, rotated } = await rotationThenBehindHeldRow(presented.id, session.refreshToken, () =>
          client().delete(`/api/v1/auth/sessions/${presented.family_id}`, { token: other.accessToken }),
        );
        assert.equal(revocation.status, 204);
        const successorRow = await db()
          .selectFrom('refresh_tokens')
          .select('revoked_at')
          .where('parent_id', '=', presented.id)
          .executeTakeFirstOrThrow();
        assert.equal(successorRow.revoked_at, null, 'the successor escaped the revoke (the race was the one forced)');
        assert.equal(rotated.status, 200, rotated.text);
        expectError(await refresh(rotated.body.data.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
        expectError(await eventually(() => me(rotated.body.data.accessToken), 401), 401, 'UNAUTHENTICATED');
        assert.equal((await me(other.accessToken)).status, 200, 'the other session is untouched');
      },
    );
  });
});
