// How other components emit events: in the transaction that makes the change (never after commit),
// through the one SQL function outbox_append (events.sql). The relay publishes them later.
import type { Tx } from '../../platform/db/index.js';
import { newId } from '../../platform/ids.js';
import type { EventType, JsonValue } from './cloud-event.js';
import * as repo from './events.repo.js';

export interface NewEvent {
  readonly type: EventType;
  /** The aggregate, e.g. `users/<id>`: events of one subject are published in the order written. */
  readonly subject: string;
  /** What consumers get: public fields only, never a secret or a hash. */
  readonly data: { readonly [key: string]: JsonValue };
}

/** What caused a change: the W3C traceparent of the request, when there was a request. */
export interface EventOrigin {
  readonly traceparent?: string;
}

export interface Outbox {
  /** Writes the events in `tx`, in order; they exist if and only if `tx` commits. */
  append(tx: Tx, events: readonly NewEvent[], origin?: EventOrigin): Promise<void>;
  /**
   * Tells this instance's relay that a transaction with events committed, so it publishes them now
   * instead of at its next poll (other instances' relays find them by polling).
   */
  committed(): void;
  /** Registers the relay's wake-up (one listener). */
  onCommitted(listener: () => void): void;
}

export function createOutbox(options: { now?: () => Date } = {}): Outbox {
  const now = options.now ?? (() => new Date());
  let listener: (() => void) | undefined;
  return {
    async append(tx, events, origin) {
      const time = now().toISOString();
      await repo.append(
        tx,
        events.map((event) => ({
          id: newId(),
          type: event.type,
          subject: event.subject,
          data: event.data,
          traceparent: origin?.traceparent ?? null,
          time,
        })),
      );
    },
    committed: () => listener?.(),
    onCommitted(next) {
      listener = next;
    },
  };
}
