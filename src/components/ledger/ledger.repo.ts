// All SQL of the ledger component. Money moves only through the ledger_execute / ledger_resolve
// functions (migrations/0003_ledger.sql, 0005_ledger_hardening.sql): one round trip that locks,
// checks and writes.
import { sql, type Generated } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

export interface AccountsTable {
  id: string;
  owner_id: string | null;
  currency: string;
  name: string | null;
  balance: Generated<number | bigint>;
  pending_debits: Generated<number | bigint>;
  created_at: Date;
  updated_at: Date;
  closed_at: Date | null;
}

export interface TransfersTable {
  id: string;
  kind: TransferKind;
  from_account_id: string;
  to_account_id: string;
  amount: number | bigint;
  currency: string;
  pending: boolean;
  pending_id: string | null;
  expires_at: Date | null;
  description: string | null;
  initiated_by: string | null;
  created_at: Date;
}

export interface SystemAccountShardsTable {
  account_id: string;
  shard: number;
  balance: number | bigint;
}

export interface EntriesTable {
  id: Generated<number>;
  transfer_id: string;
  account_id: string;
  amount: number | bigint;
  created_at: Date;
}

export interface IdempotencyKeysTable {
  principal_id: string;
  key: string;
  fingerprint: Uint8Array;
  status_code: number;
  response_body: string;
  created_at: Generated<Date>;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    accounts: AccountsTable;
    transfers: TransfersTable;
    system_account_shards: SystemAccountShardsTable;
    entries: EntriesTable;
    idempotency_keys: IdempotencyKeysTable;
  }
}

export type TransferKind = 'transfer' | 'deposit' | 'withdrawal' | 'post' | 'void' | 'expire';

export interface AccountRow extends Omit<AccountsTable, 'balance' | 'pending_debits' | 'closed_at'> {
  balance: number | bigint;
  pending_debits: number | bigint;
  /**
   * A system account's balance, summed from its shards, as decimal text: minus the sum of every user
   * balance in its currency, it can pass bigint's range (1,025 accounts at 2^53 - 1). Null for users.
   */
  system_balance: string | null;
}

/** An account, with the exact total of a system account's shards. */
const accountSelect = (executor: Executor) =>
  executor
    .selectFrom('accounts as a')
    .select([
      'a.id',
      'a.owner_id',
      'a.currency',
      'a.name',
      'a.balance',
      sql<string | null>`case when a.owner_id is null
        then coalesce((select sum(s.balance) from system_account_shards s where s.account_id = a.id), 0)::text
        end`.as('system_balance'),
      'a.pending_debits',
      'a.created_at',
      'a.updated_at',
    ])
    .where('a.closed_at', 'is', null);

/** The currency's system account, created with all its shard rows if it does not exist yet. */
export async function ensureSystemAccount(
  executor: Executor,
  input: { id: string; currency: string; shards: number; now: Date },
): Promise<void> {
  await sql`
    with created as (
      insert into accounts (id, owner_id, currency, name, created_at, updated_at)
      values (${input.id}::uuid, null, ${input.currency}, ${`System ${input.currency}`}, ${input.now}, ${input.now})
      on conflict (currency) where owner_id is null do nothing
      returning id
    )
    insert into system_account_shards (account_id, shard, balance)
    select created.id, shard, 0 from created cross join generate_series(0, ${input.shards - 1}::int) as shard`.execute(executor);
}

export async function insertAccount(
  executor: Executor,
  input: { id: string; ownerId: string; currency: string; name: string | null; now: Date },
): Promise<AccountRow> {
  const row = await executor
    .insertInto('accounts')
    .values({
      id: input.id,
      owner_id: input.ownerId,
      currency: input.currency,
      name: input.name,
      created_at: input.now,
      updated_at: input.now,
      closed_at: null,
    })
    .returning(['id', 'owner_id', 'currency', 'name', 'balance', 'pending_debits', 'created_at', 'updated_at'])
    .executeTakeFirstOrThrow();
  return { ...row, system_balance: null };
}

export async function findAccount(executor: Executor, id: string): Promise<AccountRow | undefined> {
  return accountSelect(executor).where('a.id', '=', id).executeTakeFirst();
}

export async function listAccounts(
  executor: Executor,
  filter: { ownerId?: string; system?: boolean },
  page: { limit: number; offset: number },
): Promise<{ rows: AccountRow[]; total: number }> {
  let rowsQuery = accountSelect(executor);
  let countQuery = executor.selectFrom('accounts as a').select(sql<number>`count(*)::int`.as('total')).where('a.closed_at', 'is', null);
  if (filter.system === true) {
    rowsQuery = rowsQuery.where('a.owner_id', 'is', null);
    countQuery = countQuery.where('a.owner_id', 'is', null);
  } else {
    rowsQuery = rowsQuery.where('a.owner_id', 'is not', null);
    countQuery = countQuery.where('a.owner_id', 'is not', null);
  }
  if (filter.ownerId !== undefined) {
    rowsQuery = rowsQuery.where('a.owner_id', '=', filter.ownerId);
    countQuery = countQuery.where('a.owner_id', '=', filter.ownerId);
  }
  const [rows, count] = await Promise.all([
    rowsQuery.orderBy('a.created_at', 'desc').orderBy('a.id', 'desc').limit(page.limit).offset(page.offset).execute(),
    countQuery.executeTakeFirstOrThrow(),
  ]);
  return { rows, total: count.total };
}

export type ExecuteOutcome =
  | 'OK'
  | 'ACCOUNT_NOT_FOUND'
  | 'COUNTERPARTY_NOT_FOUND'
  | 'CURRENCY_MISMATCH'
  | 'INSUFFICIENT_FUNDS'
  | 'BALANCE_LIMIT_EXCEEDED';

export const MOVE_OUTCOMES = [
  'OK',
  'ACCOUNT_NOT_FOUND',
  'COUNTERPARTY_NOT_FOUND',
  'CURRENCY_MISMATCH',
  'INSUFFICIENT_FUNDS',
  'BALANCE_LIMIT_EXCEEDED',
] as const satisfies readonly ExecuteOutcome[];

export type MoveOnceResult =
  | { result: 'in_progress' }
  | { result: 'key_reused' }
  | { result: 'replayed'; statusCode: number; body: string }
  | {
      result: 'executed';
      outcome: ExecuteOutcome;
      currency: string | null;
      fromAccountId: string | null;
      toAccountId: string | null;
      statusCode: number;
      body: string;
    };

export interface MoveInput {
  principalId: string;
  idempotency: { key: string; fingerprint: Uint8Array } | undefined;
  id: string;
  kind: 'transfer' | 'deposit' | 'withdrawal';
  accountId: string;
  counterpartyId: string | null;
  amount: number;
  description: string | null;
  pending: boolean;
  expiresAt: Date | null;
  actorSeesAll: boolean;
  shard: number;
  now: Date;
  /** Indexed like MOVE_OUTCOMES. */
  responses: readonly { statusCode: number; body: string }[];
}

interface MoveRow {
  result: MoveOnceResult['result'];
  outcome: ExecuteOutcome | null;
  currency: string | null;
  from_account_id: string | null;
  to_account_id: string | null;
  status_code: number | null;
  body: string | null;
}

function toMoveResult(row: MoveRow): MoveOnceResult {
  if (row.result === 'in_progress') return { result: 'in_progress' };
  if (row.result === 'key_reused') return { result: 'key_reused' };
  if (row.status_code === null || row.body === null) throw new Error('ledger move: no response');
  if (row.result === 'replayed') return { result: 'replayed', statusCode: row.status_code, body: row.body };
  if (row.outcome === null) throw new Error('ledger move: executed without an outcome');
  return {
    result: 'executed',
    outcome: row.outcome,
    currency: row.currency,
    fromAccountId: row.from_account_id,
    toAccountId: row.to_account_id,
    statusCode: row.status_code,
    body: row.body,
  };
}

/**
 * Many movements in one transaction (ledger_move_batch): one commit for all. Results come back in
 * the order of `inputs`.
 */
export async function moveBatch(executor: Executor, inputs: readonly MoveInput[], shard: number): Promise<MoveOnceResult[]> {
  const items = inputs.map((input) => ({
    principal: input.principalId,
    key: input.idempotency?.key ?? null,
    fingerprint: input.idempotency ? Buffer.from(input.idempotency.fingerprint).toString('hex') : null,
    id: input.id,
    kind: input.kind,
    accountId: input.accountId,
    counterpartyId: input.counterpartyId,
    amount: input.amount,
    description: input.description,
    pending: input.pending,
    expiresAt: input.expiresAt?.toISOString() ?? null,
    actorSeesAll: input.actorSeesAll,
    now: input.now.toISOString(),
    statuses: input.responses.map((response) => response.statusCode),
    bodies: input.responses.map((response) => response.body),
  }));
  const result = await sql<MoveRow & { item: number }>`
    select * from ledger_move_batch(${JSON.stringify(items)}::jsonb, ${shard}::smallint)`.execute(executor);
  const byItem = new Map(result.rows.map((row) => [row.item, row]));
  return inputs.map((_, index) => {
    const row = byItem.get(index + 1);
    if (!row) throw new Error(`ledger_move_batch returned no row for item ${index + 1}`);
    return toMoveResult(row);
  });
}

/**
 * One statement: idempotency lock and lookup, the movement, and the stored response.
 * `responses` is indexed like MOVE_OUTCOMES.
 */
export async function moveOnce(
  executor: Executor,
  input: MoveInput,
): Promise<MoveOnceResult> {
  const statuses = input.responses.map((response) => response.statusCode);
  const bodies = input.responses.map((response) => response.body);
  const result = await sql<MoveRow>`
    select * from ledger_move_once(${input.principalId}::uuid, ${input.idempotency?.key ?? null},
      ${input.idempotency ? Buffer.from(input.idempotency.fingerprint) : null}::bytea, ${input.id}::uuid, ${input.kind},
      ${input.accountId}::uuid, ${input.counterpartyId}::uuid, ${input.amount}::bigint, ${input.description},
      ${input.pending}, ${input.expiresAt}::timestamptz, ${input.actorSeesAll}, ${input.shard}::smallint,
      ${input.now}::timestamptz, ${statuses}::integer[], ${bodies}::text[])`.execute(executor);
  const row = result.rows[0];
  if (!row) throw new Error('ledger_move_once returned no row');
  return toMoveResult(row);
}

/** Currency and owner never change: they are safe to cache for an account's whole life. */
export async function findAccountMeta(
  executor: Executor,
  ids: readonly string[],
): Promise<{ id: string; currency: string; owner_id: string | null }[]> {
  if (ids.length === 0) return [];
  return executor.selectFrom('accounts').select(['id', 'currency', 'owner_id']).where('id', 'in', [...ids]).execute();
}

export async function findSystemAccountId(executor: Executor, currency: string): Promise<string | undefined> {
  const row = await executor
    .selectFrom('accounts')
    .select('id')
    .where('owner_id', 'is', null)
    .where('currency', '=', currency)
    .executeTakeFirst();
  return row?.id;
}

export type ResolveOutcome =
  | 'OK'
  | 'TRANSFER_NOT_FOUND'
  | 'PENDING_ALREADY_POSTED'
  | 'PENDING_ALREADY_VOIDED'
  | 'PENDING_EXPIRED'
  | 'AMOUNT_EXCEEDS_PENDING'
  | 'COUNTERPARTY_NOT_FOUND'
  | 'BALANCE_LIMIT_EXCEEDED';

export async function resolve(
  executor: Executor,
  input: {
    id: string;
    pendingId: string;
    action: 'post' | 'void' | 'expire';
    amount: number | null;
    actorId: string | null;
    actorSeesAll: boolean;
    shard: number;
    now: Date;
  },
): Promise<ResolveOutcome> {
  const result = await sql<{ outcome: ResolveOutcome }>`
    select outcome from ledger_resolve(${input.id}::uuid, ${input.pendingId}::uuid, ${input.action}, ${input.amount}::bigint,
      ${input.actorId}::uuid, ${input.actorSeesAll}, ${input.shard}::smallint, ${input.now}::timestamptz)`.execute(executor);
  const row = result.rows[0];
  if (!row) throw new Error('ledger_resolve returned no row');
  return row.outcome;
}

export interface TransferRow extends Omit<TransfersTable, 'initiated_by'> {
  /** For a pending transfer: how it was resolved, if it was. */
  resolution: 'post' | 'void' | 'expire' | null;
  from_owner_id: string | null;
  to_owner_id: string | null;
}

const transferSelect = (executor: Executor) =>
  executor
    .selectFrom('transfers as t')
    .innerJoin('accounts as f', 'f.id', 't.from_account_id')
    .innerJoin('accounts as d', 'd.id', 't.to_account_id')
    .select([
      't.id',
      't.kind',
      't.from_account_id',
      't.to_account_id',
      't.amount',
      't.currency',
      't.pending',
      't.pending_id',
      't.expires_at',
      't.description',
      't.created_at',
      sql<TransferRow['resolution']>`case when t.pending then
        (select r.kind from transfers r where r.pending_id = t.id) end`.as('resolution'),
      'f.owner_id as from_owner_id',
      'd.owner_id as to_owner_id',
    ]);

export async function findTransfer(executor: Executor, id: string): Promise<TransferRow | undefined> {
  return transferSelect(executor).where('t.id', '=', id).executeTakeFirst();
}

/** Newest first, keyset-paginated on (created_at, id): each branch walks one index, no OFFSET. */
export async function listAccountTransfers(
  executor: Executor,
  accountId: string,
  page: { limit: number; before: { createdAt: Date; id: string } | null },
): Promise<TransferRow[]> {
  const branch = (column: 't.from_account_id' | 't.to_account_id') => {
    let query = transferSelect(executor).where(column, '=', accountId);
    if (page.before) {
      const { createdAt, id } = page.before;
      query = query.where(sql<boolean>`(t.created_at, t.id) < (${createdAt}::timestamptz, ${id}::uuid)`);
    }
    return query.orderBy('t.created_at', 'desc').orderBy('t.id', 'desc').limit(page.limit);
  };
  const [outgoing, incoming] = await Promise.all([branch('t.from_account_id'), branch('t.to_account_id')].map((q) => q.execute()));
  return [...(outgoing ?? []), ...(incoming ?? [])]
    .sort((a, b) => b.created_at.getTime() - a.created_at.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
    .slice(0, page.limit);
}

// ---- idempotency ----

export interface StoredResponse {
  fingerprint: Uint8Array;
  status_code: number;
  response_body: string;
}

/** Takes the transaction-scoped lock of (principal, key); false while another transaction holds it. */
export async function tryLockIdempotencyKey(executor: Executor, principalId: string, key: string): Promise<boolean> {
  const result = await sql<{ locked: boolean }>`
    select pg_try_advisory_xact_lock(hashtextextended(${principalId} || ':' || ${key}, 0)) as locked`.execute(executor);
  return result.rows[0]?.locked === true;
}

export async function findIdempotencyKey(executor: Executor, principalId: string, key: string): Promise<StoredResponse | undefined> {
  return executor
    .selectFrom('idempotency_keys')
    .select(['fingerprint', 'status_code', 'response_body'])
    .where('principal_id', '=', principalId)
    .where('key', '=', key)
    .executeTakeFirst();
}

export async function storeIdempotencyKey(
  executor: Executor,
  input: { principalId: string; key: string; fingerprint: Uint8Array; statusCode: number; body: string },
): Promise<void> {
  await executor
    .insertInto('idempotency_keys')
    .values({
      principal_id: input.principalId,
      key: input.key,
      fingerprint: input.fingerprint,
      status_code: input.statusCode,
      response_body: input.body,
    })
    .execute();
}

export async function deleteIdempotencyKeysOlderThan(executor: Executor, seconds: number): Promise<number> {
  const result = await executor
    .deleteFrom('idempotency_keys')
    .where('created_at', '<', sql<Date>`now() - make_interval(secs => ${seconds})`)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

export async function findExpiredPending(executor: Executor, now: Date, limit: number): Promise<string[]> {
  const rows = await executor
    .selectFrom('transfers as t')
    .select('t.id')
    .where('t.pending', '=', true)
    .where('t.expires_at', '<=', now)
    .where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom('transfers as r').select('r.id').whereRef('r.pending_id', '=', 't.id'))),
    )
    .orderBy('t.expires_at')
    .limit(limit)
    .execute();
  return rows.map((row) => row.id);
}

// ---- user deletion ----

/** Locks the user's open accounts; true if any still holds money or has a pending transfer. */
export async function userHasMoney(executor: Executor, userId: string): Promise<boolean> {
  const result = await sql<{ busy: boolean }>`
    with owned as (
      select id, balance, pending_debits from accounts
      where owner_id = ${userId}::uuid and closed_at is null
      order by id
      for update
    )
    select exists (
      select 1 from owned where balance <> 0 or pending_debits <> 0
      union all
      select 1 from transfers t join owned o on o.id = t.to_account_id
      where t.pending and not exists (select 1 from transfers r where r.pending_id = t.id)
    ) as busy`.execute(executor);
  return result.rows[0]?.busy === true;
}

export async function closeAccountsOf(executor: Executor, userId: string, now: Date): Promise<void> {
  await executor
    .updateTable('accounts')
    .set({ closed_at: now, updated_at: now })
    .where('owner_id', '=', userId)
    .where('closed_at', 'is', null)
    .execute();
}
