-- Webhooks (src/components/webhooks): endpoints admins register, and one delivery row per (event,
-- endpoint), written by the relay's `webhooks` publisher and sent by the delivery worker.

create table webhook_endpoints (
  id uuid primary key,
  url text not null,
  -- Event types it receives: a subset of the CloudEvent types, or {'*'} for all of them.
  event_types text[] not null,
  description text,
  enabled boolean not null default true,
  -- The signing secret (whsec_...), sealed under KEY_ENCRYPTION_SECRET when that is set.
  secret text not null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);

create table webhook_deliveries (
  id uuid primary key,
  endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
  event_id uuid not null,
  event_type text not null,
  -- The outbox position (CloudEvent `sequence`, zero-padded): due deliveries go out in this order.
  event_sequence text not null,
  -- The CloudEvent, sent as the request body.
  payload jsonb not null,
  -- pending: never attempted; failed: an attempt failed, retried at next_attempt_at; delivered; dead.
  status text not null check (status in ('pending', 'failed', 'delivered', 'dead')),
  attempts integer not null default 0,
  -- When it is due. A worker that claims it moves this forward by its lease, so a crashed worker's
  -- claim becomes due again by itself; claim_token names the claim that may record the outcome.
  next_attempt_at timestamptz not null,
  claim_token uuid,
  last_attempt_at timestamptz,
  last_status_code integer,
  last_error text,
  last_duration_ms integer,
  delivered_at timestamptz,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  -- A batch the relay publishes again creates no second delivery.
  unique (endpoint_id, event_id)
);

create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status in ('pending', 'failed');
create index webhook_deliveries_by_endpoint on webhook_deliveries (endpoint_id, created_at desc, event_sequence desc);
