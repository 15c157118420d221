// All SQL of the ledger component. Money moves only through ledger_apply (ledger.sql, beside this
// file): one statement per batch of requests that locks, checks, writes and keeps each keyed
// request's outcome.
import { sql, type Generated } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

interface AccountsTable {
  id: string;
  owner_id: string | null;
  currency: string;
  name: string | null;
  balance: Generated<number | bigint>;
  pending_debits: Generated<number | bigint>;
  created_at: Date;
  updated_at: Date;
  closed_at: Date | null;
  frozen_at: Generated<Date | null>;
}

interface TransfersTable {
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

interface SystemAccountShardsTable {
  account_id: string;
  shard: number;
  balance: number | bigint;
}

/** The pending transfers that can still time out (kept by a trigger on transfers: migration 0018). */
interface PendingTimeoutsTable {
  transfer_id: string;
  expires_at: Date;
}

interface EntriesTable {
  id: Generated<number>;
  transfer_id: string;
  account_id: string;
  amount: number | bigint;
  created_at: Date;
}

/** A keyed request's domain outcome, for its replays (written by ledger_apply, ledger.sql). */
interface IdempotencyKeysTable {
  principal_id: string;
  key: string;
  fingerprint: Uint8Array;
  /** 'OK' or the rule that refused the request (LedgerOutcome). */
  outcome: string;
  /** OK: the transfer it wrote. */
  transfer_id: string | null;
  /** The request that first produced the outcome. */
  request_id: string | null;
  created_at: Generated<Date>;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    accounts: AccountsTable;
    transfers: TransfersTable;
    system_account_shards: SystemAccountShardsTable;
    entries: EntriesTable;
    pending_timeouts: PendingTimeoutsTable;
    idempotency_keys: IdempotencyKeysTable;
  }
}

type TransferKind = 'transfer' | 'deposit' | 'withdrawal' | 'post' | 'void' | 'expire';

export interface AccountRow extends Omit<AccountsTable, 'balance' | 'pending_debits' | 'closed_at' | 'frozen_at'> {
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

/** Outcomes by name, as ledger.sql returns them; the rule order is in that file's header. */
const MOVE_OUTCOMES = [
  'OK',
  'ACCOUNT_NOT_FOUND',
  'COUNTERPARTY_NOT_FOUND',
  'CURRENCY_MISMATCH',
  'INSUFFICIENT_FUNDS',
  'BALANCE_LIMIT_EXCEEDED',
] as const;
const RESOLVE_OUTCOMES = [
  'OK',
  'TRANSFER_NOT_FOUND',
  'PENDING_ALREADY_POSTED',
  'PENDING_ALREADY_VOIDED',
  'PENDING_EXPIRED',
  'AMOUNT_EXCEEDS_PENDING',
  'COUNTERPARTY_NOT_FOUND',
  'BALANCE_LIMIT_EXCEEDED',
] as const;
export type LedgerOutcome = (typeof MOVE_OUTCOMES)[number] | (typeof RESOLVE_OUTCOMES)[number];
const OUTCOMES: ReadonlySet<string> = new Set<string>([...MOVE_OUTCOMES, ...RESOLVE_OUTCOMES]);
const isOutcome = (name: string | null): name is LedgerOutcome => name !== null && OUTCOMES.has(name);

/** One money request of a batch: a move (transfer, deposit, withdrawal) or a resolution of a pending one. */
export interface LedgerRequest {
  /** The caller; null for the ledger's own work (expiring pending transfers). */
  readonly principalId: string | null;
  readonly idempotency?: { readonly key: string; readonly fingerprint: Uint8Array };
  readonly requestId: string | null;
  /** The id the transfer gets if the request succeeds. */
  readonly id: string;
  readonly kind: TransferKind;
  /** Moves: the account in the path (deposit, withdrawal) or fromAccountId (transfer). */
  readonly accountId?: string;
  /** Transfers: toAccountId. */
  readonly counterpartyId?: string;
  /** Resolutions: the pending transfer. */
  readonly pendingId?: string;
  /** null: a post of the whole pending amount. */
  readonly amount: number | null;
  readonly description?: string | null;
  readonly pending?: boolean;
  readonly expiresAt?: Date | null;
  /** The caller may act on any user's accounts (admin). */
  readonly actorSeesAll: boolean;
  readonly now: Date;
  /** The id of the event the transfer leaves in the outbox; none: the outbox is off. */
  readonly eventId?: string;
  /** The W3C traceparent of the request, kept with its event. */
  readonly traceparent?: string | null;
  /** A closure's own move: allowed on its owner's frozen accounts. */
  readonly frozenOk?: boolean;
}

/** A transfer as written: transfers are immutable, so this is also what a replay reads back. */
export type TransferFacts = Omit<TransfersTable, 'initiated_by'>;

export type LedgerResult =
  | { readonly result: 'in_progress' }
  | { readonly result: 'key_reused' }
  | {
      readonly result: 'executed' | 'replayed';
      readonly outcome: LedgerOutcome;
      /** The request that produced the outcome: this one, or (replayed) the first one. */
      readonly requestId: string | null;
      /** OK only. */
      readonly transfer: TransferFacts | null;
    };

interface ApplyRow {
  item: number;
  result: 'executed' | 'replayed' | 'in_progress' | 'key_reused';
  outcome: string | null;
  request_id: string | null;
  transfer_id: string | null;
  kind: TransferKind | null;
  from_account_id: string | null;
  to_account_id: string | null;
  amount: number | bigint | string | null;
  currency: string | null;
  pending: boolean | null;
  pending_id: string | null;
  expires_at: Date | null;
  description: string | null;
  created_at: Date | null;
}

function toResult(row: ApplyRow): LedgerResult {
  if (row.result === 'in_progress' || row.result === 'key_reused') return { result: row.result };
  if (!isOutcome(row.outcome)) throw new Error(`ledger_apply: unknown outcome ${String(row.outcome)}`);
  let transfer: TransferFacts | null = null;
  if (row.outcome === 'OK') {
    if (!row.transfer_id || !row.kind || !row.from_account_id || !row.to_account_id || row.amount === null || !row.currency || !row.created_at) {
      throw new Error(`ledger_apply: item ${row.item} is OK without its transfer`);
    }
    transfer = {
      id: row.transfer_id,
      kind: row.kind,
      from_account_id: row.from_account_id,
      to_account_id: row.to_account_id,
      amount: typeof row.amount === 'string' ? BigInt(row.amount) : row.amount,
      currency: row.currency,
      pending: row.pending === true,
      pending_id: row.pending_id,
      expires_at: row.expires_at,
      description: row.description,
      created_at: row.created_at,
    };
  }
  return { result: row.result, outcome: row.outcome, requestId: row.request_id, transfer };
}

/**
 * A batch of money requests in one statement (ledger_apply, ledger.sql): one round trip and one
 * commit for all. Results come back in the order of `requests`. `shard`: the shard of every system
 * account the batch's deposits and withdrawals use.
 */
export async function applyBatch(executor: Executor, requests: readonly LedgerRequest[], shard: number): Promise<LedgerResult[]> {
  const items = requests.map((request, index) => ({
    item: index + 1,
    principal: request.principalId,
    key: request.idempotency?.key ?? null,
    fingerprint: request.idempotency ? Buffer.from(request.idempotency.fingerprint).toString('hex') : null,
    request_id: request.requestId,
    id: request.id,
    kind: request.kind,
    account_id: request.accountId ?? null,
    counterparty_id: request.counterpartyId ?? null,
    pending_id: request.pendingId ?? null,
    amount: request.amount,
    description: request.description ?? null,
    pending: request.pending === true,
    expires_at: request.expiresAt?.toISOString() ?? null,
    actor_sees_all: request.actorSeesAll,
    now: request.now.toISOString(),
    event_id: request.eventId ?? null,
    traceparent: request.traceparent ?? null,
    frozen_ok: request.frozenOk === true,
  }));
  const result = await sql<ApplyRow>`
    select * from ledger_apply(${JSON.stringify(items)}::jsonb, ${shard}::smallint)`.execute(executor);
  const byItem = new Map(result.rows.map((row) => [row.item, row]));
  return requests.map((_, index) => {
    const row = byItem.get(index + 1);
    if (!row) throw new Error(`ledger_apply returned no row for item ${index + 1}`);
    return toResult(row);
  });
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

/** Deletes at most `limit` keys stored before `cutoff`, oldest first (the created_at index); resolves to how many. */
export async function deleteIdempotencyKeysOlderThan(executor: Executor, cutoff: Date, limit: number): Promise<number> {
  const result = await sql`
    delete from idempotency_keys k
    using (select principal_id, key from idempotency_keys where created_at < ${cutoff} order by created_at limit ${limit}) old
    where k.principal_id = old.principal_id and k.key = old.key`.execute(executor);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * Pending transfers past their expiry and not yet resolved, oldest first: the head of
 * pending_timeouts, which holds only the unresolved ones, so a tick costs the same however many
 * pending transfers the ledger has resolved.
 */
export async function findExpiredPending(executor: Executor, now: Date, limit: number): Promise<string[]> {
  const rows = await executor
    .selectFrom('pending_timeouts')
    .select('transfer_id')
    .where('expires_at', '<=', now)
    .orderBy('expires_at')
    .limit(limit)
    .execute();
  return rows.map((row) => row.transfer_id);
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

/** Closes the user's open accounts; returns the ones it closed. */
export async function closeAccountsOf(
  executor: Executor,
  userId: string,
  now: Date,
): Promise<Array<{ id: string; currency: string; name: string | null }>> {
  return executor
    .updateTable('accounts')
    .set({ closed_at: now, updated_at: now })
    .where('owner_id', '=', userId)
    .where('closed_at', 'is', null)
    .returning(['id', 'currency', 'name'])
    .execute();
}

/** Freezes the user's open accounts (a closure starts): they take no money moves but the closure's. */
export async function freezeAccountsOf(executor: Executor, userId: string, now: Date): Promise<void> {
  await executor
    .updateTable('accounts')
    .set({ frozen_at: now, updated_at: now })
    .where('owner_id', '=', userId)
    .where('closed_at', 'is', null)
    .where('frozen_at', 'is', null)
    .execute();
}

export async function unfreezeAccountsOf(executor: Executor, userId: string, now: Date): Promise<void> {
  await executor
    .updateTable('accounts')
    .set({ frozen_at: null, updated_at: now })
    .where('owner_id', '=', userId)
    .where('frozen_at', 'is not', null)
    .execute();
}

/** Open pending transfers from or to the user's accounts (not yet posted, voided or expired). */
export async function findOpenPendingOf(executor: Executor, userId: string): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    select t.id from transfers t
    join accounts a on a.id in (t.from_account_id, t.to_account_id)
    where a.owner_id = ${userId}::uuid and t.pending
      and not exists (select 1 from transfers r where r.pending_id = t.id)
    group by t.id`.execute(executor);
  return rows.map((row) => row.id);
}

/** The user's open accounts with money on them: what a closure must withdraw. */
export async function findBalancesOf(executor: Executor, userId: string): Promise<Array<{ id: string; available: number }>> {
  const { rows } = await sql<{ id: string; available: string }>`
    select id, (balance - pending_debits)::text as available from accounts
    where owner_id = ${userId}::uuid and closed_at is null and balance <> 0
    order by id`.execute(executor);
  return rows.map((row) => ({ id: row.id, available: Number(row.available) }));
}
