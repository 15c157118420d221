// All SQL of the webhooks component: endpoints, the fan-out of published events into deliveries, and
// what the delivery worker does with them (claims, outcomes).
import { sql } from 'kysely';
import type { Executor } from '../../platform/db/index.js';
import type { CloudEvent } from '../events/index.js';

interface WebhookEndpointsTable {
  id: string;
  url: string;
  event_types: string[];
  description: string | null;
  enabled: boolean;
  secret: string;
  created_at: Date;
  updated_at: Date;
}

export type DeliveryStatus = 'pending' | 'failed' | 'delivered' | 'dead';

interface WebhookDeliveriesTable {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  event_sequence: string;
  payload: unknown;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: Date;
  claim_token: string | null;
  last_attempt_at: Date | null;
  last_status_code: number | null;
  last_error: string | null;
  last_duration_ms: number | null;
  delivered_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

declare module '../../platform/db/tables.js' {
  interface Tables {
    webhook_endpoints: WebhookEndpointsTable;
    webhook_deliveries: WebhookDeliveriesTable;
  }
}

export type EndpointRow = Omit<WebhookEndpointsTable, 'secret'>;
const ENDPOINT_COLUMNS = ['id', 'url', 'event_types', 'description', 'enabled', 'created_at', 'updated_at'] as const;

export type DeliveryRow = Omit<WebhookDeliveriesTable, 'payload' | 'claim_token' | 'event_sequence' | 'updated_at'>;
const DELIVERY_COLUMNS = [
  'id',
  'endpoint_id',
  'event_id',
  'event_type',
  'status',
  'attempts',
  'next_attempt_at',
  'last_attempt_at',
  'last_status_code',
  'last_error',
  'last_duration_ms',
  'delivered_at',
  'created_at',
] as const;

export async function insertEndpoint(executor: Executor, endpoint: WebhookEndpointsTable): Promise<EndpointRow> {
  return executor.insertInto('webhook_endpoints').values(endpoint).returning(ENDPOINT_COLUMNS).executeTakeFirstOrThrow();
}

export async function findEndpoint(executor: Executor, id: string): Promise<EndpointRow | undefined> {
  return executor.selectFrom('webhook_endpoints').select(ENDPOINT_COLUMNS).where('id', '=', id).executeTakeFirst();
}

export async function listEndpoints(executor: Executor, page: { limit: number; offset: number }): Promise<{ rows: EndpointRow[]; total: number }> {
  const [rows, count] = await Promise.all([
    executor
      .selectFrom('webhook_endpoints')
      .select(ENDPOINT_COLUMNS)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(page.limit)
      .offset(page.offset)
      .execute(),
    executor.selectFrom('webhook_endpoints').select(sql<number>`count(*)::int`.as('total')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: count.total };
}

export async function updateEndpoint(
  executor: Executor,
  id: string,
  changes: Partial<Pick<WebhookEndpointsTable, 'url' | 'event_types' | 'description' | 'enabled' | 'secret'>> & { updated_at: Date },
): Promise<EndpointRow | undefined> {
  return executor.updateTable('webhook_endpoints').set(changes).where('id', '=', id).returning(ENDPOINT_COLUMNS).executeTakeFirst();
}

/** Deletes the endpoint and its deliveries; false when there was none. */
export async function deleteEndpoint(executor: Executor, id: string): Promise<boolean> {
  const result = await executor.deleteFrom('webhook_endpoints').where('id', '=', id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

export async function listDeliveries(
  executor: Executor,
  endpointId: string,
  filter: { status: DeliveryStatus | undefined; limit: number; offset: number },
): Promise<{ rows: DeliveryRow[]; total: number }> {
  let rows = executor
    .selectFrom('webhook_deliveries')
    .select(DELIVERY_COLUMNS)
    .where('endpoint_id', '=', endpointId)
    .orderBy('created_at', 'desc')
    .orderBy('event_sequence', 'desc')
    .limit(filter.limit)
    .offset(filter.offset);
  let count = executor
    .selectFrom('webhook_deliveries')
    .select(sql<number>`count(*)::int`.as('total'))
    .where('endpoint_id', '=', endpointId);
  if (filter.status !== undefined) {
    rows = rows.where('status', '=', filter.status);
    count = count.where('status', '=', filter.status);
  }
  const [found, total] = await Promise.all([rows.execute(), count.executeTakeFirstOrThrow()]);
  return { rows: found, total: total.total };
}

/**
 * Schedules a delivery again now, from a fresh count of attempts; a claim in flight loses the right
 * to record its outcome. Undefined when the endpoint has no such delivery.
 */
export async function redeliver(executor: Executor, endpointId: string, deliveryId: string): Promise<DeliveryRow | undefined> {
  return executor
    .updateTable('webhook_deliveries')
    .set({
      status: 'pending',
      attempts: 0,
      next_attempt_at: sql<Date>`now()`,
      claim_token: null,
      delivered_at: null,
      updated_at: sql<Date>`now()`,
    })
    .where('id', '=', deliveryId)
    .where('endpoint_id', '=', endpointId)
    .returning(DELIVERY_COLUMNS)
    .executeTakeFirst();
}

/**
 * A UUIDv7 made in SQL (PostgreSQL 15 has no uuidv7()): the millisecond clock in the first 48 bits,
 * version 7 and the RFC 4122 variant over random bits.
 */
const UUID_V7 = sql<string>`encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
  placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) from 1 for 6),
  52, 1), 53, 1), 'hex')::uuid`;

/**
 * One statement: a delivery per (event, enabled endpoint that takes its type and existed when it
 * happened), the CloudEvent as its payload. An event already fanned out to an endpoint (a batch
 * published again) adds nothing. Returns how many deliveries it created.
 */
/** Whether any endpoint is enabled (the fan-out has somewhere to deliver). */
export async function anyEnabledEndpoint(executor: Executor): Promise<boolean> {
  const row = await executor.selectFrom('webhook_endpoints').select('id').where('enabled', '=', true).limit(1).executeTakeFirst();
  return row !== undefined;
}

export async function fanOut(executor: Executor, events: readonly CloudEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  const result = await sql`
    insert into webhook_deliveries
      (id, endpoint_id, event_id, event_type, event_sequence, payload, status, attempts, next_attempt_at, created_at, updated_at)
    select ${UUID_V7}, w.id, (x.event->>'id')::uuid, x.event->>'type', x.event->>'sequence', x.event, 'pending', 0, now(), now(), now()
    from jsonb_array_elements(${JSON.stringify(events)}::jsonb) as x(event)
    join webhook_endpoints w
      on w.enabled
     and w.event_types && array[x.event->>'type', '*']
     and w.created_at <= (x.event->>'time')::timestamptz
    order by x.event->>'sequence', w.id
    on conflict (endpoint_id, event_id) do nothing`.execute(executor);
  return Number(result.numAffectedRows ?? 0n);
}

/** A delivery claimed by a worker, with what sending it needs. */
export interface ClaimedDelivery {
  readonly id: string;
  readonly endpointId: string;
  readonly eventId: string;
  readonly payload: unknown;
  /** Attempts made before this one. */
  readonly attempts: number;
  readonly url: string;
  readonly secret: string;
}

/**
 * Claims up to `limit` due deliveries of enabled endpoints for `claimToken`, oldest event first:
 * moves them `leaseMs` into the future (so a crashed worker's claim falls due again by itself).
 * Rows another worker is claiming are skipped, never waited for, so no two workers get one row.
 * Endpoints in `excludedEndpointIds` (this worker is sending to them, or their breaker is open) wait.
 */
export async function claimDue(
  executor: Executor,
  limit: number,
  leaseMs: number,
  claimToken: string,
  excludedEndpointIds: readonly string[],
): Promise<ClaimedDelivery[]> {
  const { rows } = await sql<{
    id: string;
    endpoint_id: string;
    event_id: string;
    payload: unknown;
    attempts: number;
    url: string;
    secret: string;
  }>`
    update webhook_deliveries d
    set next_attempt_at = now() + make_interval(secs => ${leaseMs / 1000}), claim_token = ${claimToken}::uuid
    from webhook_endpoints w
    where w.id = d.endpoint_id
      and d.id in (
        select due.id from webhook_deliveries due
        join webhook_endpoints e on e.id = due.endpoint_id and e.enabled
        where due.status in ('pending', 'failed') and due.next_attempt_at <= now()
          and not (due.endpoint_id = any(${`{${excludedEndpointIds.join(',')}}`}::uuid[]))
        order by due.next_attempt_at, due.event_sequence
        limit ${limit}
        for update of due skip locked)
    returning d.id, d.endpoint_id, d.event_id, d.payload, d.attempts, w.url, w.secret`.execute(executor);
  return rows.map((row) => ({
    id: row.id,
    endpointId: row.endpoint_id,
    eventId: row.event_id,
    payload: row.payload,
    attempts: row.attempts,
    url: row.url,
    secret: row.secret,
  }));
}

export interface AttemptRecord {
  readonly at: Date;
  readonly statusCode: number | null;
  readonly error: string | null;
  readonly durationMs: number;
}

/** Records an attempt's outcome if the claim is still this worker's; false when it is not. */
export async function recordAttempt(
  executor: Executor,
  claim: { id: string; claimToken: string },
  attempt: AttemptRecord,
  next: { status: 'delivered' | 'dead'; attempts: number } | { status: 'failed'; attempts: number; retryAt: Date },
): Promise<boolean> {
  const result = await executor
    .updateTable('webhook_deliveries')
    .set({
      status: next.status,
      attempts: next.attempts,
      claim_token: null,
      last_attempt_at: attempt.at,
      last_status_code: attempt.statusCode,
      last_error: attempt.error,
      last_duration_ms: attempt.durationMs,
      updated_at: sql<Date>`now()`,
      ...(next.status === 'failed' ? { next_attempt_at: next.retryAt } : {}),
      ...(next.status === 'delivered' ? { delivered_at: attempt.at } : {}),
    })
    .where('id', '=', claim.id)
    .where('claim_token', '=', claim.claimToken)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Gives claimed deliveries back without an attempt, due at `dueAt` (breaker open, lease short, shutting down). */
export async function release(executor: Executor, claims: readonly { id: string; claimToken: string }[], dueAt: Date): Promise<void> {
  const first = claims[0];
  if (!first) return;
  await executor
    .updateTable('webhook_deliveries')
    .set({ claim_token: null, next_attempt_at: dueAt })
    .where('id', 'in', claims.map((claim) => claim.id))
    .where('claim_token', '=', first.claimToken)
    .execute();
}
