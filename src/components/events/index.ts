// The events component's public surface: the outbox other components write to, the relay that
// publishes it, and the envelope consumers receive.
import { fileURLToPath } from 'node:url';
import type { RoutineFile } from '../../platform/db/migrate.js';

export { CLOUDEVENTS_CONTENT_TYPE, EVENT_TYPES, type CloudEvent, type EventType, type JsonValue } from './cloud-event.js';
export { createOutbox, type EventOrigin, type NewEvent, type Outbox } from './outbox.js';
export { startRelay, toCloudEvent, type Relay, type RelayOptions } from './relay.js';
export type { EventPublisher } from './publishers/publisher.js';
export { cursorStatus, prune as pruneOutbox, type CursorStatus } from './events.repo.js';

/** The outbox's SQL functions (events.sql), applied after the migrations; before the ledger's, which calls them. */
export const EVENTS_ROUTINES: RoutineFile = { name: 'events', path: fileURLToPath(new URL('./events.sql', import.meta.url)) };
