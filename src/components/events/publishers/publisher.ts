// What the relay hands events to: one implementation per broker, chosen by EVENTS_PUBLISHERS.
import type { CloudEvent } from '../cloud-event.js';

export interface EventPublisher {
  /** The publisher's name in config, metrics and the relay's cursor: 'nats' | 'rabbitmq' | 'redis'. */
  readonly name: string;
  /**
   * Publishes a batch, in order, and resolves once the broker holds every event durably (JetStream
   * ack, publisher confirm, XADD reply). Rejects if any event is not confirmed: the relay then sends
   * the whole batch again later, with the same event ids (the broker or the consumer de-duplicates).
   * Connects lazily and reconnects after a failure; never waits longer than its own timeout.
   */
  publish(events: readonly CloudEvent[]): Promise<void>;
  /**
   * Optional: false when it has no use for events now (the webhooks' fan-out with no endpoint
   * enabled); the relay then moves its cursor past them without reading their data or publishing,
   * and looks again at its poll interval rather than at every commit.
   */
  wants?(): Promise<boolean>;
  close(): Promise<void>;
}
