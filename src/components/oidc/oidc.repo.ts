// All SQL of the oidc component.
import { sql, type Generated } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

interface OidcFlowsTable {
  state_hash: Buffer;
  provider: string;
  code_verifier: string;
  nonce: string;
  redirect_uri: string;
  created_at: Generated<Date>;
  expires_at: Date;
  used_at: Date | null;
}

interface UserIdentitiesTable {
  provider: string;
  subject: string;
  user_id: string;
  email: string | null;
  created_at: Generated<Date>;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    oidc_flows: OidcFlowsTable;
    user_identities: UserIdentitiesTable;
  }
}

export interface NewFlow {
  readonly stateHash: Buffer;
  readonly provider: string;
  readonly codeVerifier: string;
  readonly nonce: string;
  readonly redirectUri: string;
  readonly ttlSeconds: number;
}

export async function insertFlow(executor: Executor, flow: NewFlow): Promise<void> {
  await executor
    .insertInto('oidc_flows')
    .values({
      state_hash: flow.stateHash,
      provider: flow.provider,
      code_verifier: flow.codeVerifier,
      nonce: flow.nonce,
      redirect_uri: flow.redirectUri,
      expires_at: sql<Date>`now() + make_interval(secs => ${flow.ttlSeconds})`,
    })
    .execute();
}

export interface SpentFlow {
  readonly codeVerifier: string;
  readonly nonce: string;
  readonly redirectUri: string;
}

/**
 * Spends the provider's unused, unexpired flow with this state hash, in one statement: of two
 * callbacks racing with one state, one gets the flow and the other nothing.
 */
export async function spendFlow(executor: Executor, stateHash: Buffer, provider: string): Promise<SpentFlow | undefined> {
  const row = await executor
    .updateTable('oidc_flows')
    .set({ used_at: sql<Date>`now()` })
    .where('state_hash', '=', stateHash)
    .where('provider', '=', provider)
    .where('used_at', 'is', null)
    .where('expires_at', '>', sql<Date>`now()`)
    .returning(['code_verifier', 'nonce', 'redirect_uri'])
    .executeTakeFirst();
  return row && { codeVerifier: row.code_verifier, nonce: row.nonce, redirectUri: row.redirect_uri };
}

/** Deletes flows that expired more than `graceSeconds` ago, at most `limit`; resolves to how many. */
export async function deleteExpiredFlows(executor: Executor, graceSeconds: number, limit: number): Promise<number> {
  const result = await executor
    .deleteFrom('oidc_flows')
    .where(
      'state_hash',
      'in',
      executor
        .selectFrom('oidc_flows')
        .select('state_hash')
        .where('expires_at', '<', sql<Date>`now() - make_interval(secs => ${graceSeconds})`)
        .limit(limit),
    )
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/**
 * The user a provider's subject logs in as: `live` false when that user was deleted (a row the
 * deletion hook did not remove, e.g. written before it was wired).
 */
export async function findIdentity(
  executor: Executor,
  provider: string,
  subject: string,
): Promise<{ userId: string; live: boolean } | undefined> {
  const row = await executor
    .selectFrom('user_identities')
    .innerJoin('users', 'users.id', 'user_identities.user_id')
    .select(['user_identities.user_id', sql<boolean>`users.deleted_at is null`.as('live')])
    .where('user_identities.provider', '=', provider)
    .where('user_identities.subject', '=', subject)
    .executeTakeFirst();
  return row && { userId: row.user_id, live: row.live };
}

/** Removes an identity whose user was deleted, so the subject can start afresh. */
export async function deleteIdentityOfDeletedUser(executor: Executor, provider: string, subject: string): Promise<void> {
  await executor
    .deleteFrom('user_identities')
    .where('provider', '=', provider)
    .where('subject', '=', subject)
    .where('user_id', 'in', executor.selectFrom('users').select('id').where('deleted_at', 'is not', null))
    .execute();
}

/**
 * Ties (provider, subject) to a user unless it already is tied (to anyone): false then. On PostgreSQL
 * a concurrent insert of the same pair makes this one wait for it and then see it.
 */
export async function insertIdentity(
  executor: Executor,
  identity: { provider: string; subject: string; userId: string; email: string | null },
): Promise<boolean> {
  const row = await executor
    .insertInto('user_identities')
    .values({ provider: identity.provider, subject: identity.subject, user_id: identity.userId, email: identity.email })
    .onConflict((conflict) => conflict.columns(['provider', 'subject']).doNothing())
    .returning('user_id')
    .executeTakeFirst();
  return row !== undefined;
}

export async function deleteIdentitiesOfUser(executor: Executor, userId: string): Promise<void> {
  await executor.deleteFrom('user_identities').where('user_id', '=', userId).execute();
}
