// NATS JetStream: every event goes to `<prefix>.<type>` with `Nats-Msg-Id` = event id, so the stream
// keeps one copy of an id re-published within its duplicate window (the relay's retries after a
// crash or a timeout). The stream is created when absent. One connection, opened on the first
// publish, reconnecting forever once it has been up. While it is down a publish fails at once: the
// client would buffer it until the server returns, and a relay retrying through a long outage would
// fill that buffer with copies of the same batches.
import { jetstream, JetStreamApiCodes, JetStreamApiError, jetstreamManager, StorageType, type JetStreamClient } from '@nats-io/jetstream';
import { connect, headers, nanos, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../platform/logger.js';
import { CLOUDEVENTS_CONTENT_TYPE, serializeEvent, type CloudEvent } from '../cloud-event.js';
import { Availability } from './availability.js';
import type { EventPublisher } from './publisher.js';

export const DEFAULT_NATS_STREAM = 'BASTION_EVENTS';
export const DEFAULT_NATS_SUBJECT_PREFIX = 'bastion.events';
/** The shortest duplicate window the stream is created with: re-publications within it are dropped by the server. */
export const NATS_DUPLICATE_WINDOW_MS = 2 * 60_000;
const RECONNECT_WAIT_MS = 1_000;

export interface NatsPublisherOptions {
  /** nats://host:port, or several separated by commas. */
  readonly url: string;
  readonly stream?: string;
  readonly subjectPrefix?: string;
  /** The longest one publish (connecting included) may take before it rejects. */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

interface Session {
  readonly connection: NatsConnection;
  readonly client: JetStreamClient;
  /** False between the client's 'disconnect' and 'reconnect' statuses. */
  connected: boolean;
}

export function createNatsPublisher(options: NatsPublisherOptions): EventPublisher {
  const stream = options.stream ?? DEFAULT_NATS_STREAM;
  const subjectPrefix = options.subjectPrefix ?? DEFAULT_NATS_SUBJECT_PREFIX;
  const { logger, timeoutMs } = options;
  /** The servers without credentials, for messages and logs. */
  const servers = options.url.replace(/\/\/[^@/]*@/g, '//');
  let session: Promise<Session> | undefined;
  /** Whether the stream is known to exist; false again after a failed publish (someone may have deleted it). */
  let streamChecked = false;
  let shortWindowReported = false;

  const availability = new Availability(logger, 'nats', { stream });

  const watchStatus = async (current: Session) => {
    for await (const status of current.connection.status()) {
      if (status.type === 'disconnect') {
        current.connected = false;
        availability.down(new Error(`disconnected from ${status.server}`));
      } else if (status.type === 'reconnect') {
        current.connected = true;
        availability.up();
      }
    }
  };

  const ensureStream = async (connection: NatsConnection) => {
    const manager = await jetstreamManager(connection, { timeout: timeoutMs, checkAPI: false });
    try {
      const info = await manager.streams.info(stream);
      if (info.config.duplicate_window < nanos(NATS_DUPLICATE_WINDOW_MS) && !shortWindowReported) {
        shortWindowReported = true;
        logger.warn({ stream, duplicateWindowNs: info.config.duplicate_window }, 'nats: the stream de-duplicates over less than 2 minutes; a late re-publication may be stored twice');
      }
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
      // Another instance creating it at the same moment with the same config is fine: add is idempotent.
      await manager.streams.add({
        name: stream,
        subjects: [`${subjectPrefix}.>`],
        storage: StorageType.File,
        duplicate_window: nanos(NATS_DUPLICATE_WINDOW_MS),
      });
      logger.info({ stream, subjects: `${subjectPrefix}.>` }, 'nats: created the JetStream stream');
    }
    streamChecked = true;
  };

  const open = async (): Promise<Session> => {
    const connection = await connect({
      servers: options.url.split(',').map((server) => server.trim()),
      name: 'bastion-events',
      timeout: timeoutMs,
      // Once connected, never give up; the first connection is retried by the next publish instead.
      maxReconnectAttempts: -1,
      // The client otherwise builds an Error (a stack trace) per publish up front, to report where a
      // request that fails later began: measured at about a tenth of the service's CPU under load.
      noAsyncTraces: true,
      reconnectTimeWait: RECONNECT_WAIT_MS,
    });
    if (availability.closed) {
      await connection.close();
      throw new Error('nats: publisher closed');
    }
    const opened: Session = { connection, client: jetstream(connection, { timeout: timeoutMs }), connected: true };
    watchStatus(opened).catch((error: unknown) => logger.warn({ err: error }, 'nats: stopped watching the connection status'));
    return opened;
  };

  const currentSession = (): Promise<Session> => {
    session ??= open().catch((error: unknown) => {
      session = undefined;
      throw error;
    });
    return session;
  };

  const publishBatch = async (events: readonly CloudEvent[]) => {
    const { connection, client, connected } = await currentSession();
    if (!connected) throw new Error(`nats: disconnected from ${servers}; reconnecting`);
    if (!streamChecked) await ensureStream(connection);
    // All in flight at once; the server stores them in the order they were sent on this connection.
    const acks = await Promise.allSettled(
      events.map((event) => {
        const messageHeaders = headers();
        messageHeaders.set('Content-Type', CLOUDEVENTS_CONTENT_TYPE);
        return client.publish(`${subjectPrefix}.${event.type}`, serializeEvent(event), {
          msgID: event.id,
          headers: messageHeaders,
          timeout: timeoutMs,
        });
      }),
    );
    const failures = acks.filter((ack): ack is PromiseRejectedResult => ack.status === 'rejected');
    const [firstFailure] = failures;
    if (firstFailure) {
      throw new Error(`nats: ${failures.length} of ${events.length} events were not acknowledged by stream ${stream}`, { cause: firstFailure.reason });
    }
  };

  return {
    name: 'nats',
    async publish(events) {
      if (events.length === 0 && !availability.closed) return;
      await availability.publish(() => publishBatch(events), timeoutMs, () => (streamChecked = false));
    },
    async close() {
      availability.closed = true;
      const pending = session;
      session = undefined;
      const current = await pending?.catch(() => undefined);
      await current?.connection.close();
    },
  };
}
