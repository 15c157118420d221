// All SQL of the events component: appending to the outbox (in the caller's transaction), and what
// the relay does with it (leases, batches read with their snapshot, cursors, pruning, status).
import { sql } from 'kysely';
import type { Executor } from '../../platform/db/index.js';
import type { EventType, JsonValue } from './cloud-event.js';

interface OutboxEventsTable {
  seq: string;
  id: string;
  type: string;
  subject: string;
  /** Null for the transfer events the ledger writes: built when read (publishedData below). */
  data: unknown;
  traceparent: string | null;
  created_at: Date;
  tx: string;
}

interface OutboxCursorsTable {
  publisher: string;
  position: string;
  lease_owner: string | null;
  lease_until: Date | null;
  published_at: Date | null;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    outbox_events: OutboxEventsTable;
    outbox_cursors: OutboxCursorsTable;
  }
}

/** An event as written to the outbox, and as outbox_append (events.sql) takes it in JSON. */
export interface OutboxRecord {
  readonly id: string;
  readonly type: EventType;
  readonly subject: string;
  readonly data: { readonly [key: string]: JsonValue };
  readonly traceparent: string | null;
  readonly time: string;
}

export async function append(executor: Executor, records: readonly OutboxRecord[]): Promise<void> {
  if (records.length === 0) return;
  await sql`select outbox_append(${JSON.stringify(records)}::jsonb)`.execute(executor);
}

export interface StoredEvent {
  readonly seq: bigint;
  readonly id: string;
  readonly type: EventType;
  readonly subject: string;
  readonly data: { readonly [key: string]: JsonValue };
  readonly traceparent: string | null;
  readonly createdAt: Date;
}

/** Rows after a position, with the snapshot they were read in (transaction ids as bigint). */
export interface Batch<E = StoredEvent> {
  readonly snapshotXmin: bigint;
  readonly snapshotXmax: bigint;
  /** The outbox's last position (0 when empty), for the backlog. */
  readonly lastSeq: bigint;
  readonly events: readonly E[];
}

interface BatchRow {
  xmin: string;
  xmax: string;
  last_seq: string;
  seq: string | null;
  id: string | null;
  type: EventType | null;
  subject: string | null;
  data: { [key: string]: JsonValue } | null;
  traceparent: string | null;
  created_at: Date | null;
}

/**
 * An event's data as published, for a query over outbox_events `o` that adds `derivedData` to its
 * FROM: what the row stores, or, for the transfer events the ledger writes without it (ledger.sql,
 * ledger_apply step 7), the transfer built from its immutable row (ledger_event_data, inlined by the
 * planner: one index probe per event).
 */
export const publishedData = sql<{ [key: string]: JsonValue }>`coalesce(o.data, derived.data)`;
export const derivedData = sql`left join lateral (select d.data from ledger_event_data(o.type, o.subject) d where o.data is null) derived on true`;

/** The events after `position` (at most `limit`), with their data, in outbox order. */
export async function readAfter(executor: Executor, position: bigint, limit: number): Promise<Batch> {
  // One statement, so the rows and the snapshot functions see the same snapshot.
  const { rows } = await sql<BatchRow>`
    select pg_snapshot_xmin(s.snapshot)::text as xmin, pg_snapshot_xmax(s.snapshot)::text as xmax,
           coalesce((select max(m.seq) from outbox_events m), 0)::text as last_seq,
           e.seq::text as seq, e.id, e.type, e.subject, e.data, e.traceparent, e.created_at
    from (select pg_current_snapshot() as snapshot) s
    left join lateral (
      select o.seq, o.id, o.type, o.subject, ${publishedData} as data, o.traceparent, o.created_at
      from (select * from outbox_events o where o.seq > ${position.toString()}::bigint order by o.seq limit ${limit}) o
      ${derivedData}
    ) e on true
    order by e.seq`.execute(executor);
  const first = rows[0];
  if (!first) throw new Error('outbox: the batch query returned no row');
  const events: StoredEvent[] = [];
  for (const row of rows) {
    if (row.seq === null || row.id === null || row.type === null || row.subject === null || row.created_at === null) {
      continue;
    }
    // Never skipped: the relay would take the position for a rolled-back one and lose the event.
    if (row.data === null) throw new Error(`outbox: event ${row.seq} (${row.type}) has no data, stored or derived`);
    events.push({
      seq: BigInt(row.seq),
      id: row.id,
      type: row.type,
      subject: row.subject,
      data: row.data,
      traceparent: row.traceparent,
      createdAt: row.created_at,
    });
  }
  return { snapshotXmin: BigInt(first.xmin), snapshotXmax: BigInt(first.xmax), lastSeq: BigInt(first.last_seq), events };
}

/**
 * The positions after `position` (at most `limit`), in order, with the snapshot: all a publisher
 * that wants no events now needs to move its cursor past them under the gap rule. One row, one
 * array: no event's columns are read, sent or parsed.
 */
export async function readPositionsAfter(executor: Executor, position: bigint, limit: number): Promise<Batch<{ readonly seq: bigint }>> {
  const { rows } = await sql<{ xmin: string; xmax: string; last_seq: string; seqs: string[] }>`
    select pg_snapshot_xmin(s.snapshot)::text as xmin, pg_snapshot_xmax(s.snapshot)::text as xmax,
           coalesce((select max(m.seq) from outbox_events m), 0)::text as last_seq,
           array(select o.seq::text from outbox_events o where o.seq > ${position.toString()}::bigint
                 order by o.seq limit ${limit}) as seqs
    from (select pg_current_snapshot() as snapshot) s`.execute(executor);
  const row = rows[0];
  if (!row) throw new Error('outbox: the positions query returned no row');
  return {
    snapshotXmin: BigInt(row.xmin),
    snapshotXmax: BigInt(row.xmax),
    lastSeq: BigInt(row.last_seq),
    events: row.seqs.map((seq) => ({ seq: BigInt(seq) })),
  };
}

/** The current snapshot's xmin: every transaction with a lower id has ended. */
export async function snapshotXmin(executor: Executor): Promise<bigint> {
  const { rows } = await sql<{ xmin: string }>`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin`.execute(executor);
  return BigInt(rows[0]?.xmin ?? '0');
}

/**
 * Takes or renews the publisher's lease for `owner` (created at position 0 the first time): its
 * position when this owner holds the lease now, undefined when another relay holds an unexpired one.
 */
export async function acquireLease(executor: Executor, publisher: string, owner: string, leaseMs: number): Promise<bigint | undefined> {
  const { rows } = await sql<{ position: string }>`
    insert into outbox_cursors as c (publisher, position, lease_owner, lease_until)
    values (${publisher}, 0, ${owner}, now() + make_interval(secs => ${leaseMs / 1000}))
    on conflict (publisher) do update
      set lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
      where c.lease_owner = excluded.lease_owner or c.lease_owner is null or c.lease_until < now()
    returning c.position::text as position`.execute(executor);
  const row = rows[0];
  return row ? BigInt(row.position) : undefined;
}

/**
 * Moves the cursor (and renews the lease) if `owner` still holds it; false when it lost the lease.
 * Committed without waiting for the WAL flush (synchronous_commit off for this statement's
 * transaction): a cursor move lost in a database crash only publishes those events again, which
 * at-least-once allows, and a flush per batch per publisher doubled the commits the ledger pays for.
 */
export async function advance(executor: Executor, publisher: string, owner: string, position: bigint, leaseMs: number): Promise<boolean> {
  const result = await sql`
    update outbox_cursors
    set position = ${position.toString()}::bigint, published_at = now(),
        lease_until = now() + make_interval(secs => ${leaseMs / 1000})
    from (select set_config('synchronous_commit', 'off', true)) as unflushed
    where publisher = ${publisher} and lease_owner = ${owner}`.execute(executor);
  return (result.numAffectedRows ?? 0n) > 0n;
}

export async function releaseLease(executor: Executor, publisher: string, owner: string): Promise<void> {
  await sql`update outbox_cursors set lease_owner = null, lease_until = null
            where publisher = ${publisher} and lease_owner = ${owner}`.execute(executor);
}

/**
 * Deletes up to `limit` events older than the retention that every active cursor (one published
 * within the retention) has passed; returns how many. A publisher gone longer than the retention no
 * longer holds events back.
 */
export async function prune(executor: Executor, retentionSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from outbox_events where seq in (
      select o.seq from outbox_events o
      where o.created_at < now() - make_interval(secs => ${retentionSeconds})
        and o.seq <= coalesce((select min(c.position) from outbox_cursors c
                               where c.published_at > now() - make_interval(secs => ${retentionSeconds})), o.seq)
      order by o.seq
      limit ${limit})`.execute(executor);
  return Number(result.numAffectedRows ?? 0n);
}

export interface CursorStatus {
  readonly publisher: string;
  readonly position: bigint;
  /** Events after the position (exact count). */
  readonly backlog: number;
  readonly leaseOwner: string | null;
  readonly leaseUntil: Date | null;
  readonly publishedAt: Date | null;
  /** When the oldest event not yet published was written (null: none waiting). */
  readonly oldestWaitingAt: Date | null;
}

export async function cursorStatus(executor: Executor): Promise<{ lastSeq: bigint; total: number; cursors: CursorStatus[] }> {
  const { rows } = await sql<{
    publisher: string;
    position: string;
    backlog: string;
    lease_owner: string | null;
    lease_until: Date | null;
    published_at: Date | null;
    oldest_waiting_at: Date | null;
  }>`
    select c.publisher, c.position::text as position, c.lease_owner, c.lease_until, c.published_at,
           (select count(*) from outbox_events o where o.seq > c.position)::text as backlog,
           (select min(o.created_at) from outbox_events o where o.seq > c.position) as oldest_waiting_at
    from outbox_cursors c order by c.publisher`.execute(executor);
  const totals = await sql<{ last_seq: string; total: string }>`
    select coalesce(max(seq), 0)::text as last_seq, count(*)::text as total from outbox_events`.execute(executor);
  return {
    lastSeq: BigInt(totals.rows[0]?.last_seq ?? '0'),
    total: Number(totals.rows[0]?.total ?? '0'),
    cursors: rows.map((row) => ({
      publisher: row.publisher,
      position: BigInt(row.position),
      backlog: Number(row.backlog),
      leaseOwner: row.lease_owner,
      leaseUntil: row.lease_until,
      publishedAt: row.published_at,
      oldestWaitingAt: row.oldest_waiting_at,
    })),
  };
}
