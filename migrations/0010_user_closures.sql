-- Closing a user is a saga (src/components/closures): several steps in their own transactions,
-- recorded so that a crash resumes it and a failure compensates it.

-- A frozen account takes no money moves but the closure's own (ledger.sql): set when its owner's
-- closure starts, cleared if the closure is compensated.
alter table accounts add column frozen_at timestamptz;

create table sagas (
  id uuid primary key,
  kind text not null,
  subject uuid not null,
  -- The next step to run (or, compensating, to undo).
  step text not null,
  status text not null check (status in ('running', 'compensating', 'completed', 'compensated')),
  data jsonb not null default '{}',
  error text,
  lease_owner text,
  lease_until timestamptz,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
-- One closure in progress per user: a second request joins the first.
create unique index sagas_one_active on sagas (kind, subject) where status in ('running', 'compensating');

-- The record, step by step: what ran, when, and how it ended.
create table saga_steps (
  saga_id uuid not null references sagas (id),
  position integer not null,
  step text not null,
  outcome text not null,
  detail jsonb,
  at timestamptz not null,
  primary key (saga_id, position)
);
