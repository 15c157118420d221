// All SQL of the audit component: appending an event, the filtered keyset read, and the retention
// delete (the only delete the table's trigger lets through, see migrations/0016_audit.sql).
import { sql, type Generated, type Selectable } from 'kysely';
import type { Database, Executor } from '../../platform/db/index.js';

interface AuditEventsTable {
  id: string;
  action: string;
  actor_id: string | null;
  target_id: string | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  details: Record<string, string | number | boolean | null>;
  /** The database's clock (clock_timestamp(), to the millisecond). */
  created_at: Generated<Date>;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    audit_events: AuditEventsTable;
  }
}

export type AuditEventRow = Selectable<AuditEventsTable>;

export interface NewAuditEventRow {
  readonly id: string;
  readonly action: string;
  readonly actor_id: string | null;
  readonly target_id: string | null;
  readonly ip: string | null;
  readonly user_agent: string | null;
  readonly request_id: string | null;
  readonly details: Readonly<Record<string, string | number | boolean | null>>;
}

export async function insertEvent(executor: Executor, row: NewAuditEventRow): Promise<void> {
  await executor
    .insertInto('audit_events')
    .values({
      ...row,
      // JSON is passed as text and cast, so both drivers (pg and PGlite) store the same jsonb.
      details: sql<AuditEventRow['details']>`${JSON.stringify(row.details)}::jsonb`,
    })
    .execute();
}

export interface EventFilters {
  readonly action?: string;
  readonly actorId?: string;
  readonly targetId?: string;
}

/** Newest first, keyset-paginated on (created_at, id); each filter has its index in that order. */
export async function listEvents(
  executor: Executor,
  filters: EventFilters,
  page: { limit: number; before: { createdAt: Date; id: string } | null },
): Promise<AuditEventRow[]> {
  let query = executor.selectFrom('audit_events').selectAll();
  if (filters.action !== undefined) query = query.where('action', '=', filters.action);
  if (filters.actorId !== undefined) query = query.where('actor_id', '=', filters.actorId);
  if (filters.targetId !== undefined) query = query.where('target_id', '=', filters.targetId);
  if (page.before) {
    const { createdAt, id } = page.before;
    query = query.where(sql<boolean>`(created_at, id) < (${createdAt}::timestamptz, ${id}::uuid)`);
  }
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(page.limit).execute();
}

/**
 * Deletes up to `batchSize` of the oldest events older than `retentionDays`, in a transaction that
 * declares the retention to the table's trigger; returns how many went. Small batches keep each
 * transaction (and its locks) short however much has expired.
 */
export async function deleteExpiredBatch(database: Database, retentionDays: number, batchSize: number): Promise<number> {
  return database.transaction(async (tx) => {
    await sql`select set_config('bastion.audit_retention', 'on', true), set_config('bastion.audit_retention_days', ${String(retentionDays)}, true)`.execute(tx);
    const result = await sql`
      delete from audit_events
      where id in (
        select id from audit_events
        where created_at < now() - make_interval(days => ${retentionDays})
        order by created_at, id
        limit ${batchSize}
      )`.execute(tx);
    return Number(result.numAffectedRows ?? 0n);
  });
}
