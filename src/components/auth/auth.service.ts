// Auth use cases: login, refresh-token rotation (grace window, reuse detection, family revocation),
// logout, logout-all, password change, and resolving a bearer token to a Principal.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { sha256 } from '../../platform/digest.js';
import { requireSession, type Principal } from '../access/index.js';
import type { AuditEntry, AuditTrail } from '../audit/index.js';
import type { Outbox } from '../events/index.js';
import type { MaybePromise, ReadThroughCache } from '../../platform/cache.js';
import { keysetPage, positionAfter } from '../../platform/cursor.js';
import type { Database, Executor } from '../../platform/db/index.js';
import { notFound, unauthenticated } from '../../platform/errors.js';
import { isUuid, newId } from '../../platform/ids.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import type { Logger } from '../../platform/logger.js';
import type { Schedule } from '../../platform/jobs.js';
import { localSchedule } from '../../platform/periodic.js';
import { toUser, type User, type UserState, type UsersService } from '../users/index.js';
import type { AccessClaims, AccessTokens } from './access-tokens.js';
import { invalidAccessToken, invalidCredentials, mfaRequired, invalidRefreshToken, tokenReused, tooManyLoginAttempts } from './auth.errors.js';
import * as repo from './auth.repo.js';
import { isSealedBytes, openBytes, sealBytes, type KeySealer } from './key-sealing.js';
import { throttleKey, type LoginThrottle } from './login-throttle.js';
import type { MfaChallenge, SecondFactor } from './second-factor.js';

export interface TokenPair {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly tokenType: 'Bearer';
  readonly expiresIn: number;
}

export interface LoginResult extends TokenPair {
  readonly user: User;
}

/** A login (refresh-token family) as its user sees it. */
export interface Session {
  readonly id: string;
  readonly createdAt: string;
  readonly lastUsedAt: string;
  readonly userAgent: string | null;
  readonly ip: string | null;
  /** The session whose access token made the request. */
  readonly current: boolean;
}

/** What access tokens need to know of their session: whose it is, and whether it was ended. */
export interface SessionState {
  readonly userId: string;
  readonly revoked: boolean;
}

/** Resolves `bsk_…` bearer secrets (the api-keys component). */
export interface ApiKeyAuthenticator {
  authenticate(secret: string): MaybePromise<Principal>;
}

export const API_KEY_PREFIX = 'bsk_';

export interface AuthService {
  /**
   * Checks the password; a user with a confirmed second factor gets a challenge instead of tokens
   * (completeMfaLogin finishes it). The session records the origin's user agent and address.
   */
  beginLogin(input: { email: string; password: string; clientIp: string }, origin?: RequestOrigin): Promise<LoginResult | MfaChallenge>;
  /** beginLogin for a transport that carries no challenge: a user with MFA gets MFA_REQUIRED. */
  login(input: { email: string; password: string; clientIp: string }, origin?: RequestOrigin): Promise<LoginResult>;
  /** The second step of a login with MFA: a right code for the challenge starts the session. */
  completeMfaLogin(input: { mfaToken: string; code: string }, origin?: RequestOrigin): Promise<LoginResult>;
  /**
   * Starts a session for a user an OpenID provider vouched for: no password, no second factor.
   * UNAUTHENTICATED when the user is absent or deleted.
   */
  loginAs(userId: string, provider: string, origin?: RequestOrigin): Promise<LoginResult>;
  refresh(refreshToken: string, origin?: RequestOrigin): Promise<TokenPair>;
  logout(refreshToken: string, origin?: RequestOrigin): Promise<void>;
  logoutAll(principal: Principal, origin?: RequestOrigin): Promise<void>;
  changePassword(principal: Principal, input: { currentPassword: string; newPassword: string }, origin?: RequestOrigin): Promise<LoginResult>;
  /** The caller's live sessions, newest first (`current` marks the caller's own). */
  listSessions(principal: Principal, query: { limit: number; cursor?: string }): Promise<{ data: Session[]; meta: { nextCursor: string | null } }>;
  /** Ends one of the caller's sessions: its refresh tokens at once, its access tokens within a second everywhere. */
  revokeSession(principal: Principal, sessionId: string, origin?: RequestOrigin): Promise<void>;
  /**
   * Resolves a bearer token to the caller, checking it against the user's current state, or fails
   * UNAUTHENTICATED. Synchronous (the principal returned, or the error thrown) when every fact is in
   * memory: the token was verified before and this instance holds the user's state, the hot path of
   * every authenticated request. A promise when either needs I/O.
   */
  authenticate(accessToken: string): Principal | Promise<Principal>;
  /**
   * Deletes every login (refresh-token family) whose tokens have all expired: nothing can be done
   * with them any more, reuse detection included. Resolves to the number of rows deleted.
   */
  purgeExpiredSessions(): Promise<number>;
  /** Starts the hourly purge; stopBackgroundWork ends it. */
  startBackgroundWork(): void;
  stopBackgroundWork(): void;
}

const PURGE_INTERVAL_MS = 3_600_000;
/** Families per delete statement: keeps each purge transaction short on a large table. */
const PURGE_BATCH_FAMILIES = 1_000;

interface AuthServiceDeps {
  readonly database: Database;
  readonly users: UsersService;
  readonly accessTokens: AccessTokens;
  readonly loginThrottle: LoginThrottle;
  readonly refreshTokenTtlSeconds: number;
  readonly refreshReuseGraceSeconds: number;
  readonly logger: Logger;
  /** Where security events (reuse detected, login locked) are written; none: no events. */
  readonly outbox?: Outbox;
  /** Sessions' revocation state, shared across instances like the users' state. */
  readonly sessionStates: ReadThroughCache<SessionState>;
  /** Where sign-ins, failures and credential changes are recorded; none: not recorded. */
  readonly audit?: AuditTrail;
  /** Challenges users who confirmed a second factor (MFA); none: passwords alone. */
  readonly secondFactor?: SecondFactor;
  /** Resolves API keys presented as bearer tokens; none: `bsk_` tokens are refused like any bad token. */
  readonly apiKeys?: ApiKeyAuthenticator;
  /** Runs the background work once per tick across instances; absent: on this instance's timer. */
  readonly schedule?: Schedule;
}

const SUCCESSOR_SECRET_NAME = 'refresh-successor-v1';

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/**
 * Loads (creating once) the secret that derives each refresh token's successor. Deriving instead of
 * storing lets a racing tab receive the very same successor again within the grace window, on any
 * instance, while the database keeps nothing but hashes. With a sealer (KEY_ENCRYPTION_SECRET) the
 * secret is stored sealed, and one stored in the clear before is sealed in place.
 */
export async function loadSuccessorSecret(database: Database, sealer?: KeySealer): Promise<Buffer> {
  let stored = await repo.findSecret(database.db, SUCCESSOR_SECRET_NAME);
  if (!stored) {
    const secret = randomBytes(32);
    await repo.insertSecretIfAbsent(database.db, SUCCESSOR_SECRET_NAME, sealer ? await sealBytes(sealer, secret) : secret);
    stored = await repo.findSecret(database.db, SUCCESSOR_SECRET_NAME);
    if (!stored) throw new Error('auth: could not create the refresh successor secret');
  }
  const secret = await openBytes(sealer, stored);
  if (sealer && !isSealedBytes(stored)) await repo.replaceSecret(database.db, SUCCESSOR_SECRET_NAME, await sealBytes(sealer, secret));
  return secret;
}

/**
 * The revocation rule, the one place it is written: verified claims stand for a caller only while the
 * user exists (not deleted) with the token's version (no logout-all, password change since), and the
 * caller has the role the user has now, not the one in the token.
 */
function principalFor(claims: AccessClaims, state: UserState | null, session: SessionState | null): Principal {
  if (!state || state.tokenVersion !== claims.tokenVersion) throw invalidAccessToken();
  if (!session || session.revoked || session.userId !== state.id) throw invalidAccessToken();
  return { userId: state.id, role: state.role, sessionId: claims.sessionId };
}

const SESSION_PAGE_LIMIT_DEFAULT = 10;

export function createAuthService(deps: AuthServiceDeps, successorSecret: Buffer): AuthService {
  const { database, users, accessTokens, loginThrottle, outbox, sessionStates, audit } = deps;
  const db = database.db;

  /** Records in `executor` when the audit trail is on. */
  const record = async (executor: Executor, entry: AuditEntry, origin: RequestOrigin | undefined) => {
    if (audit) await audit.record(executor, entry, origin);
  };
  const loadSessionState = async (id: string): Promise<SessionState | null> => (await repo.findSessionState(db, id)) ?? null;

  /** auth.login_locked: the attempts for an email from an address are used up until the window ends. */
  const emitLoginLocked = async (email: string, clientIp: string, lockSeconds: number, origin: RequestOrigin | undefined) => {
    if (!outbox && !audit) return;
    const lockedAt = new Date();
    const lockedUntil = new Date(lockedAt.getTime() + lockSeconds * 1000).toISOString();
    await database.transaction(async (tx) => {
      await outbox?.append(
        tx,
        [{ type: 'auth.login_locked', subject: `logins/${email}`, data: { email, ip: clientIp, lockedAt: lockedAt.toISOString(), lockedUntil } }],
        origin,
      );
      await record(tx, { action: 'auth.locked', actorId: null, targetId: null, details: { email, lockedUntil } }, origin);
    });
    outbox?.committed();
  };
  const stops: Array<() => void> = [];
  const successorOf = (token: string): string =>
    createHmac('sha256', successorSecret).update(token).digest('base64url');

  const issueAccess = (state: UserState, sessionId: string) =>
    accessTokens.issue({ userId: state.id, tokenVersion: state.tokenVersion, role: state.role, sessionId });

  /**
   * Starts a new refresh-token family (a login, a session) under the token version the credential was
   * checked under; its access token carries the same version. A password change, logout-all or
   * deletion that committed since the check leaves no session: INVALID_CREDENTIALS, as if the password
   * were wrong.
   */
  const startSession = async (
    state: UserState,
    method: string,
    origin: RequestOrigin | undefined,
    details: Readonly<Record<string, string>> = {},
  ): Promise<LoginResult> => {
    const refreshToken = randomBytes(32).toString('base64url');
    const familyId = newId();
    const session = {
      id: newId(),
      familyId,
      userId: state.id,
      tokenVersion: state.tokenVersion,
      tokenHash: sha256(refreshToken),
      ttlSeconds: deps.refreshTokenTtlSeconds,
      userAgent: origin?.userAgent ?? null,
      ip: origin?.ip ?? null,
    };
    const started = audit
      ? await database.transaction(async (tx) => {
          const inserted = await repo.insertSession(tx, session);
          if (inserted) await record(tx, { action: 'auth.login', actorId: state.id, targetId: state.id, details: { ...details, method, sessionId: familyId } }, origin);
          return inserted;
        })
      : await repo.insertSession(db, session);
    if (!started) throw invalidCredentials();
    return {
      accessToken: await issueAccess(state, familyId),
      refreshToken,
      tokenType: 'Bearer',
      expiresIn: accessTokens.ttlSeconds,
      user: toUser(state),
    };
  };

  /** Ends a session everywhere: its tokens in the database, its cached state on every instance. */
  const forgetSession = (sessionId: string) => sessionStates.delete(sessionId);

  /** The caller behind verified claims: synchronous when the user's state is in memory. */
  const principalOfClaims = (claims: AccessClaims): Principal | Promise<Principal> => {
    const state = users.getState(claims.userId);
    const session = sessionStates.get(claims.sessionId, loadSessionState);
    if (state instanceof Promise || session instanceof Promise) {
      return Promise.all([state, session]).then(([loadedState, loadedSession]) => principalFor(claims, loadedState, loadedSession));
    }
    return principalFor(claims, state, session);
  };

  /** The pair for a redeemed refresh token: its access token only for the version the family carries. */
  const pairFor = async (redeemed: { userId: string; familyId: string; tokenVersion: number }, refreshToken: string): Promise<TokenPair> => {
    const state = await users.getState(redeemed.userId);
    if (!state || state.tokenVersion !== redeemed.tokenVersion) throw invalidRefreshToken();
    return {
      accessToken: await issueAccess(state, redeemed.familyId),
      refreshToken,
      tokenType: 'Bearer',
      expiresIn: accessTokens.ttlSeconds,
    };
  };

  return {
    async login(input, origin) {
      const result = await this.beginLogin(input, origin);
      if ('mfaRequired' in result) throw mfaRequired();
      return result;
    },

    async beginLogin({ email, password, clientIp }, origin) {
      const key = throttleKey(email, clientIp);
      // Reserved before the check, so racing attempts cannot all pass a count none has raised yet.
      const reservation = await loginThrottle.reserve(key);
      if (!reservation.granted) throw tooManyLoginAttempts(reservation.retryAfterSeconds);
      const state = await users.verifyCredentials(email, password).catch(async (error: unknown) => {
        await loginThrottle.refund(key); // busy or failed: no wrong password to count
        throw error;
      });
      if (!state) {
        // The reservation stays counted: it is the failure. The one that used the window's last
        // attempt locks the client out: told once per lock.
        await record(db, { action: 'auth.login_failed', actorId: null, targetId: null, details: { email } }, origin);
        if (reservation.last) await emitLoginLocked(email, clientIp, reservation.lockSeconds, origin);
        throw invalidCredentials();
      }
      await loginThrottle.reset(key);
      const challenge = await deps.secondFactor?.challenge({ id: state.id, tokenVersion: state.tokenVersion }, origin);
      return challenge ?? startSession(state, 'password', origin);
    },

    async completeMfaLogin({ mfaToken, code }, origin) {
      if (!deps.secondFactor) throw unauthenticated('Multi-factor authentication is not enabled on this server');
      const redeemed = await deps.secondFactor.redeem(mfaToken, code, origin);
      const state = await users.getState(redeemed.userId);
      // A password change, logout-all or deletion since the password was checked ends the login.
      if (!state || state.tokenVersion !== redeemed.tokenVersion) throw invalidCredentials();
      return startSession(state, 'password+totp', origin);
    },

    async loginAs(userId, provider, origin) {
      const state = isUuid(userId) ? await users.getState(userId.toLowerCase()) : null;
      if (!state) throw unauthenticated('The user does not exist');
      return startSession(state, 'oidc', origin, { provider });
    },

    async refresh(refreshToken, origin) {
      const presentedHash = sha256(refreshToken);
      const successor = successorOf(refreshToken);
      const successorHash = sha256(successor);
      const rotated = await repo.rotateRefreshToken(db, {
        presentedHash,
        successorId: newId(),
        successorHash,
        ttlSeconds: deps.refreshTokenTtlSeconds,
      });
      if (rotated) return pairFor(rotated, successor);

      const presented = await repo.findPresentedToken(db, presentedHash);
      if (!presented) throw invalidRefreshToken();
      if (presented.secondsSinceRotation !== null) {
        const withinGrace = presented.secondsSinceRotation <= deps.refreshReuseGraceSeconds;
        if (!withinGrace) {
          await database.transaction(async (tx) => {
            await repo.revokeFamily(tx, presented.familyId);
            await record(
              tx,
              { action: 'auth.refresh_reuse', actorId: null, targetId: presented.userId, details: { sessionId: presented.familyId } },
              origin,
            );
            await outbox?.append(
              tx,
              [
                {
                  type: 'auth.refresh_reuse_detected',
                  subject: `users/${presented.userId}`,
                  data: { userId: presented.userId, sessionId: presented.familyId, detectedAt: new Date().toISOString() },
                },
              ],
              origin,
            );
          });
          outbox?.committed();
          forgetSession(presented.familyId);
          deps.logger.warn({ userId: presented.userId, familyId: presented.familyId }, 'auth: refresh token reuse, family revoked');
          throw tokenReused();
        }
        // Two tabs racing: hand out the successor the first rotation created, not a second one.
        if (presented.revoked || presented.successorRevoked || !presented.successorHash) throw invalidRefreshToken();
        if (!presented.userCurrent || !sameBytes(presented.successorHash, successorHash)) throw invalidRefreshToken();
        return pairFor(presented, successor);
      }
      throw invalidRefreshToken(); // revoked or expired, never rotated
    },

    async logout(refreshToken) {
      const sessionId = await repo.findFamilyOfToken(db, sha256(refreshToken));
      if (!sessionId) return;
      await database.transaction((tx) => repo.revokeFamily(tx, sessionId));
      forgetSession(sessionId);
    },

    async logoutAll(principal, origin) {
      requireSession(principal);
      await users.revokeAccessTokens(principal.userId, async (tx, userId) => {
        await repo.revokeAllOfUser(tx, userId);
        await record(tx, { action: 'auth.logout_all', actorId: principal.userId, targetId: userId }, origin);
      });
    },

    async changePassword(principal, input, origin) {
      requireSession(principal);
      const state = await users.changePassword(
        principal.userId,
        input.currentPassword,
        input.newPassword,
        (tx, userId) => repo.revokeAllOfUser(tx, userId),
        origin,
      );
      return startSession(state, 'password', origin);
    },

    async listSessions(principal, query) {
      requireSession(principal);
      const limit = query.limit ?? SESSION_PAGE_LIMIT_DEFAULT;
      const rows = await repo.listLiveSessions(db, principal.userId, { limit: limit + 1, before: positionAfter(query.cursor) });
      return keysetPage(rows, limit, (row) => ({
        id: row.id,
        createdAt: row.created_at.toISOString(),
        lastUsedAt: row.last_used_at.toISOString(),
        userAgent: row.user_agent,
        ip: row.ip,
        current: row.id === principal.sessionId,
      }));
    },

    async revokeSession(principal, rawId, origin) {
      requireSession(principal);
      const sessionId = rawId.toLowerCase();
      if (!isUuid(sessionId)) throw notFound('Session');
      const revoked = await database.transaction(async (tx) => {
        if (!(await repo.sessionBelongsTo(tx, principal.userId, sessionId))) return false;
        await repo.revokeFamily(tx, sessionId);
        await record(tx, { action: 'auth.session_revoked', actorId: principal.userId, targetId: principal.userId, details: { sessionId } }, origin);
        return true;
      });
      if (!revoked) throw notFound('Session');
      forgetSession(sessionId);
    },

    authenticate(accessToken) {
      if (accessToken.startsWith(API_KEY_PREFIX)) {
        if (!deps.apiKeys) throw invalidAccessToken();
        return deps.apiKeys.authenticate(accessToken);
      }
      const claims = accessTokens.verify(accessToken);
      return claims instanceof Promise ? claims.then(principalOfClaims) : principalOfClaims(claims);
    },

    async purgeExpiredSessions() {
      let total = 0;
      for (;;) {
        const { rows, families } = await repo.deleteExpiredFamilies(db, PURGE_BATCH_FAMILIES);
        total += rows;
        if (families < PURGE_BATCH_FAMILIES) return total;
      }
    },

    startBackgroundWork() {
      const schedule: Schedule = deps.schedule ?? localSchedule(deps.logger);
      stops.push(schedule('auth: purged expired refresh tokens', PURGE_INTERVAL_MS, () => this.purgeExpiredSessions()));
    },

    stopBackgroundWork() {
      for (const stop of stops.splice(0)) stop();
    },
  };
}
