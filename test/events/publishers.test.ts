// The three event publishers against real brokers, each read back by a real consumer of that broker:
// a JetStream ordered consumer, an AMQP queue bound to the exchange, XRANGE on the stream.
//
// - 1,000 events in batches of 100 arrive once each, in publish order, as CloudEvents envelopes with
//   the subject / routing key / headers the contract names.
// - A batch published again: JetStream keeps each id once (Nats-Msg-Id); RabbitMQ and Redis deliver
//   it again with the same id (at least once; consumers de-duplicate on it).
// - Outage: the suite's own broker process (never the shared one, which parallel suites use) is
//   stopped; a publish rejects within its timeout instead of hanging; after the restart the same
//   publisher object publishes again and nothing acknowledged is lost.
// - close() leaves nothing open: a child process that used the publishers exits by itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { jetstream, jetstreamManager, StorageType, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect as connectNats, nanos, type NatsConnection } from '@nats-io/transport-node';
import { connect as connectAmqp, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { CLOUDEVENTS_CONTENT_TYPE, EVENT_TYPES, type CloudEvent } from '../../src/components/events/cloud-event.js';
import {
  createNatsPublisher,
  createRabbitMqPublisher,
  createRedisStreamsPublisher,
  type EventPublisher,
} from '../../src/components/events/publishers/index.js';
import { newId } from '../../src/platform/ids.js';
import { redisSkipReason, TEST_REDIS_URL } from '../helpers/backends.js';
import {
  natsSkipReason,
  PrivateNats,
  privateNatsSkipReason,
  PrivateRabbitMq,
  privateRabbitMqSkipReason,
  rabbitMqSkipReason,
  redisServerPid,
  signalRedisServer,
  TEST_NATS_URL,
  TEST_RABBITMQ_URL,
} from '../helpers/brokers.js';
import { freePort } from '../helpers/ports.js';
import { PrivateRedis, privateRedisSkipReason } from '../helpers/redis.js';

const EVENT_COUNT = 1_000;
const BATCH_SIZE = 100;
const TIMEOUT_MS = 5_000;
/** The timeout in the outage tests, and how much later than it a failed publish may return. */
const OUTAGE_TIMEOUT_MS = 1_000;
const OUTAGE_MARGIN_MS = 500;
/** How long a restarted broker may take before the same publisher gets a batch through again. */
const RECOVERY_LIMIT_MS = 30_000;

const say = (line: string) => process.stdout.write(`# ${line}\n`);
const logger = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

interface LogLine {
  readonly level: number;
  readonly msg: string;
}

/** A logger that keeps its lines, to count what an outage logs. */
function capturingLogger(): { logger: typeof logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return { logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) }), lines };
}
/** Unique per run, so that parallel runs on the shared brokers never see each other's events. */
const runId = randomBytes(4).toString('hex');

let sequence = 0;
/** `count` events of every type in turn, each about its own account, numbered in publish order. */
function makeEvents(count: number): CloudEvent[] {
  return Array.from({ length: count }, () => {
    sequence += 1;
    const type = EVENT_TYPES[sequence % EVENT_TYPES.length] ?? 'transfer.posted';
    return {
      specversion: '1.0',
      id: newId(),
      source: '/bastion/test',
      type,
      subject: `accounts/${newId()}`,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { index: sequence, amount: '12.50', note: 'ünïcødé ✓' },
      sequence: String(sequence).padStart(20, '0'),
      traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
    } satisfies CloudEvent;
  });
}

const batchesOf = <T>(items: readonly T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, index) => items.slice(index * size, (index + 1) * size));

/** Parses a message body and checks it is a structured-mode CloudEvents 1.0 envelope; returns it. */
function parseEnvelope(body: string | Buffer | Uint8Array): CloudEvent {
  const text = typeof body === 'string' ? body : Buffer.from(body).toString('utf8');
  const event = JSON.parse(text) as CloudEvent;
  assert.equal(event.specversion, '1.0');
  assert.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(typeof event.source, 'string');
  assert.ok((EVENT_TYPES as readonly string[]).includes(event.type), `unknown type ${event.type}`);
  assert.equal(typeof event.subject, 'string');
  assert.ok(!Number.isNaN(Date.parse(event.time)), `time ${event.time} is not a timestamp`);
  assert.equal(event.datacontenttype, 'application/json');
  assert.equal(typeof event.data, 'object');
  assert.match(event.sequence, /^\d{20}$/);
  return event;
}

/** Checks that `received` holds every one of `sent`, equal, once each and in order. */
function assertExactlyInOrder(received: readonly CloudEvent[], sent: readonly CloudEvent[]) {
  assert.equal(new Set(received.map((event) => event.id)).size, received.length, 'an id arrived twice');
  assert.equal(received.length, sent.length);
  assert.deepEqual(
    received.map((event) => event.id),
    sent.map((event) => event.id),
    'not in publish order',
  );
  assert.deepEqual(received, sent);
}

/**
 * Checks that every id of `sent` is in `received` (duplicates allowed) and that their first
 * occurrences are in publish order.
 */
function assertAllAtLeastOnceInOrder(received: readonly string[], sent: readonly CloudEvent[]) {
  const firstSeen = new Map<string, number>();
  received.forEach((id, position) => {
    if (!firstSeen.has(id)) firstSeen.set(id, position);
  });
  const positions = sent.map((event) => firstSeen.get(event.id));
  const missing = positions.filter((position) => position === undefined).length;
  assert.equal(missing, 0, `${missing} of ${sent.length} acknowledged events are missing`);
  for (let index = 1; index < positions.length; index += 1) {
    assert.ok((positions[index] ?? 0) > (positions[index - 1] ?? 0), `event ${index} arrived before event ${index - 1}`);
  }
}

/** Calls `publish` and measures it; the outcome is 'ok' or the error. */
async function timedPublish(publisher: EventPublisher, events: readonly CloudEvent[]): Promise<{ ms: number; error: unknown }> {
  const started = performance.now();
  try {
    await publisher.publish(events);
    return { ms: performance.now() - started, error: undefined };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

interface OutageBroker {
  /** SIGSTOP: connections stay open, nothing answers. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Publishes `events` with `publisher` again and again (as the relay would) until it goes through. */
async function retryUntilPublished(name: string, publisher: EventPublisher, events: readonly CloudEvent[], since: string) {
  const started = performance.now();
  let attempts = 0;
  for (;;) {
    attempts += 1;
    const { error } = await timedPublish(publisher, events);
    if (!error) break;
    assert.ok(performance.now() - started < RECOVERY_LIMIT_MS, `${name}: still failing ${RECOVERY_LIMIT_MS} ms after ${since}: ${String(error)}`);
    await sleep(200);
  }
  say(`${name}: the same publisher got the batch through ${(performance.now() - started).toFixed(0)} ms after ${since} (attempt ${attempts})`);
}

/** Publishes `events` `times` times, expecting each to reject within the outage timeout plus the margin. */
async function expectPromptFailures(name: string, publisher: EventPublisher, events: readonly CloudEvent[], state: string, times: number) {
  for (let attempt = 1; attempt <= times; attempt += 1) {
    const { ms, error } = await timedPublish(publisher, events);
    assert.ok(error instanceof Error, `${name}: publish ${attempt} while the broker is ${state} did not fail`);
    say(`${name}: publish ${attempt} while the broker is ${state} rejected after ${ms.toFixed(0)} ms (${error.message})`);
    assert.ok(ms <= OUTAGE_TIMEOUT_MS + OUTAGE_MARGIN_MS, `${name}: publish ${attempt} took ${ms.toFixed(0)} ms to fail`);
  }
}

/**
 * A batch before the trouble. The broker frozen (SIGSTOP): two publishes, each rejecting within the
 * timeout plus a margin; thawed: the same publisher retried (as the relay would) until the batch goes
 * through. The broker stopped: three publishes rejecting as promptly; started again: retried until
 * through, then two more batches. Returns what was acknowledged before the stop and after the restart.
 */
async function runOutage(name: string, publisher: EventPublisher, broker: OutageBroker, logLines: readonly LogLine[]) {
  const first = makeEvents(BATCH_SIZE);
  await publisher.publish(first);

  const whileFrozen = makeEvents(BATCH_SIZE);
  await broker.freeze();
  try {
    await expectPromptFailures(name, publisher, whileFrozen, 'frozen', 2);
  } finally {
    await broker.thaw();
  }
  await retryUntilPublished(name, publisher, whileFrozen, 'the thaw');

  await broker.stop();
  const whileStopped = makeEvents(BATCH_SIZE);
  await expectPromptFailures(name, publisher, whileStopped, 'stopped', 3);
  await broker.start();
  await retryUntilPublished(name, publisher, whileStopped, 'the restart');
  const afterwards = makeEvents(2 * BATCH_SIZE);
  for (const batch of batchesOf(afterwards, BATCH_SIZE)) await publisher.publish(batch);
  // Two outages (frozen, stopped), however many publishes failed in each: one warning and one
  // recovery line apiece.
  const WARN = 40;
  const INFO = 30;
  const outageLines = logLines.filter((line) => line.level === WARN && line.msg.includes('unavailable'));
  const recoveryLines = logLines.filter((line) => line.level === INFO && line.msg.includes('available again'));
  assert.deepEqual([outageLines.length, recoveryLines.length], [2, 2], JSON.stringify(logLines, null, 1));
  return { beforeStop: [...first, ...whileFrozen], acknowledgedAfterRestart: [...whileStopped, ...afterwards] };
}

/**
 * Runs a child Node process that creates each kind of publisher for `targets` (a live broker: the
 * publish must succeed; a dead port: it must fail), publishes one batch, closes, and then must exit
 * by itself: any socket, timer or reconnect loop left behind would keep it alive.
 */
async function assertChildExitsAfterClose(kind: 'nats' | 'rabbitmq' | 'redis', targets: ReadonlyArray<{ url: string; live: boolean }>, names: Record<string, string>) {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const script = `
    const config = JSON.parse(process.env.PUBLISHER_CLOSE_CHECK);
    const publishers = await import(config.module);
    const { pino } = await import('pino');
    const logger = pino({ level: 'silent' });
    const create = {
      nats: (url) => publishers.createNatsPublisher({ url, timeoutMs: 1000, logger, ...config.names }),
      rabbitmq: (url) => publishers.createRabbitMqPublisher({ url, timeoutMs: 1000, logger, ...config.names }),
      redis: (url) => publishers.createRedisStreamsPublisher({ url, timeoutMs: 1000, logger, ...config.names }),
    }[config.kind];
    await create(config.targets[0].url).close(); // never used
    for (const target of config.targets) {
      const publisher = create(target.url);
      const outcome = await publisher.publish(config.events).then(() => 'published', (error) => 'failed: ' + error.message);
      if ((outcome === 'published') !== target.live) throw new Error(target.url + ': ' + outcome);
      await publisher.close();
    }
    process.stdout.write('closed\\n');
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      PUBLISHER_CLOSE_CHECK: JSON.stringify({
        module: pathToFileURL(path.join(repoRoot, 'src/components/events/publishers/index.ts')).href,
        kind,
        targets,
        names,
        events: makeEvents(10),
      }),
    },
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit');
  let closedAt: number | undefined;
  child.stdout.on('data', (chunk: Buffer) => {
    if (chunk.toString().includes('closed')) closedAt ??= performance.now();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  assert.equal(signal, null, `the process did not exit by itself after close() (killed); output:\n${output}`);
  assert.equal(code, 0, output);
  assert.ok(closedAt !== undefined, output);
  const lingerMs = performance.now() - closedAt;
  say(`${kind}: the process exited ${lingerMs.toFixed(0)} ms after close()`);
  assert.ok(lingerMs < 1_000, `the process lingered ${lingerMs.toFixed(0)} ms after close()`);
}

describe('NATS JetStream publisher', async () => {
  const skip = await natsSkipReason();
  const privateSkip = skip ?? (await privateNatsSkipReason());
  const stream = `BASTION_TEST_${runId.toUpperCase()}`;
  const subjectPrefix = `bastiontest.${runId}.events`;
  let connection: NatsConnection | undefined;
  let manager: JetStreamManager | undefined;
  let publisher: EventPublisher | undefined;
  const createdStreams: string[] = [];

  before(async () => {
    if (skip) return;
    connection = await connectNats({ servers: TEST_NATS_URL });
    manager = await jetstreamManager(connection);
    await manager.streams.delete(stream).catch(() => undefined);
    createdStreams.push(stream);
    publisher = createNatsPublisher({ url: TEST_NATS_URL, stream, subjectPrefix, timeoutMs: TIMEOUT_MS, logger });
  });

  after(async () => {
    await publisher?.close();
    for (const name of createdStreams) await manager?.streams.delete(name).catch(() => undefined);
    await connection?.close();
  });

  /** Every message of `name`, in stream order, read by an ordered consumer. */
  async function readStream(nc: NatsConnection, name: string, expected: number): Promise<JsMsg[]> {
    const consumer = await jetstream(nc).consumers.get(name);
    const messages = await consumer.consume({ max_messages: 500 });
    const received: JsMsg[] = [];
    const timer = setTimeout(() => void messages.close(), 10_000);
    try {
      for await (const message of messages) {
        received.push(message);
        if (received.length >= expected) break;
      }
    } finally {
      clearTimeout(timer);
      await messages.close();
    }
    return received;
  }

  it('when 1,000 events are published in batches of 100, then the stream is created and a consumer reads each once, in order, on <prefix>.<type> with Nats-Msg-Id and the CloudEvents content type', { skip, timeout: 60_000 }, async () => {
    assert.ok(connection && manager && publisher);
    const sent = makeEvents(EVENT_COUNT);
    const started = performance.now();
    for (const batch of batchesOf(sent, BATCH_SIZE)) await publisher.publish(batch);
    say(`nats: ${EVENT_COUNT} events in ${((performance.now() - started) / 1000).toFixed(2)} s`);

    const info = await manager.streams.info(stream);
    assert.deepEqual(info.config.subjects, [`${subjectPrefix}.>`]);
    assert.equal(info.config.storage, StorageType.File);
    assert.ok(info.config.duplicate_window >= nanos(2 * 60_000), `duplicate window ${info.config.duplicate_window} ns`);
    assert.equal(info.state.messages, EVENT_COUNT);

    const messages = await readStream(connection, stream, EVENT_COUNT);
    const received = messages.map((message) => {
      const event = parseEnvelope(message.data);
      assert.equal(message.subject, `${subjectPrefix}.${event.type}`);
      assert.equal(message.headers?.get('Nats-Msg-Id'), event.id);
      assert.equal(message.headers?.get('Content-Type'), CLOUDEVENTS_CONTENT_TYPE);
      return event;
    });
    assertExactlyInOrder(received, sent);
  });

  it('when a batch is published again, then the stream holds each id once (server-side de-duplication)', { skip, timeout: 30_000 }, async () => {
    assert.ok(connection && manager && publisher);
    const before = (await manager.streams.info(stream)).state.messages;
    const batch = makeEvents(BATCH_SIZE);
    await publisher.publish(batch);
    await publisher.publish(batch);
    await publisher.publish(batch.slice(10, 20));
    const info = await manager.streams.info(stream);
    assert.equal(info.state.messages, before + BATCH_SIZE);
    const messages = await readStream(connection, stream, info.state.messages);
    const ids = messages.map((message) => message.headers?.get('Nats-Msg-Id'));
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual(ids.slice(-BATCH_SIZE), batch.map((event) => event.id));
  });

  it('when its nats-server is stopped, then a publish rejects within its timeout; after the restart the same publisher publishes again and nothing acknowledged is lost', { skip: privateSkip, timeout: 90_000 }, async () => {
    const server = await PrivateNats.create();
    const captured = capturingLogger();
    const outagePublisher = createNatsPublisher({ url: server.url, timeoutMs: OUTAGE_TIMEOUT_MS, logger: captured.logger });
    try {
      const { beforeStop, acknowledgedAfterRestart } = await runOutage('nats', outagePublisher, {
        freeze: async () => server.freeze(),
        thaw: async () => server.thaw(),
        stop: () => server.stop(),
        start: () => server.start(),
      }, captured.lines);
      const nc = await connectNats({ servers: server.url });
      try {
        // The defaults (BASTION_EVENTS over bastion.events.>) on a server of its own; file storage kept it across the restart.
        const info = await (await jetstreamManager(nc)).streams.info('BASTION_EVENTS');
        const messages = await readStream(nc, 'BASTION_EVENTS', info.state.messages);
        assert.ok(messages.every((message) => message.subject.startsWith('bastion.events.')));
        const received = messages.map((message) => parseEnvelope(message.data));
        // Publishes that timed out while the server was away may have been stored when it came back:
        // de-duplication by Nats-Msg-Id still leaves exactly one copy of each event.
        assertExactlyInOrder(received, [...beforeStop, ...acknowledgedAfterRestart]);
      } finally {
        await nc.close();
      }
    } finally {
      await outagePublisher.close();
      await server.dispose();
    }
  });

  it('when close() is called, then nothing is left open: a process that used it exits by itself', { skip, timeout: 30_000 }, async () => {
    await assertChildExitsAfterClose(
      'nats',
      [
        { url: TEST_NATS_URL, live: true },
        { url: `nats://127.0.0.1:${await freePort()}`, live: false },
      ],
      { stream, subjectPrefix },
    );
  });
});

describe('RabbitMQ publisher', async () => {
  const skip = await rabbitMqSkipReason();
  const privateSkip = skip ?? (await privateRabbitMqSkipReason());
  const exchange = `bastion.test.${runId}.events`;
  let connection: ChannelModel | undefined;
  let channel: Channel | undefined;
  let publisher: EventPublisher | undefined;

  before(async () => {
    if (skip) return;
    connection = await connectAmqp(TEST_RABBITMQ_URL);
    channel = await connection.createChannel();
    publisher = createRabbitMqPublisher({ url: TEST_RABBITMQ_URL, exchange, timeoutMs: TIMEOUT_MS, logger });
  });

  after(async () => {
    await publisher?.close();
    await channel?.deleteExchange(exchange).catch(() => undefined);
    await connection?.close().catch(() => undefined);
  });

  /** A queue bound to every routing key of `exchangeName` (declared as the publisher declares it). */
  async function bindQueue(on: Channel, exchangeName: string, options: { durable: boolean }): Promise<string> {
    await on.assertExchange(exchangeName, 'topic', { durable: true });
    const queue = `${exchangeName}.${randomBytes(3).toString('hex')}`;
    await on.assertQueue(queue, options.durable ? { durable: true } : { exclusive: true, autoDelete: true });
    await on.bindQueue(queue, exchangeName, '#');
    return queue;
  }

  /** Consumes `expected` messages from `queue` (or whatever has arrived when 10 s pass). */
  async function consume(on: Channel, queue: string, expected: number): Promise<ConsumeMessage[]> {
    const received: ConsumeMessage[] = [];
    let done: () => void = () => undefined;
    const enough = new Promise<void>((resolve) => (done = resolve));
    const { consumerTag } = await on.consume(
      queue,
      (message) => {
        if (!message) return;
        received.push(message);
        if (received.length >= expected) done();
      },
      { noAck: true },
    );
    await Promise.race([enough, sleep(10_000)]);
    await on.cancel(consumerTag);
    return received;
  }

  it('when 1,000 events are published in batches of 100, then a bound queue receives each once, in order, persistent, keyed by type, with messageId, type, timestamp and the CloudEvents content type', { skip, timeout: 60_000 }, async () => {
    assert.ok(channel && publisher);
    const queue = await bindQueue(channel, exchange, { durable: false });
    const sent = makeEvents(EVENT_COUNT);
    const started = performance.now();
    for (const batch of batchesOf(sent, BATCH_SIZE)) await publisher.publish(batch);
    say(`rabbitmq: ${EVENT_COUNT} events in ${((performance.now() - started) / 1000).toFixed(2)} s`);

    const messages = await consume(channel, queue, EVENT_COUNT);
    const received = messages.map((message) => {
      const event = parseEnvelope(message.content);
      assert.equal(message.fields.exchange, exchange);
      assert.equal(message.fields.routingKey, event.type);
      assert.equal(message.properties.messageId, event.id);
      assert.equal(message.properties.type, event.type);
      assert.equal(message.properties.contentType, CLOUDEVENTS_CONTENT_TYPE);
      assert.equal(message.properties.deliveryMode, 2);
      assert.equal(message.properties.timestamp, Math.floor(Date.parse(event.time) / 1000));
      return event;
    });
    assertExactlyInOrder(received, sent);
    await channel.checkExchange(exchange); // declared by the publisher (durable topic; redeclaring it differently would fail)
  });

  it('when a batch is published again, then the consumer receives it twice with the same messageIds (at least once)', { skip, timeout: 30_000 }, async () => {
    assert.ok(channel && publisher);
    const queue = await bindQueue(channel, exchange, { durable: false });
    const batch = makeEvents(BATCH_SIZE);
    await publisher.publish(batch);
    await publisher.publish(batch);
    const messages = await consume(channel, queue, 2 * BATCH_SIZE);
    const ids = batch.map((event) => event.id);
    assert.deepEqual(
      messages.map((message) => message.properties.messageId as string),
      [...ids, ...ids],
    );
    assert.deepEqual(
      messages.map((message) => parseEnvelope(message.content).id),
      [...ids, ...ids],
    );
  });

  it('when its RabbitMQ node is stopped, then a publish rejects within its timeout; after the restart the same publisher publishes again and nothing acknowledged is lost', { skip: privateSkip, timeout: 150_000 }, async () => {
    const node = await PrivateRabbitMq.create();
    const captured = capturingLogger();
    const outagePublisher = createRabbitMqPublisher({ url: node.url, timeoutMs: OUTAGE_TIMEOUT_MS, logger: captured.logger });
    try {
      const setup = await connectAmqp(node.url);
      const setupChannel = await setup.createChannel();
      const queue = await bindQueue(setupChannel, 'bastion.events', { durable: true }); // the default exchange name
      await setup.close();

      const { beforeStop, acknowledgedAfterRestart } = await runOutage('rabbitmq', outagePublisher, {
        freeze: async () => node.freeze(),
        thaw: async () => node.thaw(),
        stop: () => node.stop(),
        start: () => node.start(),
      }, captured.lines);
      const reader = await connectAmqp(node.url);
      try {
        const readerChannel = await reader.createChannel();
        const { messageCount } = await readerChannel.checkQueue(queue);
        const messages = await consume(readerChannel, queue, messageCount);
        const ids = messages.map((message) => parseEnvelope(message.content).id);
        // Persistent messages in a durable queue outlive the node's restart.
        assertAllAtLeastOnceInOrder(ids, [...beforeStop, ...acknowledgedAfterRestart]);
      } finally {
        await reader.close();
      }
    } finally {
      await outagePublisher.close();
      await node.dispose();
    }
  });

  it('when close() is called, then nothing is left open: a process that used it exits by itself', { skip, timeout: 30_000 }, async () => {
    await assertChildExitsAfterClose(
      'rabbitmq',
      [
        { url: TEST_RABBITMQ_URL, live: true },
        { url: `amqp://guest:guest@127.0.0.1:${await freePort()}`, live: false },
      ],
      { exchange },
    );
  });
});

describe('Redis Streams publisher', async () => {
  const skip = await redisSkipReason();
  const privateSkip = skip ?? (await privateRedisSkipReason());
  const stream = `bastion:test:${runId}:events`;
  const trimmedStream = `bastion:test:${runId}:trimmed`;
  let redis: Redis | undefined;
  let publisher: EventPublisher | undefined;

  before(async () => {
    if (skip) return;
    redis = new Redis(TEST_REDIS_URL);
    publisher = createRedisStreamsPublisher({ url: TEST_REDIS_URL, stream, timeoutMs: TIMEOUT_MS, logger });
  });

  after(async () => {
    await publisher?.close();
    await redis?.del(stream, trimmedStream).catch(() => undefined);
    redis?.disconnect();
  });

  interface Entry {
    readonly fields: Record<string, string>;
    readonly event: CloudEvent;
  }

  /** Every entry of `key`, oldest first, read with XRANGE in pages. */
  async function readStream(client: Redis, key: string): Promise<Entry[]> {
    const entries: Entry[] = [];
    let start = '-';
    for (;;) {
      const page = await client.xrange(key, start, '+', 'COUNT', 500);
      for (const [, flat] of page) {
        const fields: Record<string, string> = {};
        for (let index = 0; index + 1 < flat.length; index += 2) fields[flat[index] ?? ''] = flat[index + 1] ?? '';
        entries.push({ fields, event: parseEnvelope(fields['event'] ?? '') });
      }
      const last = page.at(-1);
      if (page.length < 500 || !last) return entries;
      start = `(${last[0]}`;
    }
  }

  it('when 1,000 events are published in batches of 100, then XRANGE reads each once, in order, with id, type and the envelope as fields', { skip, timeout: 60_000 }, async () => {
    assert.ok(redis && publisher);
    const sent = makeEvents(EVENT_COUNT);
    const started = performance.now();
    for (const batch of batchesOf(sent, BATCH_SIZE)) await publisher.publish(batch);
    say(`redis: ${EVENT_COUNT} events in ${((performance.now() - started) / 1000).toFixed(2)} s`);

    const entries = await readStream(redis, stream);
    for (const { fields, event } of entries) {
      assert.deepEqual(Object.keys(fields), ['id', 'type', 'event']);
      assert.equal(fields['id'], event.id);
      assert.equal(fields['type'], event.type);
    }
    assertExactlyInOrder(
      entries.map((entry) => entry.event),
      sent,
    );
  });

  it('when a batch is published again, then the stream holds it twice with the same ids (at least once)', { skip, timeout: 30_000 }, async () => {
    assert.ok(redis && publisher);
    const batch = makeEvents(BATCH_SIZE);
    await publisher.publish(batch);
    await publisher.publish(batch);
    const entries = await readStream(redis, stream);
    const ids = batch.map((event) => event.id);
    assert.deepEqual(
      entries.slice(-2 * BATCH_SIZE).map((entry) => entry.fields['id']),
      [...ids, ...ids],
    );
  });

  it('when maxLength is 100, then the stream is trimmed to about 100 entries, newest kept', { skip, timeout: 30_000 }, async () => {
    assert.ok(redis);
    const trimmed = createRedisStreamsPublisher({ url: TEST_REDIS_URL, stream: trimmedStream, maxLength: 100, timeoutMs: TIMEOUT_MS, logger });
    try {
      const sent = makeEvents(EVENT_COUNT);
      for (const batch of batchesOf(sent, BATCH_SIZE)) await trimmed.publish(batch);
      const length = await redis.xlen(trimmedStream);
      // `MAXLEN ~` trims whole radix-tree nodes (100 entries each by default): at least 100 remain, never all.
      assert.ok(length >= 100 && length < 300, `XLEN ${length}`);
      const entries = await readStream(redis, trimmedStream);
      assert.equal(entries.at(-1)?.event.id, sent.at(-1)?.id);
    } finally {
      await trimmed.close();
    }
  });

  it('when its redis-server is stopped, then a publish rejects within its timeout; after the restart the same publisher publishes again and nothing acknowledged is lost', { skip: privateSkip, timeout: 90_000 }, async () => {
    const server = await PrivateRedis.create();
    const captured = capturingLogger();
    const outagePublisher = createRedisStreamsPublisher({ url: server.url, timeoutMs: OUTAGE_TIMEOUT_MS, logger: captured.logger });
    const reader = new Redis(server.url, { lazyConnect: true });
    reader.on('error', () => undefined);
    try {
      let pid: number | undefined;
      const { acknowledgedAfterRestart } = await runOutage('redis', outagePublisher, {
        freeze: async () => {
          pid = await redisServerPid(server.port);
          signalRedisServer(pid, 'SIGSTOP');
        },
        thaw: async () => {
          if (pid) signalRedisServer(pid, 'SIGCONT');
        },
        stop: () => server.stop(),
        start: () => server.start(),
      }, captured.lines);
      // The private server keeps nothing on disk (the flags CI runs Redis with), so what was added
      // before the stop is gone with it; what was acknowledged after the restart must all be there.
      const entries = await readStream(reader, 'bastion:events');
      assertAllAtLeastOnceInOrder(
        entries.map((entry) => entry.event.id),
        acknowledgedAfterRestart,
      );
    } finally {
      await outagePublisher.close();
      reader.disconnect();
      await server.stop();
    }
  });

  it('when close() is called, then nothing is left open: a process that used it exits by itself', { skip, timeout: 30_000 }, async () => {
    await assertChildExitsAfterClose(
      'redis',
      [
        { url: TEST_REDIS_URL, live: true },
        { url: `redis://127.0.0.1:${await freePort()}`, live: false },
      ],
      { stream },
    );
  });
});
