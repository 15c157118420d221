// `bastion relay` as its own process, against the shared Redis (a stream of this run's own) and
// PostgreSQL, the way a deployment runs it beside servers started with EVENTS_RELAY_EMBEDDED=false:
//
// - Crash: a backlog of ~2,000 transfer events; the relay process is SIGKILLed at random moments while
//   it publishes (batches of 20) and started again, at least 5 times and until a kill has landed
//   between a publish and the cursor's move (a duplicate in the stream proves it). Then: every event
//   of the outbox is in the stream at least once, de-duplication by id gives exactly the outbox's
//   events, in outbox order, and `bastion events status` shows a backlog of 0.
// - Two relays, the server's embedded one and a `bastion relay` process, on one publisher and no
//   crash: the lease lets one publish at a time, the other takes over when the first stops, and the
//   stream holds every event exactly once, in order.
//
// Redis Streams is the publisher here because the broker does not de-duplicate (NATS would hide a
// re-publication behind Nats-Msg-Id). PostgreSQL only: the relay process needs DATABASE_URL.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import type { CloudEvent } from '../../src/components/events/index.js';
import { MAIN_ENTRY, runCli, serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';
import { loginAdmin, type Session } from '../helpers/auth.js';
import { postgresBackend, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { startServer, type TestServer } from '../helpers/server.js';

const ACCOUNT_COUNT = 20;
const IN_FLIGHT = 32;
const BACKLOG_TRANSFERS = 2_000;
const MIN_KILLS = 5;
/** Kills go on past MIN_KILLS until one has produced a duplicate, up to this many. */
const MAX_KILLS = 20;
/** A kill lands this long (random) after the relay was seen publishing. */
const KILL_AFTER_MS = { min: 100, max: 300 };
/**
 * How long Redis's replies take to reach the crashing relay. Between Redis executing a batch and the
 * relay's UPDATE of its cursor reaching PostgreSQL there is otherwise well under a millisecond (a
 * statement sent is committed even if its sender dies), so one random kill in twenty landed there;
 * with the acknowledgement on the wire this long, most kills do.
 */
const REPLY_DELAY_MS = 20;

const runId = randomBytes(4).toString('hex');
const say = (line: string) => process.stdout.write(`# ${line}\n`);
const randomBetween = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1));

/** The admin's own accounts, each funded by a deposit. */
async function fundedAccounts(server: TestServer, admin: Session, count: number): Promise<string[]> {
  const accounts: string[] = [];
  for (let n = 0; n < count; n++) {
    const opened = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, { token: admin.accessToken });
    assert.equal(opened.status, 201, opened.text);
    const deposit = await server.client.post(`/api/v1/accounts/${opened.body.data.id}/deposits`, { amount: 10_000_000 }, {
      token: admin.accessToken,
      headers: { 'idempotency-key': randomUUID() },
    });
    assert.equal(deposit.status, 201, deposit.text);
    accounts.push(opened.body.data.id);
  }
  return accounts;
}

/** `count` transfers among `accounts`, IN_FLIGHT at a time, every one answered 201. */
async function transfers(server: TestServer, admin: Session, accounts: readonly string[], count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const from = Math.floor(Math.random() * accounts.length);
      const to = (from + 1 + Math.floor(Math.random() * (accounts.length - 1))) % accounts.length;
      const response = await server.client.post(
        '/api/v1/transfers',
        { fromAccountId: accounts[from], toAccountId: accounts[to], amount: 1 + Math.floor(Math.random() * 100) },
        { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } },
      );
      assert.equal(response.status, 201, response.text);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

/** The outbox's event ids in outbox order, and the publisher's cursor. */
async function outboxState(server: TestServer, publisher: string): Promise<{ ids: string[]; lastSeq: number; position: number; leaseOwner: string | null }> {
  const db = server.app.database.db;
  const { rows } = await sql<{ id: string; seq: string }>`select o.id, o.seq::text as seq from outbox_events o order by o.seq`.execute(db);
  const cursor = await sql<{ position: string; lease_owner: string | null }>`
    select position::text as position, lease_owner from outbox_cursors where publisher = ${publisher}`.execute(db);
  return {
    ids: rows.map((row) => row.id),
    lastSeq: Number(rows.at(-1)?.seq ?? '0'),
    position: Number(cursor.rows[0]?.position ?? '0'),
    leaseOwner: cursor.rows[0]?.lease_owner ?? null,
  };
}

/** Every entry of `stream`, oldest first. */
async function readStream(redis: Redis, stream: string): Promise<CloudEvent[]> {
  const events: CloudEvent[] = [];
  let start = '-';
  for (;;) {
    const page = await redis.xrange(stream, start, '+', 'COUNT', 1_000);
    for (const [, fields] of page) events.push(JSON.parse(fields[fields.indexOf('event') + 1] ?? '') as CloudEvent);
    const last = page.at(-1);
    if (page.length < 1_000 || !last) return events;
    start = `(${last[0]}`;
  }
}

/** Each id once, in the order first seen, and how many entries repeated an id already seen. */
function firstOccurrences(events: readonly CloudEvent[]): { unique: CloudEvent[]; duplicates: number } {
  const seen = new Set<string>();
  const unique = events.filter((event) => !seen.has(event.id) && seen.add(event.id) !== undefined);
  return { unique, duplicates: events.length - unique.length };
}

/** De-duplicated, the stream is exactly the outbox, in outbox order. */
function assertExactlyTheOutbox(unique: readonly CloudEvent[], outboxIds: readonly string[]): void {
  const received = new Set(unique.map((event) => event.id));
  const missing = outboxIds.filter((id) => !received.has(id));
  assert.equal(missing.length, 0, `${missing.length} of ${outboxIds.length} outbox events never reached the stream`);
  assert.equal(unique.length, outboxIds.length, 'the stream holds ids that are not in the outbox');
  assert.deepEqual(
    unique.map((event) => event.id),
    outboxIds,
    'first occurrences are not in outbox order',
  );
  for (let n = 1; n < unique.length; n++) assert.ok((unique[n - 1]?.sequence ?? '') < (unique[n]?.sequence ?? ''), `sequence out of order at ${n}`);
}

/** Polls `probe` until it says yes; fails with `what` after `timeoutMs`. */
async function waitFor(probe: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A TCP proxy in front of `target` that passes requests at once and delays every reply by
 * `delayMs`, in order: a broker whose acknowledgements are slow to come back.
 */
async function slowRepliesProxy(target: URL, delayMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', closeBoth);
      socket.on('close', () => {
        sockets.delete(socket);
        closeBoth();
      });
    }
    client.pipe(upstream);
    // Timers of one duration fire in the order they were set: the replies keep their order.
    upstream.on('data', (chunk: Buffer) => setTimeout(() => client.write(chunk), delayMs));
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const proxied = new URL(target.href);
  proxied.hostname = '127.0.0.1';
  proxied.port = String((server.address() as net.AddressInfo).port);
  return {
    url: proxied.href,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** `bastion relay` as a child process (no HTTP; PORT is ignored). */
const startRelayProcess = (env: Record<string, string>): Promise<ServiceProcess> =>
  startServiceProcess(env, { command: [process.execPath, '--import', 'tsx', MAIN_ENTRY, 'relay'], waitForHealth: false });

/** The pid in a relay's lease owner (`host:pid:id`). */
const pidOf = (leaseOwner: string | null): number | undefined => (leaseOwner ? Number(leaseOwner.split(':').at(-2)) : undefined);

describe('bastion relay as a separate process: SIGKILLed while publishing, and beside the embedded relay [postgres]', async () => {
  const skip = (await postgresBackend.skipReason()) ?? (await redisSkipReason());

  it('redis [postgres]: when `bastion relay` is SIGKILLed at random moments while it publishes a backlog of 2,000 transfer events and started again each time, then every event arrives at least once, de-duplication by id gives exactly the outbox in order, a kill between publish and mark was observed (a duplicate), and `bastion events status` shows backlog 0', { skip, timeout: 240_000 }, async () => {
    const stream = `bastion:relay-crash:${runId}`;
    const redis = new Redis(TEST_REDIS_URL);
    const proxy = await slowRepliesProxy(new URL(TEST_REDIS_URL), REPLY_DELAY_MS);
    const server = await startServer(postgresBackend, { EVENTS_RELAY_EMBEDDED: 'false', DATABASE_POOL_SIZE: '10' });
    let relay: ServiceProcess | undefined;
    try {
      const admin = await loginAdmin(server.client);
      const accounts = await fundedAccounts(server, admin, ACCOUNT_COUNT);
      const loading = performance.now();
      await transfers(server, admin, accounts, BACKLOG_TRANSFERS);
      say(`relay crash: a backlog of ${(await outboxState(server, 'redis')).ids.length} events (${BACKLOG_TRANSFERS} transfers in ${((performance.now() - loading) / 1000).toFixed(1)} s)`);

      const relayEnv = serviceEnv(server.database, {
        EVENTS_PUBLISHERS: 'redis',
        REDIS_URL: proxy.url,
        EVENTS_REDIS_STREAM: stream,
        EVENTS_RELAY_BATCH_SIZE: '20',
        EVENTS_RELAY_LEASE_MS: '1000', // the shortest: a killed relay's lease expires soon
        EVENTS_PUBLISH_TIMEOUT_MS: '500', // at most half the lease
        EVENTS_RELAY_POLL_INTERVAL_MS: '20',
        LOG_LEVEL: 'info',
      });

      // Each life: started, seen publishing, SIGKILLed at a random moment. A kill between a publish
      // and its mark shows when the next life publishes that batch again (the same ids), so the
      // duplicates are counted once the next one publishes. The last life is left to finish.
      let kills = 0;
      let killsThatDuplicated = 0;
      let duplicates = 0;
      let toppedUp = 0;
      let markedAtLastKill = 0;
      for (;;) {
        const state = await outboxState(server, 'redis');
        if (state.position >= state.lastSeq - 100) {
          // Almost drained: more backlog, so that the next life is killed mid-way.
          await transfers(server, admin, accounts, 500);
          toppedUp += 500;
        }
        const lengthAtStart = await redis.xlen(stream);
        relay = await startRelayProcess(relayEnv);
        const current = relay;
        // Started (node, tsx, migrations) and past the killed one's lease: it is publishing.
        await waitFor(async () => {
          if (current.child.exitCode !== null) assert.fail(`the relay exited: ${current.stderr()}`);
          return (await redis.xlen(stream)) > lengthAtStart;
        }, 'the restarted relay to publish', 60_000);
        const { duplicates: now } = firstOccurrences(await readStream(redis, stream));
        if (now > duplicates) killsThatDuplicated += 1;
        duplicates = now;
        if (kills >= MIN_KILLS && (duplicates > 0 || kills >= MAX_KILLS)) break;
        await sleep(randomBetween(KILL_AFTER_MS.min, KILL_AFTER_MS.max));
        await relay.kill();
        kills += 1;
        markedAtLastKill = (await outboxState(server, 'redis')).position;
      }
      say(
        `relay crash: ${kills} SIGKILLs, ${killsThatDuplicated} of them between a publish and its mark (${duplicates} entries published again); ` +
          `cursor at ${markedAtLastKill} at the last kill${toppedUp ? `; ${toppedUp} transfers added to keep a backlog` : ''}`,
      );

      const finishing = relay;
      await waitFor(async () => {
        if (finishing.child.exitCode !== null) assert.fail(`the relay exited: ${finishing.stderr()}`);
        const state = await outboxState(server, 'redis');
        return state.position === state.lastSeq;
      }, 'the last relay to publish the backlog', 60_000);

      const status = await runCli(['events', 'status'], serviceEnv(server.database), { timeoutMs: 60_000 });
      assert.equal(status.code, 0, status.stderr);
      const report = JSON.parse(status.stdout) as { lastPosition: string; publishers: Array<{ publisher: string; position: string; backlog: number }> };
      const redisStatus = report.publishers.find((entry) => entry.publisher === 'redis');
      assert.equal(redisStatus?.backlog, 0, status.stdout);
      assert.equal(redisStatus?.position, report.lastPosition);

      relay.signal('SIGTERM');
      const exit = await relay.exited;
      assert.equal(exit.code, 0, `a stopped relay exits 0: ${relay.stderr()}`);

      const received = await readStream(redis, stream);
      const { unique } = firstOccurrences(received);
      const { ids } = await outboxState(server, 'redis');
      say(`relay crash: ${received.length} entries in the stream, ${unique.length} distinct, outbox ${ids.length}`);
      assertExactlyTheOutbox(unique, ids);
      // Checked last, so that a lost event is what a broken relay is reported for.
      assert.ok(duplicates > 0, `no kill of ${kills} landed between a publish and its mark`);
    } finally {
      await relay?.kill();
      await proxy.close();
      await redis.del(stream).catch(() => undefined);
      redis.disconnect();
      await server.stop();
    }
  });

  it('redis [postgres]: when the embedded relay and a `bastion relay` process run on the same publisher under load, and the process is stopped half-way, then the lease lets one publish at a time, the other takes over, and the stream holds every event exactly once, in order', { skip, timeout: 180_000 }, async () => {
    const stream = `bastion:two-relays:${runId}`;
    const redis = new Redis(TEST_REDIS_URL);
    const env = {
      EVENTS_PUBLISHERS: 'redis',
      REDIS_URL: TEST_REDIS_URL,
      EVENTS_REDIS_STREAM: stream,
      EVENTS_RELAY_LEASE_MS: '3000',
      EVENTS_PUBLISH_TIMEOUT_MS: '1500',
      EVENTS_RELAY_POLL_INTERVAL_MS: '20',
    };
    let database: TestDatabase | undefined;
    let relay: ServiceProcess | undefined;
    let server: TestServer | undefined;
    try {
      database = await postgresBackend.createDatabase();
      // The process first: it migrates the database and takes the lease; the server's relay waits.
      relay = await startRelayProcess(serviceEnv(database, { ...env, LOG_LEVEL: 'info' }));
      const standalone = relay;
      await waitFor(async () => {
        if (standalone.child.exitCode !== null) assert.fail(`the relay exited: ${standalone.stderr()}`);
        return standalone.stdout().includes('took the lease');
      }, 'the relay process to take the lease', 60_000);
      server = await startServer(postgresBackend, { ...env, DATABASE_POOL_SIZE: '10' }, { database });
      const running = server;

      const admin = await loginAdmin(server.client);
      const accounts = await fundedAccounts(server, admin, 10);
      await transfers(server, admin, accounts, 250);
      await waitFor(async () => {
        const state = await outboxState(running, 'redis');
        return state.position === state.lastSeq;
      }, 'the first half to be published', 60_000);
      assert.equal(pidOf((await outboxState(server, 'redis')).leaseOwner), relay.child.pid, 'the process held the lease while both ran');

      relay.signal('SIGTERM'); // a clean stop releases the lease
      assert.equal((await relay.exited).code, 0, relay.stderr());
      await transfers(server, admin, accounts, 250);
      await waitFor(async () => {
        const state = await outboxState(running, 'redis');
        return state.position === state.lastSeq;
      }, 'the embedded relay to take over and publish the second half', 60_000);
      const { ids, leaseOwner } = await outboxState(server, 'redis');
      assert.equal(pidOf(leaseOwner), process.pid, 'the embedded relay took over');

      const received = await readStream(redis, stream);
      const { unique, duplicates } = firstOccurrences(received);
      say(`two relays: ${received.length} entries in the stream, ${unique.length} distinct, outbox ${ids.length}, ${duplicates} duplicates`);
      assert.equal(duplicates, 0, 'with a lease and no crash, no event is published twice');
      assertExactlyTheOutbox(unique, ids);
    } finally {
      await relay?.kill();
      await server?.stop();
      await database?.drop();
      await redis.del(stream).catch(() => undefined);
      redis.disconnect();
    }
  });
});
