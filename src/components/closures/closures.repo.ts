// All SQL of the closures component: the saga rows and their step-by-step record.
import { sql } from 'kysely';
import type { Executor } from '../../platform/db/index.js';

export type SagaStatus = 'running' | 'compensating' | 'completed' | 'compensated';

interface SagasTable {
  id: string;
  kind: string;
  subject: string;
  step: string;
  status: SagaStatus;
  data: unknown;
  error: string | null;
  lease_owner: string | null;
  lease_until: Date | null;
  created_at: Date;
  updated_at: Date;
}

interface SagaStepsTable {
  saga_id: string;
  position: number;
  step: string;
  outcome: string;
  detail: unknown;
  at: Date;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    sagas: SagasTable;
    saga_steps: SagaStepsTable;
  }
}

export const USER_CLOSURE = 'user.close';

export interface SagaRow {
  readonly id: string;
  readonly subject: string;
  readonly step: string;
  readonly status: SagaStatus;
  readonly data: { readonly withdrawBalances?: boolean; readonly traceparent?: string };
  readonly error: string | null;
  readonly created_at: Date;
  readonly updated_at: Date;
}

export interface StepRow {
  readonly position: number;
  readonly step: string;
  readonly outcome: string;
  readonly detail: unknown;
  readonly at: Date;
}

const SAGA_COLUMNS = ['id', 'subject', 'step', 'status', 'data', 'error', 'created_at', 'updated_at'] as const;

/** Starts a user's closure, or returns the one already running (one at a time per user). */
export async function insertOrJoin(
  executor: Executor,
  saga: { id: string; subject: string; step: string; data: SagaRow['data']; now: Date },
): Promise<{ row: SagaRow; created: boolean }> {
  const inserted = await sql<SagaRow>`
    insert into sagas (id, kind, subject, step, status, data, created_at, updated_at)
    values (${saga.id}, ${USER_CLOSURE}, ${saga.subject}, ${saga.step}, 'running', ${JSON.stringify(saga.data)}::jsonb, ${saga.now}, ${saga.now})
    on conflict (kind, subject) where status in ('running', 'compensating') do nothing
    returning id, subject, step, status, data, error, created_at, updated_at`.execute(executor);
  const row = inserted.rows[0];
  if (row) return { row, created: true };
  const active = await executor
    .selectFrom('sagas')
    .select(SAGA_COLUMNS)
    .where('kind', '=', USER_CLOSURE)
    .where('subject', '=', saga.subject)
    .where('status', 'in', ['running', 'compensating'])
    .executeTakeFirst();
  if (!active) throw new Error('closures: a running closure vanished between insert and read');
  return { row: active as SagaRow, created: false };
}

export async function latestOf(executor: Executor, subject: string): Promise<SagaRow | undefined> {
  const row = await executor
    .selectFrom('sagas')
    .select(SAGA_COLUMNS)
    .where('kind', '=', USER_CLOSURE)
    .where('subject', '=', subject)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return row as SagaRow | undefined;
}

export async function stepsOf(executor: Executor, sagaId: string): Promise<StepRow[]> {
  return executor
    .selectFrom('saga_steps')
    .select(['position', 'step', 'outcome', 'detail', 'at'])
    .where('saga_id', '=', sagaId)
    .orderBy('position')
    .execute();
}

/** Takes the saga's lease if it is active and nobody else holds it; its row, else undefined. */
export async function claim(executor: Executor, sagaId: string, owner: string, leaseSeconds: number): Promise<SagaRow | undefined> {
  const { rows } = await sql<SagaRow>`
    update sagas set lease_owner = ${owner}, lease_until = now() + make_interval(secs => ${leaseSeconds})
    where id = ${sagaId} and status in ('running', 'compensating')
      and (lease_until is null or lease_until < now() or lease_owner = ${owner})
    returning id, subject, step, status, data, error, created_at, updated_at`.execute(executor);
  return rows[0];
}

export async function release(executor: Executor, sagaId: string, owner: string): Promise<void> {
  await sql`update sagas set lease_owner = null, lease_until = null where id = ${sagaId} and lease_owner = ${owner}`.execute(executor);
}

/** Active sagas nobody holds (their runner crashed or was never started): to resume. */
export async function findUnclaimed(executor: Executor, limit: number): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    select id from sagas
    where kind = ${USER_CLOSURE} and status in ('running', 'compensating') and (lease_until is null or lease_until < now())
    order by created_at limit ${limit}`.execute(executor);
  return rows.map((row) => row.id);
}

/**
 * Records a step's outcome and moves the saga on, if `owner` still holds it: false when it lost the
 * lease (another runner took over; it will redo the step, which every step allows).
 */
export async function advance(
  executor: Executor,
  sagaId: string,
  owner: string,
  record: { step: string; outcome: string; detail?: unknown; next: { step: string; status: SagaStatus; error?: string | null } },
): Promise<boolean> {
  const { rows } = await sql<{ id: string }>`
    with moved as (
      update sagas set step = ${record.next.step}, status = ${record.next.status},
                       error = coalesce(${record.next.error ?? null}, error), updated_at = now()
      where id = ${sagaId} and lease_owner = ${owner}
      returning id
    )
    insert into saga_steps (saga_id, position, step, outcome, detail, at)
    select m.id, coalesce((select max(s.position) from saga_steps s where s.saga_id = m.id), 0) + 1,
           ${record.step}, ${record.outcome}, ${record.detail === undefined ? null : JSON.stringify(record.detail)}::jsonb, now()
    from moved m
    returning saga_id as id`.execute(executor);
  return rows.length > 0;
}
