// The envelope every event leaves Bastion in: CloudEvents 1.0, JSON structured mode
// (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md), plus the
// W3C `traceparent` of the request that caused it (the Distributed Tracing extension) and the
// outbox position as the Sequence extension (zero-padded, so string order is outbox order).

/** Every event type Bastion emits; a consumer can rely on this list. */
export const EVENT_TYPES = [
  'user.created',
  'user.updated',
  'user.deleted',
  'user.role_changed',
  'account.created',
  'account.closed',
  'transfer.created',
  'transfer.pending',
  'transfer.posted',
  'transfer.voided',
  'transfer.expired',
  'auth.refresh_reuse_detected',
  'auth.login_locked',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export type JsonValue = string | number | boolean | null | JsonValue[] | { readonly [key: string]: JsonValue };

export interface CloudEvent {
  readonly specversion: '1.0';
  /** Unique per event (UUIDv7), kept across re-publication: consumers de-duplicate on it. */
  readonly id: string;
  /** Who emitted it (EVENTS_SOURCE), a URI reference. */
  readonly source: string;
  readonly type: EventType;
  /** The aggregate it is about, e.g. `users/<id>`, `accounts/<id>`, `transfers/<id>`. */
  readonly subject: string;
  /** When the transaction that made the change wrote it (RFC 3339). */
  readonly time: string;
  readonly datacontenttype: 'application/json';
  readonly data: { readonly [key: string]: JsonValue };
  /** The outbox position, 20 digits zero-padded: events of one aggregate arrive in this order. */
  readonly sequence: string;
  /** W3C trace context of the request that caused the change, when there was one. */
  readonly traceparent?: string;
}

/** The CloudEvents media type of a structured-mode message body. */
export const CLOUDEVENTS_CONTENT_TYPE = 'application/cloudevents+json';

const serialized = new WeakMap<CloudEvent, string>();
/** The event's JSON, made once per event object: the relay hands the same objects to every publisher. */
export const serializeEvent = (event: CloudEvent): string => {
  let text = serialized.get(event);
  if (text === undefined) {
    text = JSON.stringify(event);
    serialized.set(event, text);
  }
  return text;
};
