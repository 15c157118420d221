// The relay: moves committed outbox events to each publisher, in outbox order, at least once.
//
// Each publisher has a cursor row (outbox_cursors): the last position it published, and a lease. One
// relay at a time holds a publisher's lease (several relays, in the server or as `bastion relay`, are
// standbys for each other), so in the normal case no event is published twice. A relay reads the
// events after the cursor, publishes them, then moves the cursor: a crash in between re-publishes them
// with the same ids, which the brokers (NATS Msg-Id) or the consumers de-duplicate. A broker that is
// down stalls only its own publisher; events wait in the outbox.
//
// THE GAP RULE. Positions are taken when a transaction writes its events, but transactions commit in
// another order, so a reader can see position 12 before 11 exists: 11 is being written (it will
// appear) or was rolled back (it never will). Publishing 12 and moving the cursor past 11 would lose
// it. So the relay publishes only up to the first missing position, and skips it only once it is
// known to be final: every transaction that could hold it has ended. A transaction takes its id before
// its positions (outbox_append), so the one holding 11 had an id below the xmax of the snapshot in
// which 12 was seen; once the database's xmin passes that xmax, all of them have ended. Re-read then:
// 11 is there (publish it, in order) or is gone for good (skip it).
import { hostname } from 'node:os';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Database } from '../../platform/db/index.js';
import { newId } from '../../platform/ids.js';
import type { Logger } from '../../platform/logger.js';
import type { CloudEvent } from './cloud-event.js';
import * as repo from './events.repo.js';
import type { EventPublisher } from './publishers/publisher.js';

export interface RelayOptions {
  readonly database: Database;
  readonly publishers: readonly EventPublisher[];
  /** The CloudEvents `source` of every event (EVENTS_SOURCE). */
  readonly source: string;
  readonly batchSize: number;
  /** How often an idle relay looks for events written by other instances. */
  readonly pollIntervalMs: number;
  /** How long a lease lasts without renewal: a crashed relay's publishers move to another after it. */
  readonly leaseMs: number;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** Tests only: called after a batch is published and before its cursor moves (a crash there). */
  readonly afterPublish?: (publisher: string, events: readonly CloudEvent[]) => Promise<void>;
}

export interface Relay {
  /** Publish now: events were committed on this instance. */
  wake(): void;
  /** Stops after the batch in flight, releases the leases. */
  stop(): Promise<void>;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** How often a relay waiting on a gap looks again (the transactions it waits for are short). */
const GAP_RECHECK_MS = 10;

const padSequence = (seq: bigint): string => seq.toString().padStart(20, '0');

export function toCloudEvent(event: repo.StoredEvent, source: string): CloudEvent {
  return {
    specversion: '1.0',
    id: event.id,
    source,
    type: event.type,
    subject: event.subject,
    time: event.createdAt.toISOString(),
    datacontenttype: 'application/json',
    data: event.data,
    sequence: padSequence(event.seq),
    ...(event.traceparent ? { traceparent: event.traceparent } : {}),
  };
}

interface RelayMetrics {
  published: Counter<'publisher'>;
  failures: Counter<'publisher'>;
  lagSeconds: Histogram<'publisher'>;
  backlog: Gauge<'publisher'>;
}

function createRelayMetrics(registry: Registry | undefined): RelayMetrics {
  const registers = registry ? [registry] : [];
  return {
    published: new Counter({
      name: 'bastion_events_published_total',
      help: 'Outbox events published, by publisher (a re-publication after a failure counts again)',
      labelNames: ['publisher'] as const,
      registers,
    }),
    failures: new Counter({
      name: 'bastion_events_publish_failures_total',
      help: 'Batches a publisher failed to publish (retried with backoff)',
      labelNames: ['publisher'] as const,
      registers,
    }),
    lagSeconds: new Histogram({
      name: 'bastion_events_publish_lag_seconds',
      help: 'From an event written (its transaction) to its publication confirmed by the broker',
      labelNames: ['publisher'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    backlog: new Gauge({
      name: 'bastion_events_backlog',
      help: 'Outbox events not yet published, by publisher (as last seen by this instance)',
      labelNames: ['publisher'] as const,
      registers,
    }),
  };
}

/** Sleeps that stop() ends, and that wake() ends too unless they are a backoff. */
class Waker {
  private pending: (() => void) | undefined;
  private woken = false;
  constructor(private readonly stopped: AbortSignal) {}
  wake(): void {
    this.woken = true;
    this.pending?.();
  }
  async wait(ms: number, wakeable = true): Promise<void> {
    if (wakeable && this.woken) {
      this.woken = false;
      return;
    }
    if (this.stopped.aborted) return;
    await new Promise<void>((resolve) => {
      // Whichever comes first ends the sleep and clears the others (no timer or listener is left
      // behind by a sleep that a wake-up cut short).
      const done = () => {
        clearTimeout(timer);
        this.stopped.removeEventListener('abort', done);
        if (this.pending === done) this.pending = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.stopped.addEventListener('abort', done, { once: true });
      if (wakeable) this.pending = done;
    });
    if (wakeable) this.woken = false;
  }
}

/** A batch read once for every publisher at the same position, with its events as CloudEvents. */
interface SharedBatch {
  readonly batch: repo.Batch;
  readonly events: readonly CloudEvent[];
}

export function startRelay(options: RelayOptions): Relay {
  const owner = `${hostname()}:${process.pid}:${newId()}`;
  const metrics = createRelayMetrics(options.registry);
  const stopped = new AbortController();
  const wakers = options.publishers.map(() => new Waker(stopped.signal));
  let stopping = false;

  // One read for all publishers. They usually stand at the same position and are woken by the same
  // commit, so the publishers that ask for the batch after `position` while a read of it is in flight
  // share that read (its rows, its snapshot, its CloudEvents: each event is read, parsed and built
  // once, not once per broker). A publisher joins only a read that began after the last wake-up:
  // one that began before a commit it was woken for might not see that commit.
  let wakeGeneration = 0;
  let inFlight: { position: bigint; generation: number; read: Promise<SharedBatch> } | undefined;
  const readShared = (position: bigint): Promise<SharedBatch> => {
    if (inFlight && inFlight.position === position && inFlight.generation === wakeGeneration) return inFlight.read;
    const read = repo.readAfter(options.database.db, position, options.batchSize).then((batch) => ({
      batch,
      events: batch.events.map((event) => toCloudEvent(event, options.source)),
    }));
    const entry = { position, generation: wakeGeneration, read };
    inFlight = entry;
    const clear = () => {
      if (inFlight === entry) inFlight = undefined;
    };
    read.then(clear, clear);
    return read;
  };

  async function run(publisher: EventPublisher, waker: Waker): Promise<void> {
    const { database, logger } = options;
    const name = publisher.name;
    let held = false;
    let renewedAt = 0;
    let position = 0n;
    let gap: { at: bigint; waitForXmin: bigint } | undefined;
    let backoffMs = BACKOFF_MIN_MS;
    let failing = false;

    while (!stopping) {
      try {
        if (!held || Date.now() - renewedAt > options.leaseMs / 3) {
          const leased = await repo.acquireLease(database.db, name, owner, options.leaseMs);
          if (leased === undefined) {
            held = false;
            gap = undefined;
            // Not cut short by wake(): a standby woken by every local commit would ask for the lease
            // (a row lock on the cursor) at the commit rate.
            await waker.wait(options.leaseMs / 2, false);
            continue;
          }
          if (!held) logger.info({ publisher: name, position: leased.toString() }, 'events: relay took the lease');
          held = true;
          renewedAt = Date.now();
          position = leased;
        }

        const wanted = publisher.wants ? await publisher.wants() : true;
        // A publisher that wants no events now (the webhooks' fan-out without endpoints) only moves
        // its cursor: positions alone are read, and no envelope is built.
        const full = wanted ? await readShared(position) : undefined;
        const batch = full?.batch ?? (await repo.readPositionsAfter(database.db, position, options.batchSize));
        let ready = 0;
        let next = position + 1n;
        for (const event of batch.events) {
          if (event.seq !== next) {
            if (!gap || gap.at !== next) {
              gap = { at: next, waitForXmin: batch.snapshotXmax };
              break;
            }
            if (batch.snapshotXmin < gap.waitForXmin) break;
            // Every transaction that could write the missing positions has ended: they are gone.
            gap = undefined;
          }
          ready++;
          next = event.seq + 1n;
        }
        metrics.backlog.set({ publisher: name }, Number(batch.lastSeq - position));

        const last = batch.events[ready - 1];
        if (last) {
          const stored = full ? full.batch.events.slice(0, ready) : [];
          const events = full ? full.events.slice(0, ready) : [];
          if (wanted) {
            await publisher.publish(events);
            await options.afterPublish?.(name, events);
          }
          if (!(await repo.advance(database.db, name, owner, last.seq, options.leaseMs))) {
            logger.warn({ publisher: name }, 'events: relay lost its lease; another relay continues');
            held = false;
            gap = undefined;
            continue;
          }
          renewedAt = Date.now();
          position = last.seq;
          const now = Date.now();
          if (wanted) {
            metrics.published.inc({ publisher: name }, events.length);
            for (const event of stored) metrics.lagSeconds.observe({ publisher: name }, (now - event.createdAt.getTime()) / 1000);
          }
          metrics.backlog.set({ publisher: name }, Number(batch.lastSeq - position));
          if (failing) logger.info({ publisher: name }, 'events: publisher recovered');
          failing = false;
          backoffMs = BACKOFF_MIN_MS;
          if (ready === options.batchSize) continue;
        }
        if (!wanted) {
          // Nothing to publish: look again at the next poll, not at every local commit (which would
          // read and move the cursor at the ledger's commit rate, competing with it for nothing).
          // The first events after a webhook endpoint is enabled wait up to one poll interval.
          await waker.wait(options.pollIntervalMs, false);
          continue;
        }
        await waker.wait(gap ? GAP_RECHECK_MS : options.pollIntervalMs);
      } catch (error) {
        metrics.failures.inc({ publisher: name });
        if (!failing) logger.warn({ err: error, publisher: name }, 'events: publishing failed; events wait in the outbox and are retried');
        failing = true;
        // Not cut short by wake(): commits must not turn a backoff into a busy loop on a dead broker.
        await waker.wait(backoffMs, false);
        backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      }
    }
    if (held) await repo.releaseLease(database.db, name, owner).catch(() => undefined);
  }

  const loops = options.publishers.map((publisher, index) => run(publisher, wakers[index] ?? new Waker(stopped.signal)));

  return {
    wake() {
      wakeGeneration++;
      for (const waker of wakers) waker.wake();
    },
    async stop() {
      stopping = true;
      stopped.abort();
      await Promise.all(loops);
      await Promise.all(options.publishers.map((publisher) => publisher.close().catch(() => undefined)));
    },
  };
}
