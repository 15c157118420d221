// The auth service called directly, as any transport calls it: credentials, refresh tokens and a
// Principal in, token pairs or a DomainError out. Logins, refresh-token families (rotation, the grace
// window, reuse detection), logout, logout-all and password change.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe } from 'node:test';
import { sql } from 'kysely';
import type { Application } from '../../src/app.js';
import type { LoginResult } from '../../src/components/auth/index.js';
import { uniqueEmail } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { randomLoopbackAddress } from '../helpers/loopback.js';
import { adminPrincipal, expectDomainError, registerUser } from '../helpers/services.js';

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

describeOnBackends('auth service', ({ it, before, startApplication }) => {
  let app: Application;

  before(async () => {
    ({ app } = await startApplication());
  });

  /** A login from a client of its own, so that no test meets another's failed-login count. */
  const login = (email: string, password: string, clientIp = randomLoopbackAddress()) => app.auth.login({ email, password, clientIp });
  const registeredAndLoggedIn = async () => {
    const registered = await registerUser(app, 'auth');
    return { ...registered, session: await login(registered.user.email, registered.password) };
  };
  const liveRefreshTokensOf = async (userId: string): Promise<number> =>
    (await app.database.db.selectFrom('refresh_tokens').select('id').where('user_id', '=', userId).where('revoked_at', 'is', null).execute()).length;
  const tokenVersionOf = async (userId: string): Promise<number> =>
    (await app.database.db.selectFrom('users').select('token_version').where('id', '=', userId).executeTakeFirstOrThrow()).token_version;
  const expectRefreshRefused = (refreshToken: string, context: string) =>
    expectDomainError(app.auth.refresh(refreshToken), 'INVALID_REFRESH_TOKEN', context);

  describe('login', () => {
    it('when a registered user logs in with the right password (the email in any case), then a Bearer pair and the user come back', async () => {
      const { user, password } = await registerUser(app, 'auth');
      const result: LoginResult = await login(user.email.toUpperCase(), password);
      assert.deepEqual(Object.keys(result).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType', 'user']);
      assert.equal(result.tokenType, 'Bearer');
      assert.equal(result.expiresIn, app.config.accessTokenTtlSeconds);
      assert.equal(result.accessToken.split('.').length, 3, 'the access token is a JWS');
      assert.ok(result.refreshToken.length >= 32);
      assert.deepEqual(result.user, user);
      assert.equal(await liveRefreshTokensOf(user.id), 1, 'one login, one live refresh token');
    });

    it('when the password is wrong or the email unknown, then INVALID_CREDENTIALS and no session is started', async () => {
      const { user, password } = await registerUser(app, 'auth');
      await expectDomainError(login(user.email, `${password}-wrong`), 'INVALID_CREDENTIALS', 'wrong password');
      await expectDomainError(login(uniqueEmail('nobody'), password), 'INVALID_CREDENTIALS', 'unknown email');
      assert.equal(await liveRefreshTokensOf(user.id), 0);
    });

    it('when one client fails LOGIN_MAX_FAILURES times for an email, then its next attempt is RATE_LIMITED with a retry time, even with the right password', async () => {
      const { user, password } = await registerUser(app, 'auth');
      const clientIp = randomLoopbackAddress();
      for (let attempt = 1; attempt <= app.config.loginMaxFailures; attempt++) {
        await expectDomainError(login(user.email, 'not-the-password', clientIp), 'INVALID_CREDENTIALS', `attempt ${attempt}`);
      }
      const limited = await expectDomainError(login(user.email, password, clientIp), 'RATE_LIMITED');
      assert.ok((limited.details.retryAfterSeconds ?? 0) >= 1, `retryAfterSeconds: ${limited.details.retryAfterSeconds}`);
      assert.equal((await login(user.email, password)).user.id, user.id, 'another client is not throttled');
    });
  });

  describe('refresh', () => {
    it('when a refresh token is redeemed, then a new pair comes back with another refresh token, and the spent one within the grace window gives the same successor', async () => {
      const { session } = await registeredAndLoggedIn();
      const rotated = await app.auth.refresh(session.refreshToken);
      assert.deepEqual(Object.keys(rotated).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType']);
      assert.equal(rotated.tokenType, 'Bearer');
      assert.notEqual(rotated.refreshToken, session.refreshToken);
      assert.equal((await app.auth.refresh(session.refreshToken)).refreshToken, rotated.refreshToken, 'a racing tab gets the same successor');
      const next = await app.auth.refresh(rotated.refreshToken);
      assert.notEqual(next.refreshToken, rotated.refreshToken);
    });

    it('when a spent refresh token is presented after the grace window, then TOKEN_REUSED and every token of that login is revoked, other logins not', async () => {
      const { user, password, session } = await registeredAndLoggedIn();
      const otherLogin = await login(user.email, password);
      const successor = (await app.auth.refresh(session.refreshToken)).refreshToken;
      // The rotation happened long ago, as far as the grace window can tell.
      await app.database.db
        .updateTable('refresh_tokens')
        .set({ rotated_at: sql<Date>`rotated_at - interval '1 hour'` })
        .where('token_hash', '=', sha256(session.refreshToken))
        .execute();

      await expectDomainError(app.auth.refresh(session.refreshToken), 'TOKEN_REUSED');
      await expectRefreshRefused(successor, 'the successor of a reused token');
      assert.equal(await liveRefreshTokensOf(user.id), 1, 'only the other login lives');
      await app.auth.refresh(otherLogin.refreshToken);
    });

    it('when the refresh token is unknown, then INVALID_REFRESH_TOKEN', async () => {
      await expectRefreshRefused(randomBytes(32).toString('base64url'), 'a random token');
      await expectRefreshRefused('', 'an empty token');
    });

    it('when the user is deleted, then their refresh tokens are INVALID_REFRESH_TOKEN and their login INVALID_CREDENTIALS', async () => {
      const { user, password, session } = await registeredAndLoggedIn();
      await app.users.delete(await adminPrincipal(app), user.id);
      await expectRefreshRefused(session.refreshToken, 'after the deletion');
      await expectDomainError(login(user.email, password), 'INVALID_CREDENTIALS');
    });
  });

  describe('logout and logout-all', () => {
    it('when a user logs out with a refresh token, then that login cannot refresh and their other login still can; an unknown token logs out quietly', async () => {
      const { user, password, session } = await registeredAndLoggedIn();
      const otherLogin = await login(user.email, password);
      await app.auth.logout(session.refreshToken);
      await expectRefreshRefused(session.refreshToken, 'the logged-out login');
      await app.auth.refresh(otherLogin.refreshToken);
      await app.auth.logout(randomBytes(32).toString('base64url'));
      await app.auth.logout(session.refreshToken);
    });

    it('when a user logs out everywhere, then every refresh token of theirs is revoked, their token version moves on, other users keep theirs, and a new login works', async () => {
      const { user, password, principal, session } = await registeredAndLoggedIn();
      const secondLogin = await login(user.email, password);
      const bystander = await registeredAndLoggedIn();
      const versionBefore = await tokenVersionOf(user.id);

      await app.auth.logoutAll(principal);

      await expectRefreshRefused(session.refreshToken, 'first login');
      await expectRefreshRefused(secondLogin.refreshToken, 'second login');
      assert.equal(await liveRefreshTokensOf(user.id), 0);
      assert.equal(await tokenVersionOf(user.id), versionBefore + 1, 'every access token issued before is ended');
      await app.auth.refresh(bystander.session.refreshToken);
      const fresh = await login(user.email, password);
      await app.auth.refresh(fresh.refreshToken);
    });
  });

  describe('password change', () => {
    it('when the current password is wrong, then INVALID_CURRENT_PASSWORD and nothing changes', async () => {
      const { user, password, principal, session } = await registeredAndLoggedIn();
      const versionBefore = await tokenVersionOf(user.id);
      await expectDomainError(
        app.auth.changePassword(principal, { currentPassword: `${password}-wrong`, newPassword: 'a-new-password-1' }),
        'INVALID_CURRENT_PASSWORD',
      );
      assert.equal(await tokenVersionOf(user.id), versionBefore);
      await app.auth.refresh(session.refreshToken);
      await login(user.email, password);
      await expectDomainError(login(user.email, 'a-new-password-1'), 'INVALID_CREDENTIALS');
    });

    it('when the current password is right, then a fresh login comes back, every earlier refresh token is revoked, and only the new password logs in', async () => {
      const { user, password, principal, session } = await registeredAndLoggedIn();
      const newPassword = 'a-new-password-2';
      const changed = await app.auth.changePassword(principal, { currentPassword: password, newPassword });
      assert.deepEqual(changed.user, { ...user, updatedAt: changed.user.updatedAt });
      assert.notEqual(changed.refreshToken, session.refreshToken);

      await expectRefreshRefused(session.refreshToken, 'the login before the change');
      assert.equal(await liveRefreshTokensOf(user.id), 1, 'only the login the change returned');
      await app.auth.refresh(changed.refreshToken);
      await expectDomainError(login(user.email, password), 'INVALID_CREDENTIALS', 'the old password');
      assert.equal((await login(user.email, newPassword)).user.id, user.id);
    });
  });
});
