// All SQL of the email-flows component: single-use mailed tokens, stored as SHA-256 hashes only.
import { sql } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

export type TokenPurpose = 'verify' | 'reset';

interface EmailTokensTable {
  id: string;
  user_id: string;
  purpose: TokenPurpose;
  email: string;
  token_hash: Uint8Array;
  created_at: Date;
  expires_at: Date;
  used_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    email_tokens: EmailTokensTable;
  }
}

export interface IssuedFor {
  readonly userId: string;
  readonly email: string;
}

/** Stores a token for a known, live user (verification): false if the user is gone. */
export async function insertTokenForUser(
  executor: Executor,
  token: { id: string; userId: string; purpose: TokenPurpose; tokenHash: Uint8Array; ttlSeconds: number },
): Promise<IssuedFor | undefined> {
  const result = await sql<{ user_id: string; email: string }>`
    insert into email_tokens (id, user_id, purpose, email, token_hash, expires_at)
    select ${token.id}::uuid, u.id, ${token.purpose}, u.email, ${token.tokenHash}, now() + make_interval(secs => ${token.ttlSeconds})
    from users u
    where u.id = ${token.userId}::uuid and u.deleted_at is null
    returning user_id, email`.execute(executor);
  const row = result.rows[0];
  return row ? { userId: row.user_id, email: row.email } : undefined;
}

/**
 * Stores a token for the live user with this email, if there is one, in one statement that does the
 * same lookup either way: a request for an unknown email runs the very same work, minus the row.
 * At most `maxPerHour` tokens of this purpose per user an hour (no mailbox flooding): beyond, nothing.
 */
export async function insertTokenForEmail(
  executor: Executor,
  token: { id: string; email: string; purpose: TokenPurpose; tokenHash: Uint8Array; ttlSeconds: number; maxPerHour: number },
): Promise<IssuedFor | undefined> {
  const result = await sql<{ user_id: string; email: string }>`
    insert into email_tokens (id, user_id, purpose, email, token_hash, expires_at)
    select ${token.id}::uuid, u.id, ${token.purpose}, u.email, ${token.tokenHash}, now() + make_interval(secs => ${token.ttlSeconds})
    from users u
    where lower(u.email) = ${token.email} and u.deleted_at is null
      and (
        select count(*) from email_tokens t
        where t.user_id = u.id and t.purpose = ${token.purpose} and t.created_at > now() - interval '1 hour'
      ) < ${token.maxPerHour}
    returning user_id, email`.execute(executor);
  const row = result.rows[0];
  return row ? { userId: row.user_id, email: row.email } : undefined;
}

/**
 * Spends a token: the check (unused, unexpired, this purpose) and the write are one statement, so of
 * two concurrent redemptions exactly one gets the row back.
 */
export async function consumeToken(executor: Executor, tokenHash: Uint8Array, purpose: TokenPurpose): Promise<IssuedFor | undefined> {
  const row = await executor
    .updateTable('email_tokens')
    .set({ used_at: sql<Date>`now()` })
    .where('token_hash', '=', tokenHash)
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .where('expires_at', '>', sql<Date>`now()`)
    .returning(['user_id', 'email'])
    .executeTakeFirst();
  return row ? { userId: row.user_id, email: row.email } : undefined;
}

/** Spends every unused token of this purpose the user still has (after a reset: the earlier links die). */
export async function spendTokensOfUser(executor: Executor, userId: string, purpose: TokenPurpose): Promise<void> {
  await executor
    .updateTable('email_tokens')
    .set({ used_at: sql<Date>`now()` })
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .execute();
}

/** Deletes tokens that expired more than `graceSeconds` ago, at most `limit` per call; the count deleted. */
export async function deleteExpiredTokens(executor: Executor, graceSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from email_tokens
    where id in (
      select id from email_tokens where expires_at < now() - make_interval(secs => ${graceSeconds}) limit ${limit}
    )`.execute(executor);
  return Number(result.numAffectedRows ?? 0n);
}
