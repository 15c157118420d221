// Real consumers of the three brokers for the ledger benchmark: each reads every event the service
// publishes and records commit-to-consumer lag (receipt time minus the event's `time`, which the
// service sets when the transaction writes it; one machine, one clock).
import { DeliverPolicy, jetstream } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import amqp from 'amqplib';
import { Redis } from 'ioredis';

export interface LagRecorder {
  readonly name: string;
  /** Events received (duplicates included) and their lags in ms. */
  readonly lagsMs: number[];
  readonly ids: Set<string>;
  close(): Promise<void>;
}

const lagOf = (body: string): { id: string; lagMs: number } => {
  const event = JSON.parse(body) as { id: string; time: string };
  return { id: event.id, lagMs: Date.now() - Date.parse(event.time) };
};

export async function consumeNats(url: string, stream: string): Promise<LagRecorder> {
  const connection = await connectNats({ servers: url });
  const lagsMs: number[] = [];
  const ids = new Set<string>();
  // The stream may not exist before the first publish: wait for it.
  const client = jetstream(connection);
  let consumer;
  for (let attempt = 0; ; attempt++) {
    try {
      consumer = await client.consumers.get(stream, { deliver_policy: DeliverPolicy.New });
      break;
    } catch (error) {
      if (attempt > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  const messages = await consumer.consume();
  const done = (async () => {
    for await (const message of messages) {
      const { id, lagMs } = lagOf(message.string());
      lagsMs.push(lagMs);
      ids.add(id);
    }
  })();
  return {
    name: 'nats',
    lagsMs,
    ids,
    async close() {
      await messages.close();
      await done.catch(() => undefined);
      await connection.close();
    },
  };
}

export async function consumeRabbitMq(url: string, exchange: string): Promise<LagRecorder> {
  const connection = await amqp.connect(url);
  const channel = await connection.createChannel();
  await channel.assertExchange(exchange, 'topic', { durable: true });
  const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
  await channel.bindQueue(queue, exchange, '#');
  const lagsMs: number[] = [];
  const ids = new Set<string>();
  await channel.prefetch(1_000);
  await channel.consume(queue, (message) => {
    if (!message) return;
    const { id, lagMs } = lagOf(message.content.toString('utf8'));
    lagsMs.push(lagMs);
    ids.add(id);
    channel.ack(message);
  });
  return {
    name: 'rabbitmq',
    lagsMs,
    ids,
    async close() {
      await channel.close().catch(() => undefined);
      await connection.close().catch(() => undefined);
    },
  };
}

export async function consumeRedisStream(url: string, stream: string): Promise<LagRecorder> {
  const redis = new Redis(url);
  const lagsMs: number[] = [];
  const ids = new Set<string>();
  let stopped = false;
  // From the stream's start (it is this run's own): '$' only sees entries added during each call, so
  // entries that arrived between two blocking reads were missed until the first one was read.
  let last = '0-0';
  const done = (async () => {
    while (!stopped) {
      const reply = (await redis.xread('COUNT', 1_000, 'BLOCK', 200, 'STREAMS', stream, last)) as Array<[string, Array<[string, string[]]>]> | null;
      for (const [, entries] of reply ?? []) {
        for (const [entryId, fields] of entries) {
          last = entryId;
          const body = fields[fields.indexOf('event') + 1];
          if (body === undefined) continue;
          const { id, lagMs } = lagOf(body);
          lagsMs.push(lagMs);
          ids.add(id);
        }
      }
    }
  })();
  return {
    name: 'redis',
    lagsMs,
    ids,
    async close() {
      stopped = true;
      await done.catch(() => undefined);
      redis.disconnect();
    },
  };
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/**
 * Run as a process of its own (so that reading every event does not slow the load generator):
 *   node --import tsx bench/event-consumers.ts '<json ConsumersSpec>'
 * prints "ready" once every consumer is subscribed, and on SIGTERM one JSON line: per consumer,
 * distinct events received and lag p50/p99 (ms).
 */
export interface ConsumersSpec {
  readonly nats?: { readonly url: string; readonly stream: string };
  readonly rabbitmq?: { readonly url: string; readonly exchange: string };
  readonly redis?: { readonly url: string; readonly stream: string };
}

export interface ConsumerReport {
  readonly name: string;
  readonly distinct: number;
  readonly lagP50Ms: number;
  readonly lagP99Ms: number;
}

if (process.argv[1]?.endsWith('event-consumers.ts') && process.argv[2]) {
  const spec = JSON.parse(process.argv[2]) as ConsumersSpec;
  const recorders: LagRecorder[] = [];
  if (spec.rabbitmq) recorders.push(await consumeRabbitMq(spec.rabbitmq.url, spec.rabbitmq.exchange));
  if (spec.redis) recorders.push(await consumeRedisStream(spec.redis.url, spec.redis.stream));
  const nats = spec.nats ? consumeNats(spec.nats.url, spec.nats.stream) : undefined;
  process.stdout.write('ready\n');
  if (nats) recorders.push(await nats);
  process.stdin.resume();
  process.on('message', () => undefined);
  const report = async () => {
    const lines: ConsumerReport[] = recorders.map((recorder) => ({
      name: recorder.name,
      distinct: recorder.ids.size,
      lagP50Ms: percentile(recorder.lagsMs, 50),
      lagP99Ms: percentile(recorder.lagsMs, 99),
    }));
    await Promise.all(recorders.map((recorder) => recorder.close().catch(() => undefined)));
    process.stdout.write(`${JSON.stringify(lines)}\n`);
    process.exit(0);
  };
  process.once('SIGTERM', () => void report());
  // Progress for the parent: distinct ids per consumer, every 500 ms.
  setInterval(() => process.stderr.write(`${JSON.stringify(recorders.map((recorder) => [recorder.name, recorder.ids.size]))}\n`), 500).unref();
}
