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
  let last = '$';
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
