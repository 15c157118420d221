// The whole path of an event, end to end, for each publisher: the real server (embedded relay) takes
// 1,000 transfers over REST, 32 in flight, while its broker — a private process of this suite, never
// the shared one — is stopped after ~300 of them and started again 2.5 s later (the last 200 wait
// for the restart, so that events flow before, queue during and flow after). A real consumer of
// that broker (a JetStream ordered consumer from the start of the stream, a durable queue bound to
// the exchange before the load, XRANGE) then reads until it holds every event of the outbox:
//
// - nothing lost: the ids received, de-duplicated, are exactly the outbox's; the transfer.created
//   ones are exactly the transfers answered 201 (and the deposits that funded the accounts);
// - order per account kept: first occurrences of each account's events (fromAccountId/toAccountId)
//   arrive in increasing `sequence` (outbox position);
// - NATS stores no duplicate (Nats-Msg-Id); RabbitMQ and Redis may deliver some twice (a batch in
//   flight when the broker went away is published again): counted and reported.
//
// PostgreSQL only (the load and the broker restarts are what is tested; PGlite adds time, not
// coverage). The private Redis runs with appendonly yes / appendfsync always in a directory of its
// own, so an acknowledged XADD outlives the restart (test/helpers/redis.ts's PrivateRedis keeps
// nothing on disk, like the shared CI one; a restart of that one loses the stream by design).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import { connect as connectAmqp } from 'amqplib';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import type { CloudEvent } from '../../src/components/events/index.js';
import { loginAdmin, type Session } from '../helpers/auth.js';
import { postgresBackend } from '../helpers/backends.js';
import { PrivateNats, privateNatsSkipReason, PrivateRabbitMq, privateRabbitMqSkipReason } from '../helpers/brokers.js';
import { freePort } from '../helpers/ports.js';
import { privateRedisSkipReason } from '../helpers/redis.js';
import { startServer, type TestServer } from '../helpers/server.js';

const ACCOUNT_COUNT = 20;
const TRANSFER_COUNT = 1_000;
const IN_FLIGHT = 32;
/** The broker is stopped once this many transfers have been answered… */
const STOP_AFTER = 300;
/**
 * …and started again this long after it has stopped: longer than the publish timeout below, so a
 * publish the client held while it had not yet noticed the outage times out and counts as a failure
 * (with 1.5 s, a NATS client once carried its buffered publishes through the outage untouched).
 */
const RESTART_AFTER_MS = 2_500;
/** …and the last transfers wait for it: the restart falls inside the load, however fast the load is. */
const SENT_AFTER_RESTART = 200;
/** How long the consumer may wait for the last event once the load and the restart are over. */
const CONSUME_TIMEOUT_MS = 60_000;

const runId = randomBytes(4).toString('hex');
const say = (line: string) => process.stdout.write(`# ${line}\n`);

/** A broker process this suite owns, and a consumer of it. */
interface BrokerUnderTest {
  readonly name: 'nats' | 'rabbitmq' | 'redis';
  /** The server's environment: which publisher, where, under which names. */
  readonly env: Record<string, string>;
  /** Called before the load (a queue that must exist before the first event is published). */
  prepare(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Everything the consumer receives, in arrival order, until `complete` says yes or the timeout passes. */
  consume(complete: (received: readonly CloudEvent[]) => boolean, timeoutMs: number): Promise<CloudEvent[]>;
  dispose(): Promise<void>;
}

/**
 * A redis-server that keeps its data: every acknowledged write is fsynced to the append-only file
 * before the reply (appendfsync always), in a directory kept across stop()/start(). stop() is
 * SIGTERM, the way an operator stops it.
 */
class PersistentRedis {
  private child: ChildProcess | undefined;
  private readonly kill = () => this.child?.kill('SIGKILL');

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async create(): Promise<PersistentRedis> {
    const server = new PersistentRedis(await freePort(), await mkdtemp(path.join(os.tmpdir(), 'bastion-redis-aof-')));
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private async answers(): Promise<boolean> {
    const probe = new Redis(this.url, { lazyConnect: true, connectTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      return (await probe.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      probe.disconnect();
    }
  }

  async start(timeoutMs = 15_000): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--appendonly', 'yes', '--appendfsync', 'always'];
    const child = spawn('redis-server', [...args, '--save', '', '--daemonize', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
    this.child = child;
    process.once('exit', this.kill);
    const deadline = Date.now() + timeoutMs;
    while (!(await this.answers())) {
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
      process.removeListener('exit', this.kill);
    }
  }

  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Polls until `done` says yes or `timeoutMs` pass. */
async function pollUntil(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await sleep(50);
}

async function privateNats(): Promise<BrokerUnderTest> {
  const server = await PrivateNats.create();
  const stream = `BASTION_E2E_${runId.toUpperCase()}`;
  return {
    name: 'nats',
    env: { EVENTS_PUBLISHERS: 'nats', NATS_URL: server.url, EVENTS_NATS_STREAM: stream, EVENTS_NATS_SUBJECT_PREFIX: `bastione2e.${runId}` },
    prepare: async () => undefined, // the publisher creates the stream; the consumer reads it from the start
    stop: () => server.stop(),
    start: () => server.start(),
    async consume(complete, timeoutMs) {
      const connection = await connectNats({ servers: server.url });
      const received: CloudEvent[] = [];
      try {
        const manager = await jetstreamManager(connection);
        const deadline = Date.now() + timeoutMs;
        // The stream appears with the first batch the relay publishes.
        while (!(await manager.streams.info(stream).then(() => true, () => false))) {
          if (Date.now() > deadline) return received;
          await sleep(100);
        }
        // An ordered consumer: every message from the stream's first, in stream order.
        const consumer = await jetstream(connection).consumers.get(stream);
        const messages = await consumer.consume({ max_messages: 500 });
        const timer = setTimeout(() => void messages.close(), Math.max(0, deadline - Date.now()));
        try {
          for await (const message of messages) {
            received.push(message.json<CloudEvent>());
            if (complete(received)) break;
          }
        } finally {
          clearTimeout(timer);
          await messages.close();
        }
      } finally {
        await connection.close();
      }
      return received;
    },
    dispose: () => server.dispose(),
  };
}

async function privateRabbitMq(): Promise<BrokerUnderTest> {
  const node = await PrivateRabbitMq.create();
  const exchange = `bastion.e2e.${runId}`;
  const queue = `${exchange}.all`;
  return {
    name: 'rabbitmq',
    env: { EVENTS_PUBLISHERS: 'rabbitmq', AMQP_URL: node.url, EVENTS_RABBITMQ_EXCHANGE: exchange },
    async prepare() {
      // A durable queue bound to every routing key before the first event: a topic exchange drops
      // what no queue is bound to.
      const connection = await connectAmqp(node.url);
      try {
        const channel = await connection.createChannel();
        await channel.assertExchange(exchange, 'topic', { durable: true });
        await channel.assertQueue(queue, { durable: true });
        await channel.bindQueue(queue, exchange, '#');
      } finally {
        await connection.close();
      }
    },
    stop: () => node.stop(),
    start: () => node.start(),
    async consume(complete, timeoutMs) {
      const connection = await connectAmqp(node.url);
      const received: CloudEvent[] = [];
      try {
        const channel = await connection.createChannel();
        const { consumerTag } = await channel.consume(queue, (message) => {
          if (message) received.push(JSON.parse(message.content.toString('utf8')) as CloudEvent);
        }, { noAck: true });
        await pollUntil(() => complete(received), timeoutMs);
        await channel.cancel(consumerTag);
      } finally {
        await connection.close();
      }
      return received;
    },
    dispose: () => node.dispose(),
  };
}

async function persistentRedis(): Promise<BrokerUnderTest> {
  const server = await PersistentRedis.create();
  const stream = `bastion:e2e:${runId}:events`;
  return {
    name: 'redis',
    env: { EVENTS_PUBLISHERS: 'redis', REDIS_URL: server.url, EVENTS_REDIS_STREAM: stream },
    prepare: async () => undefined, // XRANGE reads the stream from its first entry
    stop: () => server.stop(),
    start: () => server.start(),
    async consume(complete, timeoutMs) {
      const client = new Redis(server.url);
      const received: CloudEvent[] = [];
      try {
        const deadline = Date.now() + timeoutMs;
        let start = '-';
        while (!complete(received) && Date.now() < deadline) {
          const page = await client.xrange(stream, start, '+', 'COUNT', 500);
          for (const [, fields] of page) {
            const at = fields.indexOf('event');
            received.push(JSON.parse(fields[at + 1] ?? '') as CloudEvent);
          }
          const last = page.at(-1);
          if (last) start = `(${last[0]}`;
          else await sleep(50);
        }
      } finally {
        client.disconnect();
      }
      return received;
    },
    dispose: () => server.dispose(),
  };
}

interface Transfer {
  readonly id: string;
}

/** The admin's own accounts, each funded by a deposit; returns the accounts and the deposits' transfer ids. */
async function fundedAccounts(server: TestServer, admin: Session, count: number): Promise<{ accounts: string[]; deposits: string[] }> {
  const accounts: string[] = [];
  const deposits: string[] = [];
  for (let n = 0; n < count; n++) {
    const opened = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, { token: admin.accessToken });
    assert.equal(opened.status, 201, opened.text);
    accounts.push(opened.body.data.id);
    const deposit = await server.client.post<{ data: Transfer }>(`/api/v1/accounts/${opened.body.data.id}/deposits`, { amount: 1_000_000 }, {
      token: admin.accessToken,
      headers: { 'idempotency-key': randomUUID() },
    });
    assert.equal(deposit.status, 201, deposit.text);
    deposits.push(deposit.body.data.id);
  }
  return { accounts, deposits };
}

/** The outbox's events, in outbox order (what every consumer must end up with). */
async function outboxEvents(server: TestServer): Promise<Array<{ id: string; sequence: string }>> {
  const { rows } = await sql<{ id: string; seq: string }>`select o.id, o.seq::text as seq from outbox_events o order by o.seq`.execute(server.app.database.db);
  return rows.map((row) => ({ id: row.id, sequence: row.seq.padStart(20, '0') }));
}

/** Each id once, in the order first received: what a consumer de-duplicating on the id keeps. */
function firstOccurrences(received: readonly CloudEvent[]): { unique: CloudEvent[]; duplicates: number } {
  const seen = new Set<string>();
  const unique = received.filter((event) => !seen.has(event.id) && seen.add(event.id) !== undefined);
  return { unique, duplicates: received.length - unique.length };
}

/** Fails at the first event of an account that arrives after one of the same account written later. */
function assertOrderPerAccount(events: readonly CloudEvent[]): number {
  const lastSequence = new Map<string, string>();
  for (const event of events) {
    for (const key of ['fromAccountId', 'toAccountId'] as const) {
      const account = event.data[key];
      if (typeof account !== 'string') continue;
      const before = lastSequence.get(account);
      assert.ok(before === undefined || before < event.sequence, `account ${account}: ${event.type} ${event.sequence} arrived after ${before}`);
      lastSequence.set(account, event.sequence);
    }
  }
  return lastSequence.size;
}

describe('events end to end: 1,000 transfers over REST while the broker is stopped and restarted [postgres]', async () => {
  const postgresSkip = await postgresBackend.skipReason();
  const skips = {
    nats: postgresSkip ?? (await privateNatsSkipReason()),
    rabbitmq: postgresSkip ?? (await privateRabbitMqSkipReason()),
    redis: postgresSkip ?? (await privateRedisSkipReason()),
  };
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  const cases: Array<[BrokerUnderTest['name'], () => Promise<BrokerUnderTest>, string]> = [
    ['nats', privateNats, 'the stream holds each event once (Nats-Msg-Id de-duplication)'],
    ['rabbitmq', privateRabbitMq, 'every event reaches a durable queue bound before the load (duplicates counted)'],
    ['redis', persistentRedis, 'XRANGE reads every event from a Redis with appendfsync always (duplicates counted)'],
  ];
  for (const [name, create, promise] of cases) {
    it(`${name} [postgres]: when 1,000 transfers are made 32 at a time and the broker is stopped after ~300 and restarted, then a real consumer receives every event of the outbox, the transfer.created ones exactly the 201s, each account's events in outbox order; ${promise}`, { skip: skips[name], timeout: 180_000 }, async () => {
      const broker = await create();
      cleanups.push(() => broker.dispose());
      await broker.prepare();
      const server = await startServer(postgresBackend, {
        ...broker.env,
        EVENTS_PUBLISH_TIMEOUT_MS: '1000',
        DATABASE_POOL_SIZE: '10',
      });
      cleanups.push(() => server.stop());
      const admin = await loginAdmin(server.client);
      const { accounts, deposits } = await fundedAccounts(server, admin, ACCOUNT_COUNT);

      // The load, and the outage triggered by its progress.
      let answered = 0;
      let answeredWhileDown = 0;
      let answeredAfterRestart = 0;
      let brokerDown = false;
      let restarted = false;
      let outageOver = false;
      let stopNow: () => void = () => undefined;
      const stopTime = new Promise<void>((resolve) => (stopNow = resolve));
      let backNow: () => void = () => undefined;
      const back = new Promise<void>((resolve) => (backNow = resolve));
      const statuses = new Map<number, number>();
      const created: string[] = [];
      let next = 0;
      const started = performance.now();
      const worker = async () => {
        while (next < TRANSFER_COUNT) {
          if (next >= TRANSFER_COUNT - SENT_AFTER_RESTART && !outageOver) {
            await back;
            continue;
          }
          next += 1;
          const from = Math.floor(Math.random() * accounts.length);
          const to = (from + 1 + Math.floor(Math.random() * (accounts.length - 1))) % accounts.length;
          const response = await server.client.post<{ data: Transfer }>(
            '/api/v1/transfers',
            { fromAccountId: accounts[from], toAccountId: accounts[to], amount: 1 + Math.floor(Math.random() * 100) },
            { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } },
          );
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          if (response.status === 201) created.push(response.body.data.id);
          answered += 1;
          if (brokerDown) answeredWhileDown += 1;
          if (restarted) answeredAfterRestart += 1;
          if (answered === STOP_AFTER) stopNow();
        }
      };
      const outage = async () => {
        await stopTime;
        try {
          const stopping = performance.now();
          brokerDown = true;
          await broker.stop();
          const stopped = performance.now();
          await sleep(RESTART_AFTER_MS);
          await broker.start();
          brokerDown = false;
          restarted = true;
          return { stopMs: stopped - stopping, downMs: performance.now() - stopped };
        } finally {
          outageOver = true;
          backNow(); // also when the restart failed: the load ends, the test reports the failure
        }
      };
      const loadDone = Promise.all(Array.from({ length: IN_FLIGHT }, worker)).then(() => performance.now());
      const [{ stopMs, downMs }, loadEnded] = await Promise.all([outage(), loadDone]);
      const loadSeconds = (loadEnded - started) / 1000;
      say(
        `${name}: ${TRANSFER_COUNT} transfers in ${loadSeconds.toFixed(1)} s (${(TRANSFER_COUNT / loadSeconds).toFixed(0)}/s), ` +
          `${answeredWhileDown} answered while the broker was stopping or down and ${answeredAfterRestart} after it was back; stop took ${stopMs.toFixed(0)} ms, down ${downMs.toFixed(0)} ms until it answered again`,
      );
      assert.deepEqual(Object.fromEntries(statuses), { 201: TRANSFER_COUNT }, 'every transfer answered 201 (a broker outage never reaches the API)');
      assert.ok(answeredAfterRestart >= SENT_AFTER_RESTART, `${answeredAfterRestart} transfers after the restart`);

      // The relay did meet the outage: publishes failed (and were retried).
      const metrics = await fetch(`${server.baseUrl}/metrics`).then((response) => response.text());
      const failures = new RegExp(`^bastion_events_publish_failures_total\\{publisher="${name}"\\} (\\d+)$`, 'm').exec(metrics)?.[1];
      say(`${name}: ${failures ?? 0} failed publishes during the outage`);
      assert.ok(Number(failures ?? 0) > 0, 'the relay never failed to publish: the outage missed it');

      // Every event of the outbox, read back by a real consumer of the broker.
      const outbox = await outboxEvents(server);
      const expected = new Set(outbox.map((event) => event.id));
      const consuming = performance.now();
      let checked = 0;
      const received = await broker.consume((events) => {
        // Called after every message: only the new ones are looked at.
        for (; checked < events.length; checked++) expected.delete(events[checked]?.id ?? '');
        return expected.size === 0;
      }, CONSUME_TIMEOUT_MS);
      say(`${name}: the consumer had all ${outbox.length} events ${((performance.now() - consuming) / 1000).toFixed(1)} s after the load and the restart`);
      assert.equal(expected.size, 0, `${expected.size} of ${outbox.length} events of the outbox never reached the consumer`);

      const { unique, duplicates } = firstOccurrences(received);
      say(`${name}: ${received.length} messages received, ${unique.length} distinct ids, ${duplicates} duplicates`);
      const sequenceOf = new Map(outbox.map((event) => [event.id, event.sequence]));
      for (const event of unique) assert.equal(event.sequence, sequenceOf.get(event.id), `event ${event.id}: not an outbox event, or another position`);
      assert.equal(unique.length, outbox.length);

      const transfersCreated = unique.filter((event) => event.type === 'transfer.created');
      const loadEvents = transfersCreated.filter((event) => !deposits.includes(String(event.data['id'])));
      assert.equal(loadEvents.length, TRANSFER_COUNT);
      assert.deepEqual(
        loadEvents.map((event) => String(event.data['id'])).sort(),
        [...created].sort(),
        'the transfer.created events are exactly the transfers answered 201',
      );
      assert.deepEqual(
        transfersCreated.filter((event) => deposits.includes(String(event.data['id']))).map((event) => String(event.data['id'])).sort(),
        [...deposits].sort(),
      );
      const accountsSeen = assertOrderPerAccount(unique);
      assert.ok(accountsSeen >= ACCOUNT_COUNT, `${accountsSeen} accounts in the events`);
      if (name === 'nats') assert.equal(duplicates, 0, 'JetStream de-duplicates by Nats-Msg-Id');
    });
  }
});
