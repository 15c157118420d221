// Users use cases: registration, admin management, reads through the principal cache, credentials.
// Every decision about who may do what goes through access.authorize().
import { authorize, can, type Principal, type Role } from '../access/index.js';
import type { MaybePromise, ReadThroughCache } from '../../platform/cache.js';
import type { Database, Tx } from '../../platform/db/index.js';
import { canonicalEmail } from '../../platform/email.js';
import { DomainError, forbidden, notFound, unauthenticated } from '../../platform/errors.js';
import { isUuid, newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import type { EventOrigin, NewEvent, Outbox } from '../events/index.js';
import type { AuditTrail } from '../audit/index.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import type { PasswordHasher } from './passwords.js';
import * as repo from './users.repo.js';
import { invalidCurrentPassword } from './users.errors.js';
import { refuseCommonPassword } from './common-passwords.js';

export interface User {
  readonly id: string;
  readonly email: string;
  readonly name: string;
  readonly role: Role;
  readonly emailVerified: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** A user as authentication sees it: the public fields plus the current token version. */
export interface UserState extends User {
  readonly tokenVersion: number;
}

export interface Page<T> {
  readonly data: T[];
  readonly meta: { readonly page: number; readonly limit: number; readonly total: number; readonly totalPages: number };
}

/** Work another component does in the same transaction as a user change (e.g. revoke sessions). */
export type AlsoInTransaction = (tx: Tx, userId: string, origin?: EventOrigin) => Promise<void>;

/**
 * Redeems a single-use credential (a mailed token) in the transaction of the change it allows: the
 * user and address it was issued for, or undefined if it is unknown, spent or expired.
 */
export type ClaimInTransaction = (tx: Tx) => Promise<{ readonly userId: string; readonly email: string } | undefined>;

/** Told after a registration committed (e.g. to mail a verification link); must not throw or block. */
export type RegisteredHook = (user: User, origin?: RequestOrigin) => void;

export interface UsersService {
  register(input: { email: string; name: string; password: string }, origin?: RequestOrigin): Promise<User>;
  create(principal: Principal, input: { email: string; name: string; password: string; role?: Role }, origin?: RequestOrigin): Promise<User>;
  list(principal: Principal, query: { page: number; limit: number }): Promise<Page<User>>;
  get(principal: Principal, id: string): Promise<User>;
  /**
   * The users among `ids` that `get` would return, keyed by lower-case id, in one read (not through
   * the state cache). An id the caller may not see, absent, deleted or not a UUID is left out of the
   * map, never an error; only a role that may never read users fails (FORBIDDEN), as `get` does.
   */
  getMany(principal: Principal, ids: readonly string[]): Promise<Map<string, User>>;
  update(principal: Principal, id: string, patch: { name?: string; email?: string; role?: Role }, origin?: RequestOrigin): Promise<User>;
  delete(principal: Principal, id: string, origin?: RequestOrigin): Promise<void>;
  /**
   * The user's current state, or null if absent or deleted, through the cache (invalidated by every
   * write): synchronously when this instance holds it in memory, else a promise.
   */
  getState(id: string): MaybePromise<UserState | null>;
  /**
   * Checks an email/password pair in about the same time whether or not the email exists. The state is
   * the one the password was checked under: a credential issued on it must be written under
   * isLiveAtTokenVersion(id, tokenVersion), since the user may have changed since.
   */
  verifyCredentials(email: string, password: string): Promise<UserState | null>;
  /**
   * Replaces the password if `currentPassword` matches the hash being replaced (compare-and-set): a change
   * that lost a race to another change writes nothing and fails INVALID_CURRENT_PASSWORD.
   */
  changePassword(userId: string, currentPassword: string, newPassword: string, also?: AlsoInTransaction, origin?: RequestOrigin): Promise<UserState>;
  /** Ends every access token issued so far (logout-all). */
  revokeAccessTokens(userId: string, also?: AlsoInTransaction): Promise<void>;
  /** Registers work that must happen (or veto with a DomainError) inside every user deletion. */
  onDelete(hook: AlsoInTransaction): void;
  /** Registers a hook told of every self-registration after it committed. */
  onRegistered(hook: RegisteredHook): void;
  /**
   * Marks the email of the user `claim` names verified, if it is still the address the claim was
   * issued for, with `also` in the same transaction; undefined (nothing but the claim written) otherwise.
   */
  confirmEmail(claim: ClaimInTransaction, also?: AlsoInTransaction, origin?: RequestOrigin): Promise<User | undefined>;
  /**
   * Replaces the password of the user `claim` names (no current password: the claim stands for it)
   * and ends every token issued so far, with `also` in the same transaction; undefined if the claim
   * fails. A common password is refused before anything is claimed.
   */
  resetPassword(claim: ClaimInTransaction, newPassword: string, also?: AlsoInTransaction, origin?: RequestOrigin): Promise<UserState | undefined>;
  /**
   * In `tx`: locks the user's row until it ends, if the user is live (true). Another component's
   * write that must not outlive the user (an account) takes it; a deletion waits for that write, or
   * the write for the deletion, which it then sees (false).
   */
  lockLiveUser(tx: Tx, userId: string): Promise<boolean>;
  /** In `tx`: the live user with this (canonical) email, locked as lockLiveUser locks; undefined if none. */
  lockLiveUserByEmail(tx: Tx, email: string): Promise<string | undefined>;
  /**
   * Creates a user who signs in through another authority (OpenID Connect): no password (a password
   * reset can give one), the email verified if that authority says so, `also` in the same transaction.
   */
  registerExternal(input: { email: string; name: string; emailVerified: boolean }, also?: AlsoInTransaction, origin?: RequestOrigin): Promise<User>;
  ensureAdmin(email: string, password: string): Promise<'created' | 'exists'>;
}

/**
 * Points where a credential use case waits, so a test can hold one request between reading and
 * writing while another completes. Undefined in production; not reachable from any transport.
 */
export interface CredentialPauses {
  /** After a password was checked against the stored hash, before anything is written on its strength. */
  afterPasswordCheck?(userId: string): Promise<void>;
}

interface UsersServiceDeps {
  readonly database: Database;
  readonly passwords: PasswordHasher;
  readonly stateCache: ReadThroughCache<UserState>;
  readonly logger: Logger;
  readonly now?: () => Date;
  readonly pauses?: CredentialPauses;
  /** Where user changes leave their events, in their transactions; none: no events. */
  readonly outbox?: Outbox;
  /** Where user changes are audited, in their transactions; none: not audited. */
  readonly audit?: AuditTrail;
}

/**
 * A change whose compare-and-set lost only to writes of the same password (a login's re-hash) tries
 * again; each try checks the current password anew, so more than one retry means something is wrong.
 */
const MAX_PASSWORD_CHANGE_ATTEMPTS = 3;

/**
 * The stored hash of a user without a password: not a PHC string (those start with `$`), so no
 * password ever verifies against it; verifyCredentials burns a dummy verification for it instead.
 */
export const NO_PASSWORD_HASH = '!no-password';

function toUserState(row: repo.UserRow): UserState {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    role: row.role,
    emailVerified: row.email_verified,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    tokenVersion: row.token_version,
  };
}

type NewUserEvent = NewEvent & { readonly type: 'user.created' | 'user.updated' | 'user.deleted' | 'user.role_changed' };

export function toUser(state: UserState): User {
  const { tokenVersion: _tokenVersion, ...user } = state;
  return user;
}

export function createUsersService(deps: UsersServiceDeps): UsersService {
  const { database, passwords, stateCache } = deps;
  const db = database.db;
  const now = deps.now ?? (() => new Date());
  const deletionHooks: AlsoInTransaction[] = [];
  const registeredHooks: RegisteredHook[] = [];
  const pauseAfterPasswordCheck = deps.pauses?.afterPasswordCheck;

  const loadState = async (id: string): Promise<UserState | null> => {
    const row = await repo.findLiveUserById(db, id);
    return row ? toUserState(row) : null;
  };
  const getState = (id: string): MaybePromise<UserState | null> => stateCache.get(id, loadState);
  /** Drop the cached state after a write; called after commit so a reader cannot re-cache the old row. */
  const forget = (id: string) => stateCache.delete(id);

  const outbox = deps.outbox;
  /** Writes the events in `tx` when the outbox is on. */
  const emit = async (tx: Tx, events: readonly NewUserEvent[], origin: EventOrigin | undefined) => {
    if (outbox) await outbox.append(tx, events, origin);
  };

  const audit = deps.audit;
  /** `actorId`: who creates the user; undefined: the user themselves (registering); null: nobody (bootstrap). */
  const insert = async (
    input: { email: string; name: string; password: string | null; role: Role; emailVerified?: boolean },
    origin?: RequestOrigin,
    actorId?: string | null,
    also?: AlsoInTransaction,
  ): Promise<User> => {
    const passwordHash = input.password === null ? NO_PASSWORD_HASH : await passwords.hash(input.password);
    const at = now();
    const user = await database.transaction(async (tx) => {
      const row = await repo.insertUser(tx, {
        id: newId(),
        email: input.email,
        name: input.name,
        role: input.role,
        password_hash: passwordHash,
        created_at: at,
        updated_at: at,
      });
      const created = toUser(toUserState(input.emailVerified ? ((await repo.markEmailVerified(tx, row.id, row.email, at)) ?? row) : row));
      await emit(tx, [{ type: 'user.created', subject: `users/${created.id}`, data: { ...created } }], origin);
      await audit?.record(
        tx,
        { action: 'user.created', actorId: actorId === undefined ? created.id : actorId, targetId: created.id, details: { role: created.role } },
        origin,
      );
      if (also) await also(tx, created.id, origin);
      return created;
    });
    outbox?.committed();
    return user;
  };

  /**
   * Upgrades bcrypt or outdated argon2 parameters transparently (tokens stay valid), only over the hash
   * just checked: a password changed meanwhile is never overwritten with the old one.
   */
  const upgradeHash = async (row: repo.UserRow & { password_hash: string }, password: string): Promise<void> => {
    const upgraded = await passwords.hash(password);
    const written = await repo.setPasswordHash(db, row.id, upgraded, {
      replacing: row.password_hash,
      revokeTokens: false,
      now: row.updated_at,
    });
    if (written) deps.logger.info({ userId: row.id }, 'users: password hash upgraded to current argon2id parameters');
  };

  /** The password change's write: the new hash over the checked one, its version bump and `also`, or nothing. */
  const replaceHash = (userId: string, checkedHash: string, newHash: string, also: AlsoInTransaction | undefined, origin: RequestOrigin | undefined) =>
    database.transaction(async (tx) => {
      const updated = await repo.setPasswordHash(tx, userId, newHash, { replacing: checkedHash, revokeTokens: true, now: now() });
      if (updated && also) await also(tx, userId);
      if (updated) await audit?.record(tx, { action: 'user.password_changed', actorId: userId, targetId: userId }, origin);
      return updated;
    });

  return {
    async register(input, origin) {
      await refuseCommonPassword(input.password);
      const user = await insert({ ...input, role: 'user' }, origin);
      for (const hook of registeredHooks) {
        try {
          hook(user, origin);
        } catch (error) {
          deps.logger.warn({ err: error, userId: user.id }, 'users: a registration hook failed');
        }
      }
      return user;
    },

    async create(principal, input, origin) {
      authorize(principal, 'users:create');
      if (input.role !== undefined && !can(principal, 'users:assign-role')) throw forbidden('Only admins may set a role');
      await refuseCommonPassword(input.password);
      return insert({ ...input, role: input.role ?? 'user' }, origin, principal.userId);
    },

    async list(principal, query) {
      authorize(principal, 'users:list');
      const { rows, total } = await repo.listLiveUsers(db, {
        limit: query.limit,
        offset: (query.page - 1) * query.limit,
      });
      return {
        data: rows.map((row) => toUser(toUserState(row))),
        meta: { page: query.page, limit: query.limit, total, totalPages: Math.ceil(total / query.limit) },
      };
    },

    async get(principal, rawId) {
      const id = rawId.toLowerCase(); // UUIDs are valid in either case; ids and cache keys are lower case
      authorize(principal, 'users:read', [id], 'User');
      // In memory: decided without a promise hop. A cached miss (null) is an answer too.
      const read = getState(id);
      const state = read instanceof Promise ? await read : read;
      // The caller's own user gone (deleted after the token was checked, e.g. between a cached check
      // and this read): their credentials are what is invalid, as the next request would be told.
      if (!state) throw id === principal.userId ? unauthenticated('The user behind this token no longer exists') : notFound('User');
      return toUser(state);
    },

    async getMany(principal, rawIds) {
      authorize(principal, 'users:read'); // the role check of `get`; the ownership check is per id below
      // An id that is not a UUID names no user (and would fail the whole statement on PostgreSQL).
      const ids = [...new Set(rawIds.map((id) => id.toLowerCase()))].filter(
        (id) => isUuid(id) && can(principal, 'users:read', [id]),
      );
      const rows = await repo.findLiveUsersByIds(db, ids);
      return new Map(rows.map((row) => [row.id, toUser(toUserState(row))]));
    },

    async update(principal, rawId, patch, origin) {
      const id = rawId.toLowerCase();
      if (patch.role !== undefined && !can(principal, 'users:assign-role')) {
        throw forbidden('Only admins may change a role');
      }
      authorize(principal, 'users:update', [id], 'User');
      const user = await database.transaction(async (tx) => {
        // The role before the change, under the row's lock, so that two concurrent changes each
        // report the role they replaced (user.role_changed).
        // Audited: the whole row before the change, under the same lock, to record what it changed.
        const before = audit && (await repo.lockLiveUserRole(tx, id)) !== undefined ? await repo.findLiveUserById(tx, id) : undefined;
        const previousRole = audit ? before?.role : outbox && patch.role !== undefined ? await repo.lockLiveUserRole(tx, id) : undefined;
        const row = await repo.updateUser(tx, id, { ...patch, updated_at: now() });
        if (!row) return undefined;
        if (audit && before) {
          // Which fields changed, never their values (an append-only log keeps them for the whole retention).
          const fields = (['email', 'name', 'role'] as const).filter((field) => before[field] !== row[field]).join(',');
          await audit.record(tx, { action: 'user.updated', actorId: principal.userId, targetId: id, details: { fields } }, origin);
          if (before.role !== row.role) {
            await audit.record(tx, { action: 'user.role_changed', actorId: principal.userId, targetId: id, details: { from: before.role, to: row.role } }, origin);
          }
        }
        const updated = toUser(toUserState(row));
        const events: NewUserEvent[] = [{ type: 'user.updated', subject: `users/${id}`, data: { ...updated } }];
        if (previousRole !== undefined && previousRole !== updated.role) {
          events.push({ type: 'user.role_changed', subject: `users/${id}`, data: { id, role: updated.role, previousRole } });
        }
        await emit(tx, events, origin);
        return updated;
      });
      forget(id);
      if (!user) throw notFound('User');
      outbox?.committed();
      return user;
    },

    async delete(principal, rawId, origin) {
      const id = rawId.toLowerCase();
      authorize(principal, 'users:delete', [id], 'User');
      await database.transaction(async (tx) => {
        // Locked first, as every write that must not outlive the user locks it (lockLiveUser): the
        // hooks below then see whatever such a write committed, and none can start until this ends.
        if (!(await repo.lockLiveUser(tx, id))) throw notFound('User');
        for (const hook of deletionHooks) await hook(tx, id, origin);
        const at = now();
        if (!(await repo.softDeleteUser(tx, id, at))) throw notFound('User');
        await emit(tx, [{ type: 'user.deleted', subject: `users/${id}`, data: { id, deletedAt: at.toISOString() } }], origin);
        await audit?.record(tx, { action: 'user.deleted', actorId: principal.userId, targetId: id }, origin);
      });
      forget(id);
      outbox?.committed();
    },

    getState,

    async verifyCredentials(email, password) {
      const row = await repo.findCredentialsByEmail(db, email);
      if (!row || row.password_hash === NO_PASSWORD_HASH) {
        await passwords.verifyAgainstDummy(password);
        return null;
      }
      const check = await passwords.verify(row.password_hash, password);
      if (!check.ok) return null;
      if (pauseAfterPasswordCheck) await pauseAfterPasswordCheck(row.id);
      if (check.needsRehash) await upgradeHash(row, password);
      return toUserState(row);
    },

    async changePassword(userId, currentPassword, newPassword, also, origin) {
      await refuseCommonPassword(newPassword);
      let newHash: string | undefined;
      for (let attempt = 1; ; attempt++) {
        const storedHash = await repo.findPasswordHash(db, userId);
        if (storedHash === undefined) throw notFound('User');
        if (!(await passwords.verify(storedHash, currentPassword)).ok) throw invalidCurrentPassword();
        newHash ??= await passwords.hash(newPassword);
        if (pauseAfterPasswordCheck) await pauseAfterPasswordCheck(userId);
        const row = await replaceHash(userId, storedHash, newHash, also, origin);
        if (row) {
          forget(userId);
          return toUserState(row);
        }
        // The hash changed since it was checked. Checking again tells a concurrent change (the current
        // password no longer matches: 403) from a login's re-hash of the same password (try again).
        if (attempt === MAX_PASSWORD_CHANGE_ATTEMPTS) throw invalidCurrentPassword();
      }
    },

    async revokeAccessTokens(userId, also) {
      await database.transaction(async (tx) => {
        if (!(await repo.bumpTokenVersion(tx, userId))) throw notFound('User');
        if (also) await also(tx, userId);
      });
      forget(userId);
    },

    onDelete(hook) {
      deletionHooks.push(hook);
    },

    onRegistered(hook) {
      registeredHooks.push(hook);
    },

    async confirmEmail(claim, also, origin) {
      const user = await database.transaction(async (tx) => {
        const claimed = await claim(tx);
        if (!claimed) return undefined;
        const row = await repo.markEmailVerified(tx, claimed.userId, claimed.email, now());
        if (!row) return undefined;
        const verified = toUser(toUserState(row));
        await emit(tx, [{ type: 'user.updated', subject: `users/${verified.id}`, data: { ...verified } }], origin);
        await audit?.record(tx, { action: 'user.email_verified', actorId: verified.id, targetId: verified.id }, origin);
        if (also) await also(tx, verified.id, origin);
        return verified;
      });
      if (!user) return undefined;
      forget(user.id);
      outbox?.committed();
      return user;
    },

    async resetPassword(claim, newPassword, also, origin) {
      await refuseCommonPassword(newPassword);
      // Hashed before the transaction, which then holds no lock while argon2 runs.
      const newHash = await passwords.hash(newPassword);
      const row = await database.transaction(async (tx) => {
        const claimed = await claim(tx);
        if (!claimed) return undefined;
        const updated = await repo.resetPasswordHash(tx, claimed.userId, newHash, now());
        if (!updated) return undefined;
        if (also) await also(tx, updated.id, origin);
        await audit?.record(tx, { action: 'user.password_reset', actorId: updated.id, targetId: updated.id }, origin);
        return updated;
      });
      if (!row) return undefined;
      forget(row.id);
      return toUserState(row);
    },

    lockLiveUser: (tx, userId) => repo.lockLiveUser(tx, userId),

    lockLiveUserByEmail: (tx, email) => repo.lockLiveUserIdByEmail(tx, email),

    registerExternal: (input, also, origin) => insert({ ...input, password: null, role: 'user' }, origin, undefined, also),

    async ensureAdmin(email, password) {
      if (await repo.liveAdminExists(db)) return 'exists';
      try {
        await insert({ email: canonicalEmail(email), name: 'Administrator', password, role: 'admin' }, undefined, null);
        return 'created';
      } catch (error) {
        // Another instance starting at the same moment created it first.
        if (error instanceof DomainError && error.code === 'EMAIL_TAKEN') return 'exists';
        throw error;
      }
    },
  };
}
