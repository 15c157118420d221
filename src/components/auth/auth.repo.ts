// All SQL of the auth component: signing keys, server secrets and refresh-token families.
import { sql, type Generated, type RawBuilder } from 'kysely';
import type { Executor } from '../../platform/db/index.js';
import { isLiveAtTokenVersion } from '../users/index.js';

interface SigningKeysTable {
  kid: string;
  algorithm: string;
  public_jwk: Record<string, unknown>;
  private_jwk: Record<string, unknown>;
  created_at: Generated<Date>;
  retired_at: Date | null;
}

interface AuthSecretsTable {
  name: string;
  secret: Uint8Array;
  created_at: Generated<Date>;
}

interface RefreshTokensTable {
  id: string;
  family_id: string;
  user_id: string;
  token_hash: Uint8Array;
  parent_id: string | null;
  /** users.token_version when the family started: a token of an older version is refused. */
  token_version: number;
  created_at: Generated<Date>;
  expires_at: Date;
  rotated_at: Date | null;
  revoked_at: Date | null;
}

interface SessionsTable {
  /** The refresh-token family's id; access tokens carry it as `sid`. */
  id: string;
  user_id: string;
  created_at: Generated<Date>;
  user_agent: string | null;
  ip: string | null;
  revoked_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    signing_keys: SigningKeysTable;
    auth_secrets: AuthSecretsTable;
    refresh_tokens: RefreshTokensTable;
    sessions: SessionsTable;
  }
}

// ---- signing keys ----

/** Keys that may still verify a token: unretired, or retired less than `graceSeconds` ago. */
export interface SigningKeyRow {
  kid: string;
  algorithm: string;
  public_jwk: Record<string, unknown>;
  private_jwk: Record<string, unknown>;
  retired_at: Date | null;
}

export async function listVerifyingKeys(executor: Executor, graceSeconds: number): Promise<SigningKeyRow[]> {
  return executor
    .selectFrom('signing_keys')
    .select(['kid', 'algorithm', 'public_jwk', 'private_jwk', 'retired_at'])
    .where((eb) =>
      eb.or([
        eb('retired_at', 'is', null),
        eb('retired_at', '>', sql<Date>`now() - make_interval(secs => ${graceSeconds})`),
      ]),
    )
    .orderBy('created_at', 'desc')
    .execute();
}

export async function insertSigningKey(
  executor: Executor,
  key: { kid: string; algorithm: string; public_jwk: Record<string, unknown>; private_jwk: Record<string, unknown> },
): Promise<void> {
  // JSON is passed as text and cast, so both drivers (pg and PGlite) store the same jsonb.
  await executor
    .insertInto('signing_keys')
    .values({
      kid: key.kid,
      algorithm: key.algorithm,
      public_jwk: sql<Record<string, unknown>>`${JSON.stringify(key.public_jwk)}::jsonb`,
      private_jwk: sql<Record<string, unknown>>`${JSON.stringify(key.private_jwk)}::jsonb`,
    })
    .execute();
}

export async function listPrivateKeys(executor: Executor): Promise<Array<{ kid: string; private_jwk: Record<string, unknown> }>> {
  return executor.selectFrom('signing_keys').select(['kid', 'private_jwk']).execute();
}

export async function replacePrivateKey(executor: Executor, kid: string, privateJwk: Record<string, unknown>): Promise<void> {
  await executor
    .updateTable('signing_keys')
    .set({ private_jwk: sql<Record<string, unknown>>`${JSON.stringify(privateJwk)}::jsonb` })
    .where('kid', '=', kid)
    .execute();
}

export async function retireSigningKeysExcept(executor: Executor, kid: string): Promise<void> {
  await executor
    .updateTable('signing_keys')
    .set({ retired_at: sql<Date>`now()` })
    .where('kid', '!=', kid)
    .where('retired_at', 'is', null)
    .execute();
}

// ---- secrets ----

export async function findSecret(executor: Executor, name: string): Promise<Uint8Array | undefined> {
  const row = await executor.selectFrom('auth_secrets').select('secret').where('name', '=', name).executeTakeFirst();
  return row?.secret;
}

export async function replaceSecret(executor: Executor, name: string, secret: Uint8Array): Promise<void> {
  await executor.updateTable('auth_secrets').set({ secret }).where('name', '=', name).execute();
}

export async function insertSecretIfAbsent(executor: Executor, name: string, secret: Uint8Array): Promise<void> {
  await executor
    .insertInto('auth_secrets')
    .values({ name, secret })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
}

// ---- refresh tokens ----

/**
 * Starts a session (a family) with its first token, only if the user is still live at the version the
 * login was checked under, in the same statement: false (nothing written) when a password change,
 * logout-all or deletion committed since.
 */
export async function insertSession(
  executor: Executor,
  token: {
    id: string;
    familyId: string;
    userId: string;
    tokenVersion: number;
    tokenHash: Uint8Array;
    ttlSeconds: number;
    userAgent: string | null;
    ip: string | null;
  },
): Promise<boolean> {
  const result = await sql<{ id: string }>`
    with session as (
      insert into sessions (id, user_id, user_agent, ip)
      select ${token.familyId}::uuid, ${token.userId}::uuid, ${token.userAgent}, ${token.ip}
      where ${isLiveAtTokenVersion(token.userId, token.tokenVersion)}
      returning id, user_id
    )
    insert into refresh_tokens (id, family_id, user_id, token_hash, parent_id, token_version, expires_at)
    select ${token.id}::uuid, session.id, session.user_id, ${token.tokenHash}, null,
           ${token.tokenVersion}::integer, now() + make_interval(secs => ${token.ttlSeconds})
    from session
    returning id`.execute(executor);
  return result.rows.length > 0;
}

/**
 * The session of a family was not ended. Read with the statement's snapshot: a successor that a
 * rotation inserted while a revocation committed escapes the revocation's update (READ COMMITTED),
 * and this check refuses it at its next use instead.
 */
const sessionLive = (familyId: RawBuilder<unknown> | ReturnType<typeof sql.ref>) =>
  sql<boolean>`not exists (select 1 from sessions ended where ended.id = ${familyId} and ended.revoked_at is not null)`;

interface RotatedToken {
  readonly id: string;
  readonly familyId: string;
  readonly userId: string;
  readonly tokenVersion: number;
}

/**
 * Spends the presented token and inserts its successor in ONE statement: of any number of
 * concurrent rotations of one token exactly one matches `rotated_at is null` (the row lock
 * serialises them, and the loser re-reads the spent row), and parent_id is unique besides.
 * A token whose user moved to another version or was deleted is not spent: under READ COMMITTED a
 * successor inserted while a logout-all commits can escape its revoke, and the version still kills it.
 */
export async function rotateRefreshToken(
  executor: Executor,
  input: { presentedHash: Uint8Array; successorId: string; successorHash: Uint8Array; ttlSeconds: number },
): Promise<RotatedToken | undefined> {
  const result = await sql<{ id: string; family_id: string; user_id: string; token_version: number }>`
    with spent as (
      update refresh_tokens set rotated_at = now()
      where token_hash = ${input.presentedHash}
        and rotated_at is null and revoked_at is null and expires_at > now()
        and ${isLiveAtTokenVersion(sql.ref('refresh_tokens.user_id'), sql.ref('refresh_tokens.token_version'))}
        and ${sessionLive(sql.ref('refresh_tokens.family_id'))}
      returning id, family_id, user_id, token_version
    )
    insert into refresh_tokens (id, family_id, user_id, token_hash, parent_id, token_version, expires_at)
    select ${input.successorId}::uuid, family_id, user_id, ${input.successorHash}, id, token_version,
           now() + make_interval(secs => ${input.ttlSeconds})
    from spent
    returning id, family_id, user_id, token_version`.execute(executor);
  const row = result.rows[0];
  return row ? { id: row.id, familyId: row.family_id, userId: row.user_id, tokenVersion: row.token_version } : undefined;
}

interface PresentedToken {
  readonly familyId: string;
  readonly userId: string;
  readonly tokenVersion: number;
  /** The user is live at the token's version and its session was not ended (read in the same statement as the token). */
  readonly userCurrent: boolean;
  readonly revoked: boolean;
  readonly expired: boolean;
  /** Seconds since this token was spent by a rotation, or null if it never was. */
  readonly secondsSinceRotation: number | null;
  readonly successorHash: Uint8Array | null;
  readonly successorRevoked: boolean;
}

export async function findPresentedToken(executor: Executor, tokenHash: Uint8Array): Promise<PresentedToken | undefined> {
  const result = await sql<{
    family_id: string;
    user_id: string;
    token_version: number;
    user_current: boolean;
    revoked: boolean;
    expired: boolean;
    seconds_since_rotation: number | null;
    successor_hash: Uint8Array | null;
    successor_revoked: boolean | null;
  }>`
    select t.family_id, t.user_id, t.token_version,
           ${isLiveAtTokenVersion(sql.ref('t.user_id'), sql.ref('t.token_version'))} and ${sessionLive(sql.ref('t.family_id'))} as user_current,
           t.revoked_at is not null as revoked,
           t.expires_at <= now() as expired,
           extract(epoch from now() - t.rotated_at)::float8 as seconds_since_rotation,
           s.token_hash as successor_hash,
           s.revoked_at is not null as successor_revoked
    from refresh_tokens t
    left join refresh_tokens s on s.parent_id = t.id
    where t.token_hash = ${tokenHash}`.execute(executor);
  const row = result.rows[0];
  if (!row) return undefined;
  return {
    familyId: row.family_id,
    userId: row.user_id,
    tokenVersion: row.token_version,
    userCurrent: row.user_current,
    revoked: row.revoked,
    expired: row.expired,
    secondsSinceRotation: row.seconds_since_rotation,
    successorHash: row.successor_hash,
    successorRevoked: row.successor_revoked === true,
  };
}

// Ending sessions: the refresh tokens first, then the session rows, each its own statement, always in
// that order. A rotation locks a token row; were a revoke to lock the session row first (a statement's
// CTEs run in no fixed order), a rotation and a revoke could each wait for the other's lock.

/** Ends a session (in the caller's transaction): its refresh tokens revoked, the session marked, so its access tokens stop too. */
export async function revokeFamily(executor: Executor, familyId: string): Promise<void> {
  await executor
    .updateTable('refresh_tokens')
    .set({ revoked_at: sql<Date>`now()` })
    .where('family_id', '=', familyId)
    .where('revoked_at', 'is', null)
    .execute();
  await executor
    .updateTable('sessions')
    .set({ revoked_at: sql<Date>`now()` })
    .where('id', '=', familyId)
    .where('revoked_at', 'is', null)
    .execute();
}

/** The session (family) a refresh token belongs to, or undefined for an unknown token. */
export async function findFamilyOfToken(executor: Executor, tokenHash: Uint8Array): Promise<string | undefined> {
  const row = await executor.selectFrom('refresh_tokens').select('family_id').where('token_hash', '=', tokenHash).executeTakeFirst();
  return row?.family_id;
}

/** Every session of the user ends (logout-all, password change, deletion), in the caller's transaction. */
export async function revokeAllOfUser(executor: Executor, userId: string): Promise<void> {
  await executor
    .updateTable('refresh_tokens')
    .set({ revoked_at: sql<Date>`now()` })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .execute();
  await executor
    .updateTable('sessions')
    .set({ revoked_at: sql<Date>`now()` })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .execute();
}

// ---- sessions ----

export interface SessionRow {
  id: string;
  created_at: Date;
  /** When the session's newest refresh token was issued: its login or its last refresh. */
  last_used_at: Date;
  user_agent: string | null;
  ip: string | null;
}

/**
 * The user's live sessions, newest first, after `before`: not revoked, with a refresh token that is
 * neither revoked nor expired and was issued under the user's current token version.
 */
export async function listLiveSessions(
  executor: Executor,
  userId: string,
  page: { limit: number; before: { createdAt: Date; id: string } | null },
): Promise<SessionRow[]> {
  const after = page.before
    ? sql`and (s.created_at, s.id) < (${page.before.createdAt}::timestamptz, ${page.before.id}::uuid)`
    : sql``;
  const result = await sql<SessionRow>`
    select s.id, s.created_at, s.user_agent, s.ip,
           (select max(t.created_at) from refresh_tokens t where t.family_id = s.id) as last_used_at
    from sessions s
    where s.user_id = ${userId}::uuid and s.revoked_at is null ${after}
      and exists (
        select 1 from refresh_tokens t
        where t.family_id = s.id and t.revoked_at is null and t.expires_at > now()
          and ${isLiveAtTokenVersion(sql.ref('t.user_id'), sql.ref('t.token_version'))}
      )
    order by s.created_at desc, s.id desc
    limit ${page.limit}`.execute(executor);
  return result.rows;
}

/** Whether the user has this session (someone else's, or none: false). */
export async function sessionBelongsTo(executor: Executor, userId: string, sessionId: string): Promise<boolean> {
  const row = await executor.selectFrom('sessions').select('id').where('id', '=', sessionId).where('user_id', '=', userId).executeTakeFirst();
  return row !== undefined;
}

/** Whether a session is live for access tokens (not revoked), or undefined if there is no such session. */
export async function findSessionState(executor: Executor, sessionId: string): Promise<{ userId: string; revoked: boolean } | undefined> {
  const row = await executor
    .selectFrom('sessions')
    .select(['user_id', 'revoked_at'])
    .where('id', '=', sessionId)
    .executeTakeFirst();
  return row ? { userId: row.user_id, revoked: row.revoked_at !== null } : undefined;
}

/**
 * Deletes up to `limit` refresh-token families none of whose tokens is still unexpired, each family
 * whole in one statement (a token's parent is in its family, and the foreign key is checked at the
 * statement's end). Uses the expires_at and family_id indexes.
 */
export async function deleteExpiredFamilies(executor: Executor, limit: number): Promise<{ rows: number; families: number }> {
  const result = await sql<{ rows: number; families: number }>`
    with dead as (
      select distinct expired.family_id
      from refresh_tokens expired
      where expired.expires_at <= now()
        and not exists (
          select 1 from refresh_tokens live where live.family_id = expired.family_id and live.expires_at > now()
        )
      limit ${limit}
    ),
    tokens as (delete from refresh_tokens where family_id in (select family_id from dead) returning 1),
    ended as (delete from sessions where id in (select family_id from dead) returning 1)
    select (select count(*) from tokens)::integer as rows, (select count(*) from ended)::integer as families`.execute(executor);
  const row = result.rows[0];
  return { rows: row?.rows ?? 0, families: row?.families ?? 0 };
}
