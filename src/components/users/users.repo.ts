// All SQL of the users component.
import { sql, type Expression, type RawBuilder } from 'kysely';
import type { Role } from '../access/index.js';
import { sqlState, UNIQUE_VIOLATION, type Executor } from '../../platform/db/index.js';
import { emailTaken } from './users.errors.js';

interface UsersTable {
  id: string;
  email: string;
  name: string;
  role: Role;
  password_hash: string;
  token_version: number;
  email_verified: boolean;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    users: UsersTable;
  }
}

export type UserRow = Omit<UsersTable, 'password_hash' | 'deleted_at'>;
const USER_COLUMNS = ['id', 'email', 'name', 'role', 'token_version', 'email_verified', 'created_at', 'updated_at'] as const;

function rethrowUnique(error: unknown): never {
  if (sqlState(error) === UNIQUE_VIOLATION) throw emailTaken();
  throw error;
}

export async function insertUser(
  executor: Executor,
  user: Omit<UsersTable, 'deleted_at' | 'token_version' | 'email_verified'>,
): Promise<UserRow> {
  try {
    return await executor
      .insertInto('users')
      .values({ ...user, token_version: 0, email_verified: false, deleted_at: null })
      .returning(USER_COLUMNS)
      .executeTakeFirstOrThrow();
  } catch (error) {
    rethrowUnique(error);
  }
}

export async function findLiveUserById(executor: Executor, id: string): Promise<UserRow | undefined> {
  return executor
    .selectFrom('users')
    .select(USER_COLUMNS)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
}

/** The live users among `ids` (lower-case UUIDs), in no particular order: one statement for the whole batch. */
export async function findLiveUsersByIds(executor: Executor, ids: readonly string[]): Promise<UserRow[]> {
  if (ids.length === 0) return []; // `in ()` is not SQL
  return executor
    .selectFrom('users')
    .select(USER_COLUMNS)
    .where('id', 'in', ids)
    .where('deleted_at', 'is', null)
    .execute();
}

export async function findCredentialsByEmail(
  executor: Executor,
  email: string,
): Promise<(UserRow & { password_hash: string }) | undefined> {
  return executor
    .selectFrom('users')
    .select([...USER_COLUMNS, 'password_hash'])
    .where(sql<string>`lower(email)`, '=', email.toLowerCase())
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
}

export async function findPasswordHash(executor: Executor, id: string): Promise<string | undefined> {
  const row = await executor
    .selectFrom('users')
    .select('password_hash')
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  return row?.password_hash;
}

export async function listLiveUsers(
  executor: Executor,
  page: { limit: number; offset: number },
): Promise<{ rows: UserRow[]; total: number }> {
  const [rows, count] = await Promise.all([
    executor
      .selectFrom('users')
      .select(USER_COLUMNS)
      .where('deleted_at', 'is', null)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(page.limit)
      .offset(page.offset)
      .execute(),
    executor
      .selectFrom('users')
      .select(sql<number>`count(*)::int`.as('total'))
      .where('deleted_at', 'is', null)
      .executeTakeFirstOrThrow(),
  ]);
  return { rows, total: count.total };
}

export async function updateUser(
  executor: Executor,
  id: string,
  patch: { name?: string; email?: string; role?: Role; updated_at: Date },
): Promise<UserRow | undefined> {
  try {
    return await executor
      .updateTable('users')
      // A new address is not verified, whatever the old one was.
      .set((eb) => ({
        ...patch,
        ...(patch.email === undefined
          ? {}
          : { email_verified: eb.case().when('email', '=', patch.email).then(eb.ref('email_verified')).else(sql<boolean>`false`).end() }),
      }))
      .where('id', '=', id)
      .where('deleted_at', 'is', null)
      .returning(USER_COLUMNS)
      .executeTakeFirst();
  } catch (error) {
    rethrowUnique(error);
  }
}

/**
 * Replaces the password hash `replacing` with a new one, compare-and-set: nothing is written (undefined)
 * if the user is gone or another write changed the hash since `replacing` was read and checked. With
 * `revokeTokens` the token version moves on too.
 */
export async function setPasswordHash(
  executor: Executor,
  id: string,
  passwordHash: string,
  options: { replacing: string; revokeTokens: boolean; now: Date },
): Promise<UserRow | undefined> {
  return executor
    .updateTable('users')
    .set((eb) => ({
      password_hash: passwordHash,
      updated_at: options.now,
      ...(options.revokeTokens ? { token_version: eb('token_version', '+', 1) } : {}),
    }))
    .where('id', '=', id)
    .where('password_hash', '=', options.replacing)
    .where('deleted_at', 'is', null)
    .returning(USER_COLUMNS)
    .executeTakeFirst();
}

/**
 * SQL predicate: the user exists, is not deleted and is still at `tokenVersion`. Credentials issued under
 * a version (refresh tokens) embed it in the statement that writes them, so the check and the write see
 * one snapshot and a concurrent password change, logout-all or deletion cannot slip in between.
 */
export function isLiveAtTokenVersion(
  userId: Expression<string> | string,
  tokenVersion: Expression<number> | number,
): RawBuilder<boolean> {
  return sql<boolean>`exists (
    select 1 from users
    where users.id = ${userId} and users.token_version = ${tokenVersion} and users.deleted_at is null)`;
}

/** A password reset: the new hash whatever the old one was, and the token version moves on (logout-all). */
export async function resetPasswordHash(executor: Executor, id: string, passwordHash: string, now: Date): Promise<UserRow | undefined> {
  return executor
    .updateTable('users')
    .set((eb) => ({ password_hash: passwordHash, updated_at: now, token_version: eb('token_version', '+', 1) }))
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .returning(USER_COLUMNS)
    .executeTakeFirst();
}

/** Marks the live user's email verified if it is still `email`; updated_at moves only when the flag does. */
export async function markEmailVerified(executor: Executor, id: string, email: string, now: Date): Promise<UserRow | undefined> {
  return executor
    .updateTable('users')
    .set((eb) => ({
      email_verified: true,
      updated_at: eb.case().when('email_verified', '=', false).then(now).else(eb.ref('updated_at')).end(),
    }))
    .where('id', '=', id)
    .where('email', '=', email)
    .where('deleted_at', 'is', null)
    .returning(USER_COLUMNS)
    .executeTakeFirst();
}

export async function bumpTokenVersion(executor: Executor, id: string): Promise<UserRow | undefined> {
  return executor
    .updateTable('users')
    .set((eb) => ({ token_version: eb('token_version', '+', 1) }))
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .returning(USER_COLUMNS)
    .executeTakeFirst();
}

export async function softDeleteUser(executor: Executor, id: string, now: Date): Promise<boolean> {
  const result = await executor
    .updateTable('users')
    .set((eb) => ({ deleted_at: now, updated_at: now, token_version: eb('token_version', '+', 1) }))
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/**
 * Locks a live user's row until the transaction ends: FOR NO KEY UPDATE, so foreign-key checks of
 * rows referencing the user still pass while a deletion (an UPDATE) or another locker waits.
 */
export async function lockLiveUser(executor: Executor, id: string): Promise<boolean> {
  const row = await executor
    .selectFrom('users')
    .select('id')
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .forNoKeyUpdate()
    .executeTakeFirst();
  return row !== undefined;
}

export async function liveAdminExists(executor: Executor): Promise<boolean> {
  const row = await executor
    .selectFrom('users')
    .select('id')
    .where('role', '=', 'admin')
    .where('deleted_at', 'is', null)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/** lockLiveUser for the live user with this email (compared as the unique index does): its id, or undefined. */
export async function lockLiveUserIdByEmail(executor: Executor, email: string): Promise<string | undefined> {
  const row = await executor
    .selectFrom('users')
    .select('id')
    .where(sql<string>`lower(email)`, '=', email.toLowerCase())
    .where('deleted_at', 'is', null)
    .forNoKeyUpdate()
    .executeTakeFirst();
  return row?.id;
}

/** lockLiveUser, returning the role the user has under the lock (undefined: absent or deleted). */
export async function lockLiveUserRole(executor: Executor, id: string): Promise<Role | undefined> {
  const row = await executor
    .selectFrom('users')
    .select('role')
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .forNoKeyUpdate()
    .executeTakeFirst();
  return row?.role;
}
