// The relay, against a recording publisher that stands in for a broker's consumer (the real brokers
// are tested in publishers.test.ts): the gap rule forced with real concurrent transactions, several
// relays on one publisher, a broker that fails for a while, a crash between publish and mark, pruning,
// and the CloudEvents envelope.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it as test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql, type KyselyPlugin } from 'kysely';
import pg from 'pg';
import type { Application } from '../../src/app.js';
import {
  createOutbox,
  pruneOutbox,
  startRelay,
  toCloudEvent,
  type CloudEvent,
  type EventPublisher,
  type Relay,
  type RelayOptions,
} from '../../src/components/events/index.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { ISO_UTC, UUID } from '../helpers/errors.js';
import { appendEvents, cursorOf, lastSeq, readOutbox, recordingPublisher, waitUntil, type Delivery } from './outbox-helpers.js';

const sequenceOf = (seq: number): string => String(seq).padStart(20, '0');

/** The deliveries about subjects under `prefix`, in the order they were handed over. */
const about = (log: readonly Delivery[], prefix: string): Delivery[] => log.filter((delivery) => delivery.event.subject.startsWith(`${prefix}/`));

/** Each id once, in the order first seen: what a consumer de-duplicating on the id keeps. */
const deduplicated = (deliveries: readonly Delivery[]): CloudEvent[] => {
  const seen = new Set<string>();
  return deliveries.map((delivery) => delivery.event).filter((event) => !seen.has(event.id) && seen.add(event.id) !== undefined);
};

/** A Kysely plugin counting the raw statements (the events repo's SQL) that contain `fragment`. */
function countingStatements(fragment: string): { plugin: KyselyPlugin; count: number } {
  const counter = {
    count: 0,
    plugin: {
      transformQuery(args) {
        const node = args.node as { kind: string; sqlFragments?: readonly string[] };
        if (node.kind === 'RawNode' && (node.sqlFragments ?? []).join('?').includes(fragment)) counter.count++;
        return args.node;
      },
      transformResult: async (args) => args.result,
    } satisfies KyselyPlugin,
  };
  return counter;
}

/** Every delivery's outbox position strictly above the one before: in order, nothing twice. */
function assertStrictlyInOrder(deliveries: readonly Delivery[]): void {
  for (let n = 1; n < deliveries.length; n++) {
    const [before, after] = [deliveries[n - 1]?.event.sequence ?? '', deliveries[n]?.event.sequence ?? ''];
    assert.ok(before < after, `delivery ${n}: sequence ${after} after ${before}`);
  }
}

describeOnBackends('relay', ({ backend, it, before, startApplication }) => {
  let app: Application;
  let databaseUrl: string | undefined;

  before(async () => {
    // No EVENTS_PUBLISHERS: the server runs no relay of its own; each test starts the ones it needs.
    const started = await startApplication();
    app = started.app;
    databaseUrl = started.database.databaseUrl;
  });

  const relayOn = (publishers: EventPublisher[], options: Partial<RelayOptions> = {}): Relay =>
    startRelay({
      database: app.database,
      publishers,
      source: '/bastion-test',
      batchSize: 100,
      pollIntervalMs: 10,
      leaseMs: 1_000,
      logger: app.logger,
      ...options,
    });

  /** The outbox rows about `prefix`, in outbox order. */
  const stored = async (prefix: string) => (await readOutbox(app)).filter((row) => row.subject.startsWith(`${prefix}/`));

  it(
    'gap rule: when position N is still being written and N+1 is committed, then N+1 waits; once N commits, N then N+1 are published; if N rolls back, N+1 follows',
    { skip: backend.name === 'pglite' ? 'PGlite is one connection: a transaction cannot stay open beside another' : undefined },
    async (t) => {
      const url = databaseUrl;
      assert.ok(url, 'a PostgreSQL database');
      const holder = new pg.Client({ connectionString: url });
      const other = new pg.Client({ connectionString: url });
      await Promise.all([holder.connect(), other.connect()]);
      t.after(() => Promise.all([holder.end(), other.end()]));
      const log: Delivery[] = [];
      const name = `gap-${randomUUID()}`;
      const relay = relayOn([recordingPublisher(name, log)]);
      t.after(() => relay.stop());

      const append = async (client: pg.Client, subject: string): Promise<number> => {
        const event = { id: randomUUID(), type: 'user.updated', subject, data: {}, traceparent: null, time: new Date().toISOString() };
        await client.query('select outbox_append($1::jsonb)', [JSON.stringify([event])]);
        const { rows } = await client.query<{ seq: string }>("select currval('outbox_events_seq')::text as seq");
        return Number(rows[0]?.seq);
      };
      const caughtUpTo = async (seq: number) => waitUntil(async () => (await cursorOf(app, name))?.position === seq, `the cursor at ${seq}`);

      for (const outcome of ['commit', 'rollback'] as const) {
        const prefix = `gap-${outcome}-${randomUUID()}`;
        await caughtUpTo(await lastSeq(app));

        await holder.query('begin');
        const n = await append(holder, `${prefix}/n`);
        const next = await append(other, `${prefix}/n+1`); // autocommit: committed now
        assert.equal(next, n + 1);

        // A naive relay (read `seq > cursor`, publish, move the cursor to the last row read) sees N+1
        // now, publishes it and moves its cursor to N+1; when N commits, `seq > N+1` never returns it:
        // N is lost. This relay must not go past N while the transaction holding N is open.
        const naive = await app.database.db
          .selectFrom('outbox_events')
          .select(sql<string>`seq::text`.as('seq'))
          .where('seq', '>=', String(n))
          .execute();
        assert.deepEqual(
          naive.map((row) => Number(row.seq)),
          [n + 1],
          'a reader outside the open transaction sees N+1 without N',
        );
        await sleep(300); // ~30 polls and gap re-checks
        assert.deepEqual(about(log, prefix), [], 'nothing about N or N+1 is published while N is open');
        assert.equal((await cursorOf(app, name))?.position, n - 1, 'the cursor stays before N');

        const decidedAt = Date.now();
        await holder.query(outcome);
        if (outcome === 'commit') {
          await waitUntil(() => about(log, prefix).length === 2, 'N and N+1 published');
          assert.deepEqual(
            about(log, prefix).map((delivery) => [delivery.event.subject, delivery.event.sequence]),
            [
              [`${prefix}/n`, sequenceOf(n)],
              [`${prefix}/n+1`, sequenceOf(n + 1)],
            ],
          );
        } else {
          await waitUntil(() => about(log, prefix).length === 1, 'N+1 published after N rolled back', 1_000);
          assert.ok(Date.now() - decidedAt < 1_000);
          assert.deepEqual(
            about(log, prefix).map((delivery) => [delivery.event.subject, delivery.event.sequence]),
            [[`${prefix}/n+1`, sequenceOf(n + 1)]],
          );
        }
        await caughtUpTo(n + 1);
      }
      assertStrictlyInOrder(log);
    },
  );

  it('when 3 relays share a publisher while 500 events are written, then each event is published once, in order; stopping the holder hands over within the lease', async (t) => {
    const log: Delivery[] = [];
    const name = `shared-${randomUUID()}`;
    const leaseMs = 2_000;
    const relays = ['r1', 'r2', 'r3'].map((by) => ({ by, relay: relayOn([recordingPublisher(name, log, { by })], { leaseMs }) }));
    t.after(() => Promise.all(relays.map(({ relay }) => relay.stop())));

    // 50 transactions of 10 events, 5 at a time: on PostgreSQL they commit out of position order.
    const prefix = `shared-${randomUUID()}`;
    await Promise.all(
      Array.from({ length: 5 }, async (_, writer) => {
        for (let round = 0; round < 10; round++) await appendEvents(app, `${prefix}/w${writer}-${round}`, 10, 10);
      }),
    );
    const rows = await stored(prefix);
    assert.equal(rows.length, 500);
    await waitUntil(() => about(log, prefix).length >= 500, '500 events published', 15_000);
    await sleep(100); // time for a second publication to show, if there were one
    assert.deepEqual(
      about(log, prefix).map((delivery) => delivery.event.id),
      rows.map((row) => row.id),
      'each event exactly once, in outbox order',
    );
    assertStrictlyInOrder(log);

    // The holder is the one that published last; stopping it releases its lease to a standby.
    const holder = log[log.length - 1]?.by;
    const stopping = relays.find(({ by }) => by === holder);
    assert.ok(stopping);
    const position = (await cursorOf(app, name))?.position;
    await stopping.relay.stop();
    const stoppedAt = Date.now();
    const after = `after-${randomUUID()}`;
    await appendEvents(app, after, 20, 5);
    await waitUntil(() => about(log, after).length >= 20, 'a standby to publish', leaseMs + 1_000);
    const tookOverMs = Date.now() - stoppedAt;
    assert.ok(tookOverMs < leaseMs, `took over in ${tookOverMs} ms`);
    const continued = log.slice(log.findIndex((delivery) => Number(delivery.event.sequence) > (position ?? 0)));
    assert.ok(continued.every((delivery) => delivery.by !== holder), 'the stopped relay published nothing more');
    assert.deepEqual(
      about(log, after).map((delivery) => delivery.event.id),
      (await stored(after)).map((row) => row.id),
    );
    assertStrictlyInOrder(log);
  });

  it('when a standby relay is woken by commits while another holds the lease, then it still asks for the lease only every leaseMs / 2', async (t) => {
    const log: Delivery[] = [];
    const name = `standby-${randomUUID()}`;
    const leaseMs = 2_000;
    const holder = relayOn([recordingPublisher(name, log, { by: 'holder' })], { leaseMs });
    t.after(() => holder.stop());
    await waitUntil(async () => (await cursorOf(app, name))?.leaseOwner != null, 'the holder to take the lease');

    // The standby's queries, counted: each lease attempt is one INSERT .. ON CONFLICT on the cursor
    // row, which locks that row even when it changes nothing (contending with the holder's moves).
    const leaseAttempts = countingStatements('insert into outbox_cursors');
    const standby = relayOn([recordingPublisher(name, log, { by: 'standby' })], {
      leaseMs,
      database: { ...app.database, db: app.database.db.withPlugin(leaseAttempts.plugin) },
    });
    t.after(() => standby.stop());

    // Commits on the standby's instance wake its relay (outbox.committed -> relay.wake), here every 2 ms for 1 s.
    const until = Date.now() + 1_000;
    while (Date.now() < until) {
      standby.wake();
      await sleep(2);
    }
    assert.ok(log.every((delivery) => delivery.by === 'holder'));
    assert.ok(leaseAttempts.count <= 3, `the standby asked for the lease ${leaseAttempts.count} times in 1 s (expected about 1000 / (leaseMs / 2) + 1)`);
  });

  it('when several publishers stand at the same position and one commit wakes them, then the batch is read once for all of them, and each still gets every event in order', async (t) => {
    const logs: Delivery[][] = [[], [], []];
    const names = logs.map((_, index) => `shared-${index}-${randomUUID()}`);
    // The relay's batch reads, counted (readAfter's statement; a positions-only read is another).
    const reads = countingStatements('left join lateral (');
    // A long poll interval: every read below is one a wake-up asked for.
    const relay = relayOn(
      names.map((name, index) => recordingPublisher(name, logs[index] ?? [])),
      { pollIntervalMs: 60_000, database: { ...app.database, db: app.database.db.withPlugin(reads.plugin) } },
    );
    t.after(() => relay.stop());
    const end = await lastSeq(app);
    for (const name of names) await waitUntil(async () => (await cursorOf(app, name))?.position === end, `${name} caught up`);

    const prefix = `shared-${randomUUID()}`;
    const rounds = 20;
    reads.count = 0;
    for (let round = 1; round <= rounds; round++) {
      await appendEvents(app, prefix, 1);
      relay.wake(); // as a commit on this instance does
      await waitUntil(() => logs.every((log) => about(log, prefix).length === round), `round ${round} delivered to every publisher`);
    }
    for (const log of logs) {
      assert.equal(about(log, prefix).length, rounds);
      assertStrictlyInOrder(about(log, prefix));
    }
    // One read per commit, shared; read by each publisher on its own, it would be three per commit.
    assert.ok(reads.count <= rounds + 3, `${reads.count} batch reads for ${rounds} commits woken on 3 publishers`);
  });

  it('when a publisher wants no events, then the relay moves its cursor past them at its poll interval, not at every commit; once it wants them, it publishes those written since, in order', async (t) => {
    const log: Delivery[] = [];
    const name = `unwanted-${randomUUID()}`;
    let wanting = false;
    let asked = 0;
    const publisher: EventPublisher = {
      ...recordingPublisher(name, log),
      async wants() {
        asked++;
        return wanting;
      },
    };
    const pollIntervalMs = 200;
    const relay = relayOn([publisher], { pollIntervalMs });
    t.after(() => relay.stop());
    // Caught up with what earlier tests wrote (read a batch at a time, without waiting) first.
    const existing = await lastSeq(app);
    await waitUntil(async () => (await cursorOf(app, name))?.position === existing, 'the relay past the earlier events', 2_000);

    // 30 commits, each waking the relay as a local commit does: a relay that read and moved its cursor
    // per wake-up would ask about 30 times; one that waits for its poll asks once per interval.
    const prefix = `unwanted-${randomUUID()}`;
    const askedBefore = asked;
    const startedAt = Date.now();
    for (let n = 0; n < 30; n++) {
      await appendEvents(app, `${prefix}/${n}`, 1);
      relay.wake();
      await sleep(10);
    }
    const last = await lastSeq(app);
    await waitUntil(async () => (await cursorOf(app, name))?.position === last, 'the cursor past the unwanted events', 2_000);
    const polls = Math.ceil((Date.now() - startedAt) / pollIntervalMs) + 2;
    assert.ok(asked - askedBefore <= polls, `asked ${asked - askedBefore} times in at most ${polls} polls`);
    assert.deepEqual(about(log, prefix), [], 'nothing published while unwanted');

    wanting = true;
    const later = `wanted-${randomUUID()}`;
    await appendEvents(app, later, 5, 2);
    relay.wake();
    await waitUntil(() => about(log, later).length === 5, 'the events written once wanted', 2_000);
    assert.deepEqual(
      about(log, later).map((delivery) => delivery.event.id),
      (await stored(later)).map((row) => row.id),
    );
    assert.deepEqual(about(log, prefix), [], 'the unwanted ones are not published later');
    assertStrictlyInOrder(log);
  });

  it('when a publisher fails for a while, then its events wait at its cursor and all arrive in order once it recovers; another publisher keeps flowing meanwhile', async (t) => {
    const flakyLog: Delivery[] = [];
    const steadyLog: Delivery[] = [];
    let down = true;
    const calls = { count: 0 };
    const flakyName = `flaky-${randomUUID()}`;
    const relay = relayOn([
      recordingPublisher(flakyName, flakyLog, { failWhile: () => down, calls }),
      recordingPublisher(`steady-${randomUUID()}`, steadyLog),
    ]);
    t.after(() => relay.stop());

    const prefix = `flaky-${randomUUID()}`;
    await appendEvents(app, prefix, 30, 3);
    await waitUntil(() => about(steadyLog, prefix).length === 30, 'the healthy publisher to publish everything');
    await sleep(300);
    assert.equal(flakyLog.length, 0);
    assert.ok(calls.count >= 2, `retried (${calls.count} attempts)`);
    assert.equal((await cursorOf(app, flakyName))?.position, 0, 'the failing publisher\'s cursor has not moved');

    down = false;
    await waitUntil(() => about(flakyLog, prefix).length === 30, 'the recovered publisher to catch up', 8_000);
    const all = await readOutbox(app);
    await waitUntil(async () => (await cursorOf(app, flakyName))?.position === all[all.length - 1]?.seq, 'its cursor at the end');
    assert.deepEqual(
      flakyLog.map((delivery) => delivery.event.id),
      all.map((row) => row.id),
      'everything since the start, once each, in outbox order',
    );
    assert.deepEqual(
      about(flakyLog, prefix).map((delivery) => delivery.event.id),
      about(steadyLog, prefix).map((delivery) => delivery.event.id),
    );
  });

  it('when a relay crashes between publishing a batch and moving its cursor, then the batch is published again with the same ids; de-duplicated, each once', async (t) => {
    const log: Delivery[] = [];
    const name = `crash-${randomUUID()}`;
    const prefix = `crash-${randomUUID()}`;
    let crashedWith: readonly CloudEvent[] | undefined;
    const first: Relay = relayOn([recordingPublisher(name, log, { by: 'first' })], {
      async afterPublish(_publisher, events) {
        if (crashedWith || !events.some((event) => event.subject.startsWith(`${prefix}/`))) return;
        crashedWith = events;
        void first.stop(); // the process dies here: no cursor move, no more work
        throw new Error('crash between publish and mark (test)');
      },
    });
    t.after(() => first.stop());

    await appendEvents(app, prefix, 10, 10);
    await waitUntil(() => crashedWith !== undefined, 'the crash');
    await first.stop();
    const crashed = crashedWith ?? [];
    const position = (await cursorOf(app, name))?.position ?? 0;
    assert.ok(crashed.every((event) => Number(event.sequence) > position), 'the cursor did not move past the crashed batch');

    const second = relayOn([recordingPublisher(name, log, { by: 'second' })]);
    t.after(() => second.stop());
    await waitUntil(() => about(log, prefix).filter((delivery) => delivery.by === 'second').length === 10, 'the restarted relay');

    const again = log.filter((delivery) => delivery.by === 'second').map((delivery) => delivery.event);
    for (const event of crashed) {
      assert.deepEqual(
        again.find((republished) => republished.id === event.id),
        event,
        'published again, identical, same id',
      );
    }
    const rows = await stored(prefix);
    assert.deepEqual(
      deduplicated(about(log, prefix)).map((event) => event.id),
      rows.map((row) => row.id),
      'de-duplicated by id: each once, in order',
    );
    const all = await readOutbox(app);
    assert.deepEqual(
      deduplicated(log).map((event) => event.id),
      all.map((row) => row.id),
    );
  });

  it('when pruning, then only events older than the retention that every active cursor has passed are deleted', async () => {
    const hourMs = 3_600_000;
    const oldOutbox = createOutbox({ now: () => new Date(Date.now() - 2 * hourMs) });
    const prefix = `prune-${randomUUID()}`;
    await app.database.transaction((tx) =>
      oldOutbox.append(tx, Array.from({ length: 6 }, (_, n) => ({ type: 'user.updated' as const, subject: `${prefix}/old-${n}`, data: {} }))),
    );
    await appendEvents(app, prefix, 2);
    const rows = await stored(prefix);
    const seqs = rows.map((row) => row.seq);
    assert.equal(seqs.length, 8);
    const [o1, , o3, , , , r1, r2] = seqs as [number, number, number, number, number, number, number, number];

    const mine = [`ahead-${prefix}`, `behind-${prefix}`, `gone-${prefix}`] as const;
    const cursor = (publisher: string, position: number, publishedAgo: string) =>
      sql`insert into outbox_cursors (publisher, position, published_at) values (${publisher}, ${position}, now() - ${publishedAgo}::interval)`.execute(
        app.database.db,
      );
    await cursor(mine[0], r2, '1 second');
    await cursor(mine[1], o3, '10 minutes');
    await cursor(mine[2], o1 - 1, '2 days'); // inactive longer than the retention: holds nothing back
    // Only this test's cursors count: earlier tests' relays have stopped, and the application's own
    // consumers (their cursors, locked here) are made inactive for the length of the prune.
    const prune = (limit: number) =>
      app.database.transaction(async (tx) => {
        await sql`update outbox_cursors set published_at = now() - interval '2 days'
                  where publisher not in (${sql.join([...mine])})`.execute(tx);
        return pruneOutbox(tx, 3_600, limit);
      });
    const remaining = async () => (await stored(prefix)).map((row) => row.seq);

    assert.equal(await prune(1_000), 3);
    assert.deepEqual(await remaining(), seqs.slice(3), 'old events up to the slowest active cursor');

    await sql`update outbox_cursors set position = ${r2}, published_at = now() where publisher = ${mine[1]}`.execute(app.database.db);
    assert.equal(await prune(2), 2, 'at most the limit');
    assert.equal(await prune(1_000), 1);
    assert.deepEqual(await remaining(), [r1, r2], 'recent events stay, even once every cursor passed them');
    assert.equal(await prune(1_000), 0);
  });
});

describe('CloudEvents envelope', () => {
  const stored = {
    seq: 42n,
    id: '01a23f3d-6d90-75ea-b486-08d546439db4',
    type: 'transfer.posted' as const,
    subject: 'transfers/01a23f3d-6d90-75ea-b486-08d546439db4',
    data: { id: 'x', amount: 5 },
    traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    createdAt: new Date('2025-01-02T03:04:05.678Z'),
  };

  test('when an outbox row becomes a CloudEvent, then it has the required attributes, the padded sequence and the traceparent', () => {
    const event = toCloudEvent(stored, '/bastion');
    assert.deepEqual(event, {
      specversion: '1.0',
      id: stored.id,
      source: '/bastion',
      type: 'transfer.posted',
      subject: stored.subject,
      time: '2025-01-02T03:04:05.678Z',
      datacontenttype: 'application/json',
      data: stored.data,
      sequence: '00000000000000000042',
      traceparent: stored.traceparent,
    });
    assert.match(event.id, UUID);
    assert.match(event.time, ISO_UTC);
    assert.equal(toCloudEvent({ ...stored, seq: 9_007_199_254_740_993n }, '/bastion').sequence, '00009007199254740993');
    assert.ok(toCloudEvent({ ...stored, seq: 9n }, '/b').sequence < toCloudEvent({ ...stored, seq: 10n }, '/b').sequence, 'string order is outbox order');
  });

  test('when the row has no traceparent, then the envelope has no traceparent attribute', () => {
    const event = toCloudEvent({ ...stored, traceparent: null }, '/bastion');
    assert.equal('traceparent' in event, false);
    assert.equal(JSON.parse(JSON.stringify(event)).traceparent, undefined);
  });
});
