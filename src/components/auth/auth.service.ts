// Auth use cases: login, refresh-token rotation (grace window, reuse detection, family revocation),
// logout, logout-all, password change, and resolving a bearer token to a Principal.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Principal } from '../access/index.js';
import type { EventOrigin, Outbox } from '../events/index.js';
import type { Database } from '../../platform/db/index.js';
import { newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import type { Schedule } from '../../platform/jobs.js';
import { localSchedule } from '../../platform/periodic.js';
import { toUser, type User, type UserState, type UsersService } from '../users/index.js';
import type { AccessClaims, AccessTokens } from './access-tokens.js';
import { invalidAccessToken, invalidCredentials, invalidRefreshToken, tokenReused, tooManyLoginAttempts } from './auth.errors.js';
import * as repo from './auth.repo.js';
import { isSealedBytes, openBytes, sealBytes, type KeySealer } from './key-sealing.js';
import { throttleKey, type LoginThrottle } from './login-throttle.js';

export interface TokenPair {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly tokenType: 'Bearer';
  readonly expiresIn: number;
}

export interface LoginResult extends TokenPair {
  readonly user: User;
}

export interface AuthService {
  login(input: { email: string; password: string; clientIp: string }, origin?: EventOrigin): Promise<LoginResult>;
  refresh(refreshToken: string, origin?: EventOrigin): Promise<TokenPair>;
  logout(refreshToken: string): Promise<void>;
  logoutAll(principal: Principal): Promise<void>;
  changePassword(principal: Principal, input: { currentPassword: string; newPassword: string }): Promise<LoginResult>;
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
  /** Runs the background work once per tick across instances; absent: on this instance's timer. */
  readonly schedule?: Schedule;
}

const SUCCESSOR_SECRET_NAME = 'refresh-successor-v1';

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();
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
function principalFor(claims: AccessClaims, state: UserState | null): Principal {
  if (!state || state.tokenVersion !== claims.tokenVersion) throw invalidAccessToken();
  return { userId: state.id, role: state.role };
}

export function createAuthService(deps: AuthServiceDeps, successorSecret: Buffer): AuthService {
  const { database, users, accessTokens, loginThrottle, outbox } = deps;
  const db = database.db;

  /** auth.login_locked: the attempts for an email from an address are used up until the window ends. */
  const emitLoginLocked = async (email: string, clientIp: string, lockSeconds: number, origin: EventOrigin | undefined) => {
    if (!outbox) return;
    const lockedAt = new Date();
    await database.transaction((tx) =>
      outbox.append(
        tx,
        [
          {
            type: 'auth.login_locked',
            subject: `logins/${email}`,
            data: { email, ip: clientIp, lockedAt: lockedAt.toISOString(), lockedUntil: new Date(lockedAt.getTime() + lockSeconds * 1000).toISOString() },
          },
        ],
        origin,
      ),
    );
    outbox.committed();
  };
  const stops: Array<() => void> = [];
  const successorOf = (token: string): string =>
    createHmac('sha256', successorSecret).update(token).digest('base64url');

  const issueAccess = (state: UserState, sessionId: string) =>
    accessTokens.issue({ userId: state.id, tokenVersion: state.tokenVersion, role: state.role, sessionId });

  /**
   * Starts a new refresh-token family (a login) under the token version the password was checked
   * under; its access token carries the same version. A password change, logout-all or deletion that
   * committed since the check leaves no session: INVALID_CREDENTIALS, as if the password were wrong.
   */
  const startSession = async (state: UserState): Promise<LoginResult> => {
    const refreshToken = randomBytes(32).toString('base64url');
    const familyId = newId();
    const started = await repo.insertRefreshToken(db, {
      id: newId(),
      familyId,
      userId: state.id,
      tokenVersion: state.tokenVersion,
      tokenHash: sha256(refreshToken),
      ttlSeconds: deps.refreshTokenTtlSeconds,
    });
    if (!started) throw invalidCredentials();
    return {
      accessToken: await issueAccess(state, familyId),
      refreshToken,
      tokenType: 'Bearer',
      expiresIn: accessTokens.ttlSeconds,
      user: toUser(state),
    };
  };

  /** The caller behind verified claims: synchronous when the user's state is in memory. */
  const principalOfClaims = (claims: AccessClaims): Principal | Promise<Principal> => {
    const state = users.getState(claims.userId);
    return state instanceof Promise ? state.then((loaded) => principalFor(claims, loaded)) : principalFor(claims, state);
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
    async login({ email, password, clientIp }, origin) {
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
        if (reservation.last) await emitLoginLocked(email, clientIp, reservation.lockSeconds, origin);
        throw invalidCredentials();
      }
      await loginThrottle.reset(key);
      return startSession(state);
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
      await repo.revokeFamilyOfToken(db, sha256(refreshToken));
    },

    async logoutAll(principal) {
      await users.revokeAccessTokens(principal.userId, (tx, userId) => repo.revokeAllOfUser(tx, userId));
    },

    async changePassword(principal, input) {
      const state = await users.changePassword(
        principal.userId,
        input.currentPassword,
        input.newPassword,
        (tx, userId) => repo.revokeAllOfUser(tx, userId),
      );
      return startSession(state);
    },

    authenticate(accessToken) {
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
