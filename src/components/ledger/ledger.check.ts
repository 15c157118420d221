// The ledger check: verifies, on a live database, the invariants the ledger promises. Each query
// returns the ids that break one rule; an empty report means the books balance.
import { sql } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

interface LedgerCheckReport {
  readonly ok: boolean;
  readonly violations: Readonly<Record<string, readonly string[]>>;
  readonly counts: { readonly accounts: number; readonly transfers: number; readonly entries: number };
}

const CHECKS: Record<string, string> = {
  // A user account's balance equals the sum of its entries.
  'balance differs from its entries': `
    select a.id::text as id from accounts a
    left join (select account_id, sum(amount) as total from entries group by account_id) e on e.account_id = a.id
    where a.owner_id is not null and a.balance <> coalesce(e.total, 0)`,
  // A system account's shards sum to its entries.
  'system account shards differ from its entries': `
    select a.id::text as id from accounts a
    left join (select account_id, sum(amount) as total from entries group by account_id) e on e.account_id = a.id
    left join (select account_id, sum(balance) as total from system_account_shards group by account_id) s on s.account_id = a.id
    where a.owner_id is null and coalesce(s.total, 0) <> coalesce(e.total, 0)`,
  // Money is neither created nor lost: every currency sums to zero.
  'currency does not sum to zero': `
    select currency as id from (
      select a.currency, sum(a.balance) as total from accounts a where a.owner_id is not null group by a.currency
      union all
      select a.currency, sum(s.balance) from accounts a join system_account_shards s on s.account_id = a.id group by a.currency
    ) per_currency group by currency having sum(total) <> 0`,
  'user balance is negative or below its reservations': `
    select id::text from accounts where owner_id is not null and (balance < 0 or balance - pending_debits < 0)`,
  // Money-moving transfers have exactly two entries, a debit of the source and a credit of the destination.
  'money-moving transfer without exactly two matching entries': `
    select t.id::text as id from transfers t
    left join entries e on e.transfer_id = t.id
    where (t.kind = 'post' or (t.kind in ('transfer', 'deposit', 'withdrawal') and not t.pending))
    group by t.id, t.amount, t.from_account_id, t.to_account_id
    having count(e.id) <> 2
        or coalesce(sum(e.amount), 1) <> 0
        or coalesce(sum(e.amount) filter (where e.account_id = t.to_account_id), 0) <> t.amount
        or coalesce(sum(e.amount) filter (where e.account_id = t.from_account_id), 0) <> -t.amount`,
  // Reservations and resolutions move no balance.
  'reservation or resolution with entries': `
    select distinct t.id::text as id from transfers t join entries e on e.transfer_id = t.id
    where t.pending or t.kind in ('void', 'expire')`,
  // What an account has reserved equals its unresolved pending transfers.
  'reservations differ from unresolved pending transfers': `
    select a.id::text as id from accounts a
    left join (
      select t.from_account_id, sum(t.amount) as total from transfers t
      where t.pending and not exists (select 1 from transfers r where r.pending_id = t.id)
      group by t.from_account_id
    ) p on p.from_account_id = a.id
    where a.pending_debits <> coalesce(p.total, 0)`,
  // The expiry sweep's list is exactly the unresolved pending transfers with a timeout.
  'timeout list differs from unresolved pending transfers with a timeout': `
    select coalesce(t.id, p.transfer_id)::text as id
    from (select t.id, t.expires_at from transfers t
          where t.pending and t.expires_at is not null
            and not exists (select 1 from transfers r where r.pending_id = t.id)) t
    full join pending_timeouts p on p.transfer_id = t.id
    where t.id is null or p.transfer_id is null or p.expires_at <> t.expires_at`,
};

export async function checkLedger(executor: Executor): Promise<LedgerCheckReport> {
  const violations: Record<string, string[]> = {};
  for (const [rule, query] of Object.entries(CHECKS)) {
    const { rows } = await sql.raw<{ id: string }>(query).execute(executor);
    if (rows.length > 0) violations[rule] = rows.map((row) => row.id);
  }
  const { rows } = await sql<{ accounts: number; transfers: number; entries: number }>`
    select (select count(*)::int from accounts) as accounts,
           (select count(*)::int from transfers) as transfers,
           (select count(*)::int from entries) as entries`.execute(executor);
  const counts = rows[0] ?? { accounts: 0, transfers: 0, entries: 0 };
  return { ok: Object.keys(violations).length === 0, violations, counts };
}
