-- The transactional outbox (src/components/events): every state change other systems care about
-- writes its event row in the transaction that makes the change; relays publish the rows afterwards.
--
-- Positions come from a plain sequence (cache 1: handed out in time order across sessions). A
-- transaction takes its id before its first position (outbox_append, events.sql), and each row keeps
-- that id, so a relay can tell a position that is still being written from one that never will be
-- (rolled back): see the gap rule in relay.ts.
create sequence outbox_events_seq as bigint;

create table outbox_events (
  seq bigint primary key,
  id uuid not null,
  type text not null,
  subject text not null,
  data jsonb not null,
  traceparent text,
  created_at timestamptz not null,
  tx xid8 not null default pg_current_xact_id()
);

-- One row per publisher (and per internal consumer): how far it has published, and which relay holds
-- it now (a lease, so that several relays never publish the same events in the normal case).
create table outbox_cursors (
  publisher text primary key,
  position bigint not null default 0,
  lease_owner text,
  lease_until timestamptz,
  published_at timestamptz
);
