// RabbitMQ: a durable topic exchange with the event type as routing key, persistent messages on a
// confirm channel; a batch is done when the broker has confirmed each of its messages. A connection
// or channel that closes, fails or stops answering is dropped, and the next publish opens a new one:
// the relay's next attempt is the reconnect, so nothing retries in the background.
import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib';
import type { Logger } from '../../../platform/logger.js';
import { CLOUDEVENTS_CONTENT_TYPE, serializeEvent, type CloudEvent } from '../cloud-event.js';
import { PublishTimeoutError } from './deadline.js';
import { Availability } from './availability.js';
import type { EventPublisher } from './publisher.js';

export const DEFAULT_RABBITMQ_EXCHANGE = 'bastion.events';

export interface RabbitMqPublisherOptions {
  /** amqp://user:password@host:port/vhost */
  readonly url: string;
  readonly exchange?: string;
  /** The longest one publish (connecting included) may take before it rejects. */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

interface Session {
  readonly connection: ChannelModel;
  readonly channel: ConfirmChannel;
}

const asError = (reason: unknown): Error => (reason instanceof Error ? reason : new Error(String(reason)));

/** AMQP timestamps are whole seconds since the epoch. */
const amqpTimestamp = (time: string): number => {
  const ms = Date.parse(time);
  return Math.floor((Number.isFinite(ms) ? ms : Date.now()) / 1000);
};

export function createRabbitMqPublisher(options: RabbitMqPublisherOptions): EventPublisher {
  const exchange = options.exchange ?? DEFAULT_RABBITMQ_EXCHANGE;
  const { logger, timeoutMs } = options;
  let session: Promise<Session> | undefined;

  const availability = new Availability(logger, 'rabbitmq', { exchange });

  /** Forgets `dropped` (if it is still the current session) and closes its connection. */
  const drop = (dropped: Promise<Session>) => {
    if (session === dropped) session = undefined;
    void dropped.then(
      ({ connection }) => connection.close().catch(() => undefined), // already closed: nothing to do
      () => undefined,
    );
  };

  const open = async (): Promise<Session> => {
    const connection = await connect(options.url, { timeout: timeoutMs, clientProperties: { connection_name: 'bastion-events' } });
    // Without a listener an 'error' event would crash the process; 'close' follows it and drops the session.
    connection.on('error', (error: Error) => availability.down(error));
    connection.on('blocked', (reason: string) => logger.warn({ reason, exchange }, 'rabbitmq: the broker blocks publishing (resource alarm)'));
    connection.on('unblocked', () => logger.info({ exchange }, 'rabbitmq: the broker accepts publishing again'));
    try {
      if (availability.closed) throw new Error('rabbitmq: publisher closed');
      const channel = await connection.createConfirmChannel();
      channel.on('error', (error: Error) => availability.down(error));
      await channel.assertExchange(exchange, 'topic', { durable: true });
      return { connection, channel };
    } catch (error) {
      await connection.close().catch(() => undefined);
      throw error;
    }
  };

  const currentSession = (): Promise<Session> => {
    if (session) return session;
    const opened = open();
    session = opened;
    opened.then(
      ({ connection, channel }) => {
        connection.on('close', () => drop(opened));
        channel.on('close', () => drop(opened));
      },
      () => drop(opened),
    );
    return opened;
  };

  const publishBatch = async (opened: Promise<Session>, events: readonly CloudEvent[]) => {
    const { channel } = await opened;
    // All in flight at once; each settles on the broker's ack or nack (or the channel closing).
    const confirmations = await Promise.allSettled(
      events.map(
        (event) =>
          new Promise<void>((resolve, reject) => {
            channel.publish(
              exchange,
              event.type,
              Buffer.from(serializeEvent(event)),
              {
                persistent: true,
                messageId: event.id,
                contentType: CLOUDEVENTS_CONTENT_TYPE,
                timestamp: amqpTimestamp(event.time),
                type: event.type,
              },
              (error: unknown) => (error ? reject(asError(error)) : resolve()),
            );
          }),
      ),
    );
    const failures = confirmations.filter((confirmation): confirmation is PromiseRejectedResult => confirmation.status === 'rejected');
    const [firstFailure] = failures;
    if (firstFailure) {
      throw new Error(`rabbitmq: ${failures.length} of ${events.length} events were not confirmed on exchange ${exchange}`, { cause: firstFailure.reason });
    }
  };

  return {
    name: 'rabbitmq',
    async publish(events) {
      if (events.length === 0 && !availability.closed) return;
      let opened: Promise<Session> | undefined;
      await availability.publish(
        () => publishBatch((opened = currentSession()), events),
        timeoutMs,
        // A connection that did not confirm in time may be stuck (a half-open socket): start afresh.
        (error) => {
          if (error instanceof PublishTimeoutError && opened) drop(opened);
        },
      );
    },
    async close() {
      availability.closed = true;
      const pending = session;
      session = undefined;
      const current = await pending?.catch(() => undefined);
      await current?.connection.close().catch(() => undefined);
    },
  };
}
