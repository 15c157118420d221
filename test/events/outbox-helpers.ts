// Shared by the outbox and relay suites: the outbox read back with SQL, events appended the way the
// components append them, a recording publisher standing in for a broker's consumer, and a poll.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { Application } from '../../src/app.js';
import { createOutbox, type CloudEvent, type EventPublisher, type NewEvent } from '../../src/components/events/index.js';
import { derivedData, publishedData } from '../../src/components/events/events.repo.js';

export interface OutboxRow {
  seq: number;
  id: string;
  type: string;
  subject: string;
  data: Record<string, unknown>;
  traceparent: string | null;
  createdAt: Date;
}

/** The outbox's rows after `afterSeq`, in outbox order, with the data the relay publishes (built for transfer events). */
export async function readOutbox(app: Application, afterSeq = 0): Promise<OutboxRow[]> {
  const { rows } = await sql<{
    seq: string;
    id: string;
    type: string;
    subject: string;
    data: Record<string, unknown>;
    traceparent: string | null;
    created_at: Date;
  }>`select o.seq::text as seq, o.id, o.type, o.subject, ${publishedData} as data, o.traceparent, o.created_at
     from outbox_events o ${derivedData} where o.seq > ${afterSeq} order by o.seq`.execute(app.database.db);
  return rows.map((row) => ({
    seq: Number(row.seq),
    id: row.id,
    type: row.type,
    subject: row.subject,
    data: row.data,
    traceparent: row.traceparent,
    createdAt: row.created_at,
  }));
}

/** The outbox's last position (0 when it is empty). */
export async function lastSeq(app: Application): Promise<number> {
  const { rows } = await sql<{ last: string }>`select coalesce(max(seq), 0)::text as last from outbox_events`.execute(app.database.db);
  return Number(rows[0]?.last ?? '0');
}

export async function cursorOf(app: Application, publisher: string): Promise<{ position: number; leaseOwner: string | null } | undefined> {
  const { rows } = await sql<{ position: string; lease_owner: string | null }>`
    select position::text as position, lease_owner from outbox_cursors where publisher = ${publisher}`.execute(app.database.db);
  const row = rows[0];
  return row ? { position: Number(row.position), leaseOwner: row.lease_owner } : undefined;
}

const writer = createOutbox();

/** `count` events about `subjectPrefix/<n>`, each transaction holding `perTransaction` of them; returns their subjects in order. */
export async function appendEvents(app: Application, subjectPrefix: string, count: number, perTransaction = 1): Promise<string[]> {
  const subjects: string[] = [];
  for (let start = 0; start < count; start += perTransaction) {
    const events: NewEvent[] = [];
    for (let n = start; n < Math.min(count, start + perTransaction); n++) {
      const subject = `${subjectPrefix}/${n}`;
      subjects.push(subject);
      events.push({ type: 'user.updated', subject, data: { n } });
    }
    await app.database.transaction((tx) => writer.append(tx, events));
  }
  return subjects;
}

/** One call of a recording publisher: what it was given, and by which relay. */
export interface Delivery {
  readonly by: string;
  readonly event: CloudEvent;
}

/**
 * A publisher that keeps what it was handed (in `log`, shared by several to play one broker's
 * consumer); `failWhile` makes publish reject while it says yes (the broker is down).
 */
export function recordingPublisher(
  name: string,
  log: Delivery[],
  options: { by?: string; failWhile?: (events: readonly CloudEvent[]) => boolean; calls?: { count: number } } = {},
): EventPublisher & { closed: boolean } {
  const publisher = {
    name,
    closed: false,
    async publish(events: readonly CloudEvent[]) {
      if (options.calls) options.calls.count++;
      if (options.failWhile?.(events)) throw new Error(`${name}: broker down (test)`);
      for (const event of events) log.push({ by: options.by ?? name, event });
    },
    async close() {
      publisher.closed = true;
    },
  };
  return publisher;
}

/** Polls `probe` every 10 ms until it says yes; fails with `what` after `timeoutMs`. */
export async function waitUntil(probe: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}
