// All SQL of the api-keys component. Keys are found by their secret's SHA-256 (never the secret);
// revocations return the hash (hex) so that the service can drop the cached state everywhere.
import { sql } from 'kysely';
import type { CursorPosition } from '../../platform/cursor.js';
import type { Executor } from '../../platform/db/index.js';
import type { ApiKeyScope } from '../access/index.js';

interface ApiKeysTable {
  id: string;
  owner_id: string;
  name: string;
  prefix: string;
  secret_hash: Uint8Array;
  scopes: string[];
  created_at: Date;
  expires_at: Date | null;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    api_keys: ApiKeysTable;
  }
}

/** A key as lists show it (no hash, no owner: the caller asked for one owner's keys). */
export interface ApiKeyRow {
  readonly id: string;
  readonly owner_id: string;
  readonly name: string;
  readonly prefix: string;
  readonly scopes: string[];
  readonly created_at: Date;
  readonly expires_at: Date | null;
  readonly last_used_at: Date | null;
}

/** What authentication needs of a live (not revoked) key. */
export interface ApiKeyStateRow {
  readonly id: string;
  readonly owner_id: string;
  readonly scopes: string[];
  readonly expires_at: Date | null;
}

/** A revoked key: its id, and its hash in hex (the cache key of its state). */
export interface RevokedKeyRow {
  readonly id: string;
  readonly owner_id: string;
  readonly hash_hex: string;
}

const ROW_COLUMNS = ['id', 'owner_id', 'name', 'prefix', 'scopes', 'created_at', 'expires_at', 'last_used_at'] as const;

/** A text[] literal; every element is a UUID, an ISO time or a scope, none of which needs quoting. */
const arrayLiteral = (values: readonly string[]): string => `{${values.join(',')}}`;

export async function insertKey(
  executor: Executor,
  key: {
    id: string;
    ownerId: string;
    name: string;
    prefix: string;
    secretHash: Buffer;
    scopes: readonly ApiKeyScope[];
    expiresAt: Date | null;
  },
): Promise<ApiKeyRow> {
  const result = await sql<ApiKeyRow>`
    insert into api_keys (id, owner_id, name, prefix, secret_hash, scopes, expires_at)
    values (${key.id}::uuid, ${key.ownerId}::uuid, ${key.name}, ${key.prefix}, ${key.secretHash}, ${arrayLiteral(key.scopes)}::text[],
            ${key.expiresAt}::timestamptz)
    returning id, owner_id, name, prefix, scopes, created_at, expires_at, last_used_at`.execute(executor);
  const row = result.rows[0];
  if (!row) throw new Error('api-keys: insert returned no row');
  return row;
}

/** The owner's live keys, newest first, strictly after `before` when given. */
export async function listLiveKeys(executor: Executor, ownerId: string, page: { limit: number; before: CursorPosition | null }): Promise<ApiKeyRow[]> {
  let query = executor
    .selectFrom('api_keys')
    .select(ROW_COLUMNS)
    .where('owner_id', '=', ownerId)
    .where('revoked_at', 'is', null);
  if (page.before) {
    const { createdAt, id } = page.before;
    query = query.where(sql<boolean>`(created_at, id) < (${createdAt}::timestamptz, ${id}::uuid)`);
  }
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(page.limit).execute();
}

export async function findLiveKeyByHash(executor: Executor, secretHash: Buffer): Promise<ApiKeyStateRow | undefined> {
  return executor
    .selectFrom('api_keys')
    .select(['id', 'owner_id', 'scopes', 'expires_at'])
    .where('secret_hash', '=', secretHash)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
}

/**
 * Revokes a live key in one statement; with `ownerId`, only if it is that owner's (someone else's
 * key is left alone and reported absent). Undefined when there was no such live key.
 */
export async function revokeKey(executor: Executor, id: string, ownerId: string | undefined): Promise<RevokedKeyRow | undefined> {
  const ofOwner = ownerId === undefined ? sql`` : sql`and owner_id = ${ownerId}::uuid`;
  const result = await sql<RevokedKeyRow>`
    update api_keys set revoked_at = now()
    where id = ${id}::uuid and revoked_at is null ${ofOwner}
    returning id, owner_id, encode(secret_hash, 'hex') as hash_hex`.execute(executor);
  return result.rows[0];
}

/** Revokes every live key of the owner (in the owner's deletion). */
export async function revokeKeysOfOwner(executor: Executor, ownerId: string): Promise<RevokedKeyRow[]> {
  const result = await sql<RevokedKeyRow>`
    update api_keys set revoked_at = now()
    where owner_id = ${ownerId}::uuid and revoked_at is null
    returning id, owner_id, encode(secret_hash, 'hex') as hash_hex`.execute(executor);
  return result.rows;
}

/**
 * One statement for a batch of uses. greatest() so that an older batch (another instance's, a
 * delayed flush) never moves last_used_at back; it ignores the NULL of a never-used key.
 */
export async function recordLastUses(executor: Executor, uses: ReadonlyArray<{ id: string; usedAt: Date }>): Promise<number> {
  if (uses.length === 0) return 0;
  const result = await sql`
    update api_keys k set last_used_at = greatest(k.last_used_at, u.used_at)
    from unnest(${arrayLiteral(uses.map((use) => use.id))}::uuid[], ${arrayLiteral(uses.map((use) => use.usedAt.toISOString()))}::timestamptz[])
      as u (id, used_at)
    where k.id = u.id`.execute(executor);
  return Number(result.numAffectedRows ?? 0);
}
