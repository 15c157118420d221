-- The audit log (src/components/audit): who did what to whom, from where. Append-only: rows are
-- inserted in the transaction of the change they record and are never updated; only the retention
-- job deletes, and only rows older than the retention it declares in its own transaction.
create table audit_events (
  id uuid primary key,
  action text not null check (action ~ '^[a-z_]+\.[a-z_]+$'),
  -- uuid, not text: every actor and target (users, API keys, sessions) is a uuid here, and the
  -- filters of GET /audit take uuids.
  actor_id uuid,
  target_id uuid,
  ip text,
  user_agent text,
  request_id text,
  details jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
  -- Millisecond precision: what a cursor carries (a JavaScript Date) is then exactly what is stored,
  -- so keyset pages neither repeat nor skip a row. clock_timestamp(), not now(): several events of
  -- one transaction keep the order they were recorded in.
  created_at timestamptz(3) not null default clock_timestamp()
);
-- Newest first, keyset-paginated on (created_at, id), unfiltered and per filter.
create index audit_events_created_idx on audit_events (created_at desc, id desc);
create index audit_events_action_idx on audit_events (action, created_at desc, id desc);
create index audit_events_actor_idx on audit_events (actor_id, created_at desc, id desc) where actor_id is not null;
create index audit_events_target_idx on audit_events (target_id, created_at desc, id desc) where target_id is not null;

-- Refuses every UPDATE, and every DELETE except by the retention job: its transaction sets
-- bastion.audit_retention = 'on' and bastion.audit_retention_days (set local), and then only rows
-- older than that many days (by the database's clock) may go. A job whose cutoff were computed
-- wrongly still cannot remove a newer row; retention days below 1 are refused outright.
create function audit_events_append_only() returns trigger language plpgsql as $$
declare
  retention_days integer;
begin
  if tg_op = 'DELETE' and coalesce(current_setting('bastion.audit_retention', true), '') = 'on' then
    retention_days := nullif(current_setting('bastion.audit_retention_days', true), '')::integer;
    if retention_days is not null and retention_days >= 1
       and old.created_at < now() - make_interval(days => retention_days) then
      return old;
    end if;
    raise exception 'audit events younger than the retention are kept (event %)', old.id using errcode = 'P0001';
  end if;
  raise exception 'audit events are append-only (% on audit_events)', tg_op using errcode = 'P0001';
end
$$;
create trigger audit_events_append_only before update or delete on audit_events
  for each row execute function audit_events_append_only();
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function audit_events_append_only();
