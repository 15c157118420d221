-- The outbox's SQL functions, applied after the numbered migrations (CREATE OR REPLACE, skipped when
-- unchanged). Other components write events only through outbox_append, in their own transaction.

-- Appends events in array order: [{id, type, subject, data, traceparent, time}].
create or replace function outbox_append(p_events jsonb) returns void language plpgsql as $$
begin
  -- The transaction's id first, then the positions: a position is never handed to a transaction
  -- whose id is not yet assigned. The relay's gap rule (relay.ts) depends on this order.
  perform pg_current_xact_id();
  insert into outbox_events (seq, id, type, subject, data, traceparent, created_at)
  select nextval('outbox_events_seq'), e.id, e.type, e.subject, e.data, e.traceparent, e.time
  from rows from (jsonb_to_recordset(p_events) as (id uuid, type text, subject text, data jsonb, traceparent text,
                                                   time timestamptz)) with ordinality as e(id, type, subject, data, traceparent, time, n)
  order by e.n;
end
$$;
