-- The ledger: accounts, immutable transfers and their double-entry lines, idempotency records.
--
-- Balances are bigint minor units. A user account's balance never goes below what pending
-- transfers have reserved (CHECK). Each currency has one system account (owner_id null) that
-- deposits come from and withdrawals go to; its balance is spread over shard rows so that deposits
-- and withdrawals running at once do not queue on a single row lock.

create table accounts (
  id uuid primary key,
  owner_id uuid references users (id),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  name text,
  balance bigint not null default 0,
  -- Reserved by pending (two-phase) transfers out of this account.
  pending_debits bigint not null default 0 check (pending_debits >= 0),
  created_at timestamptz not null,
  updated_at timestamptz not null,
  closed_at timestamptz,
  constraint accounts_user_balance_covers_reservations
    check (owner_id is null or (balance >= 0 and balance - pending_debits >= 0)),
  -- Balances stay exact JSON integers for every client (2^53 - 1 minor units).
  constraint accounts_user_balance_is_exact_in_json check (balance <= 9007199254740991),
  constraint accounts_system_balance_in_shards check (owner_id is not null or (balance = 0 and pending_debits = 0))
);
create unique index accounts_system_currency_key on accounts (currency) where owner_id is null;
create index accounts_owner_idx on accounts (owner_id, created_at desc, id desc) where closed_at is null;
create index accounts_created_idx on accounts (created_at desc, id desc) where closed_at is null;

create table system_account_shards (
  account_id uuid not null references accounts (id),
  shard smallint not null,
  balance bigint not null default 0,
  primary key (account_id, shard)
);

create table transfers (
  id uuid primary key,
  -- transfer | deposit | withdrawal: move money (or reserve it, when pending);
  -- post | void | expire: resolve a pending transfer (pending_id).
  kind text not null check (kind in ('transfer', 'deposit', 'withdrawal', 'post', 'void', 'expire')),
  from_account_id uuid not null references accounts (id),
  to_account_id uuid not null references accounts (id),
  amount bigint not null check (amount > 0),
  currency text not null,
  pending boolean not null default false,
  pending_id uuid references transfers (id),
  expires_at timestamptz,
  description text,
  initiated_by uuid,
  created_at timestamptz not null,
  check (from_account_id <> to_account_id),
  check ((kind in ('post', 'void', 'expire')) = (pending_id is not null)),
  check (not pending or kind in ('transfer', 'deposit', 'withdrawal'))
);
-- A pending transfer is resolved at most once.
create unique index transfers_resolution_key on transfers (pending_id) where pending_id is not null;
create index transfers_from_idx on transfers (from_account_id, created_at desc, id desc);
create index transfers_to_idx on transfers (to_account_id, created_at desc, id desc);
create index transfers_pending_expiry_idx on transfers (expires_at) where pending and expires_at is not null;

create table entries (
  id bigint generated always as identity primary key,
  transfer_id uuid not null references transfers (id),
  account_id uuid not null references accounts (id),
  -- Signed: a debit is negative, a credit positive. Every money-moving transfer has exactly two
  -- entries that sum to zero.
  amount bigint not null check (amount <> 0),
  created_at timestamptz not null
);
-- No secondary indexes: entries are only read in bulk (the ledger check), and every index here
-- would be paid on each of the two inserts of every transfer.

-- Transfers and entries are facts: no UPDATE or DELETE path exists, not even by mistake.
create function ledger_forbid_change() returns trigger language plpgsql as $$
begin
  raise exception 'ledger rows are immutable (% on %)', tg_op, tg_table_name using errcode = 'P0001';
end
$$;
create trigger transfers_immutable before update or delete on transfers
  for each row execute function ledger_forbid_change();
create trigger entries_immutable before update or delete on entries
  for each row execute function ledger_forbid_change();

-- Stripe-style idempotency: per caller and key, the request fingerprint and the response that was
-- sent, written in the same transaction as the transfer it belongs to.
create table idempotency_keys (
  principal_id uuid not null,
  key text not null,
  fingerprint bytea not null,
  status_code integer not null,
  response_body text not null,
  created_at timestamptz not null default now(),
  primary key (principal_id, key)
);
create index idempotency_keys_created_idx on idempotency_keys (created_at);

-- Moves (or reserves) money. The rules are checked in a fixed order, each with its own outcome:
--   ACCOUNT_NOT_FOUND (the account named in the path / fromAccountId: unknown, closed or not the
--   actor's), COUNTERPARTY_NOT_FOUND, CURRENCY_MISMATCH, INSUFFICIENT_FUNDS, BALANCE_LIMIT_EXCEEDED
--   (the credit would take a user balance past 2^53 - 1); else OK.
-- Both user accounts are locked in id order (no deadlock between two transfers); a system
-- account is never locked, one of its shards is updated last.
create function ledger_execute(
  p_id uuid,
  p_kind text,
  p_account_id uuid,
  p_counterparty_id uuid,
  p_amount bigint,
  p_description text,
  p_pending boolean,
  p_expires_at timestamptz,
  p_actor_id uuid,
  p_actor_sees_all boolean,
  p_shard smallint,
  p_now timestamptz
) returns table (outcome text, currency text, from_account_id uuid, to_account_id uuid)
language plpgsql as $$
declare
  v_account accounts%rowtype;
  v_other accounts%rowtype;
  v_from accounts%rowtype;
  v_to accounts%rowtype;
  v_locked accounts%rowtype;
begin
  select * into v_account from accounts a where a.id = p_account_id and a.closed_at is null and a.owner_id is not null;
  if not found or (p_kind <> 'deposit' and not p_actor_sees_all and v_account.owner_id is distinct from p_actor_id) then
    return query select 'ACCOUNT_NOT_FOUND'::text, null::text, null::uuid, null::uuid;
    return;
  end if;

  if p_kind = 'transfer' then
    select * into v_other from accounts a where a.id = p_counterparty_id and a.closed_at is null and a.owner_id is not null;
    if not found then
      return query select 'COUNTERPARTY_NOT_FOUND'::text, null::text, null::uuid, null::uuid;
      return;
    end if;
  else
    select * into v_other from accounts a where a.owner_id is null and a.currency = v_account.currency;
    if not found then
      raise exception 'no system account for %', v_account.currency;
    end if;
  end if;

  if v_other.currency <> v_account.currency then
    return query select 'CURRENCY_MISMATCH'::text, v_account.currency, null::uuid, null::uuid;
    return;
  end if;

  if p_kind = 'deposit' then
    v_from := v_other; v_to := v_account;
  else
    v_from := v_account; v_to := v_other;
  end if;

  -- Lock the user accounts involved, always in id order.
  for v_locked in
    select * from accounts a
    where a.id in (v_from.id, v_to.id) and a.owner_id is not null
    order by a.id
    for update
  loop
    if v_locked.closed_at is not null then
      return query select (case when v_locked.id = p_account_id then 'ACCOUNT_NOT_FOUND' else 'COUNTERPARTY_NOT_FOUND' end)::text,
        null::text, null::uuid, null::uuid;
      return;
    end if;
    if v_locked.id = v_from.id then v_from := v_locked; end if;
    if v_locked.id = v_to.id then v_to := v_locked; end if;
  end loop;

  if v_from.owner_id is not null and v_from.balance - v_from.pending_debits < p_amount then
    return query select 'INSUFFICIENT_FUNDS'::text, v_account.currency, null::uuid, null::uuid;
    return;
  end if;

  if not p_pending and v_to.owner_id is not null and v_to.balance > 9007199254740991 - p_amount then
    return query select 'BALANCE_LIMIT_EXCEEDED'::text, v_account.currency, null::uuid, null::uuid;
    return;
  end if;

  insert into transfers (id, kind, from_account_id, to_account_id, amount, currency, pending, expires_at,
                         description, initiated_by, created_at)
  values (p_id, p_kind, v_from.id, v_to.id, p_amount, v_account.currency, p_pending,
          case when p_pending then p_expires_at end, p_description, p_actor_id, p_now);

  if p_pending then
    update accounts set pending_debits = pending_debits + p_amount, updated_at = p_now where id = v_from.id;
  else
    perform ledger_move(p_id, v_from, v_to, p_amount, p_shard, p_now);
  end if;

  return query select 'OK'::text, v_account.currency, v_from.id, v_to.id;
end
$$;

-- Applies a posted amount: two entries and the two balances (a system account via one shard).
create function ledger_move(p_transfer_id uuid, p_from accounts, p_to accounts, p_amount bigint, p_shard smallint, p_now timestamptz)
returns void language plpgsql as $$
begin
  insert into entries (transfer_id, account_id, amount, created_at)
  values (p_transfer_id, p_from.id, -p_amount, p_now), (p_transfer_id, p_to.id, p_amount, p_now);
  if p_from.owner_id is not null then
    update accounts set balance = balance - p_amount, updated_at = p_now where id = p_from.id;
  end if;
  if p_to.owner_id is not null then
    update accounts set balance = balance + p_amount, updated_at = p_now where id = p_to.id;
  end if;
  -- System accounts last: no lock is held on a shard while waiting for an account row.
  if p_from.owner_id is null then
    insert into system_account_shards (account_id, shard, balance) values (p_from.id, p_shard, -p_amount)
    on conflict (account_id, shard) do update set balance = system_account_shards.balance - p_amount;
  end if;
  if p_to.owner_id is null then
    insert into system_account_shards (account_id, shard, balance) values (p_to.id, p_shard, p_amount)
    on conflict (account_id, shard) do update set balance = system_account_shards.balance + p_amount;
  end if;
end
$$;

-- Posts (all or part of) or voids a pending transfer, or expires it. Outcomes, in order:
--   TRANSFER_NOT_FOUND (unknown, not pending, or not the actor's), PENDING_ALREADY_POSTED,
--   PENDING_EXPIRED (timed out, by the sweep or now), PENDING_ALREADY_VOIDED, AMOUNT_EXCEEDS_PENDING, COUNTERPARTY_NOT_FOUND (closed
--   since), BALANCE_LIMIT_EXCEEDED; else OK.
create function ledger_resolve(
  p_id uuid,
  p_pending_id uuid,
  p_action text,
  p_amount bigint,
  p_actor_id uuid,
  p_actor_sees_all boolean,
  p_shard smallint,
  p_now timestamptz
) returns table (outcome text, currency text, amount bigint)
language plpgsql as $$
declare
  v_pending transfers%rowtype;
  v_from accounts%rowtype;
  v_to accounts%rowtype;
  v_locked accounts%rowtype;
  v_resolution text;
  v_amount bigint;
begin
  select * into v_pending from transfers t where t.id = p_pending_id and t.pending;
  if not found then
    return query select 'TRANSFER_NOT_FOUND'::text, null::text, null::bigint;
    return;
  end if;
  select * into v_from from accounts a where a.id = v_pending.from_account_id;
  select * into v_to from accounts a where a.id = v_pending.to_account_id;
  if not p_actor_sees_all and p_action <> 'expire' and v_from.owner_id is distinct from p_actor_id then
    return query select 'TRANSFER_NOT_FOUND'::text, null::text, null::bigint;
    return;
  end if;

  for v_locked in
    select * from accounts a
    where a.id in (v_from.id, v_to.id) and a.owner_id is not null
    order by a.id
    for update
  loop
    if v_locked.id = v_from.id then v_from := v_locked; end if;
    if v_locked.id = v_to.id then v_to := v_locked; end if;
  end loop;

  select t.kind into v_resolution from transfers t where t.pending_id = p_pending_id;
  if v_resolution = 'post' then
    return query select 'PENDING_ALREADY_POSTED'::text, v_pending.currency, null::bigint;
    return;
  elsif v_resolution = 'expire' then
    return query select 'PENDING_EXPIRED'::text, v_pending.currency, null::bigint;
    return;
  elsif v_resolution is not null then
    return query select 'PENDING_ALREADY_VOIDED'::text, v_pending.currency, null::bigint;
    return;
  end if;
  if p_action <> 'expire' and v_pending.expires_at is not null and v_pending.expires_at <= p_now then
    return query select 'PENDING_EXPIRED'::text, v_pending.currency, null::bigint;
    return;
  end if;

  v_amount := coalesce(p_amount, v_pending.amount);
  if p_action = 'post' and v_amount > v_pending.amount then
    return query select 'AMOUNT_EXCEEDS_PENDING'::text, v_pending.currency, null::bigint;
    return;
  end if;
  if p_action <> 'post' then
    v_amount := v_pending.amount;
  end if;
  if v_to.closed_at is not null and p_action = 'post' then
    return query select 'COUNTERPARTY_NOT_FOUND'::text, v_pending.currency, null::bigint;
    return;
  end if;
  if p_action = 'post' and v_to.owner_id is not null and v_to.balance > 9007199254740991 - v_amount then
    return query select 'BALANCE_LIMIT_EXCEEDED'::text, v_pending.currency, null::bigint;
    return;
  end if;

  insert into transfers (id, kind, from_account_id, to_account_id, amount, currency, pending_id, description,
                         initiated_by, created_at)
  values (p_id, p_action, v_from.id, v_to.id, v_amount, v_pending.currency, p_pending_id, v_pending.description,
          p_actor_id, p_now);
  if v_from.owner_id is not null then
    update accounts set pending_debits = pending_debits - v_pending.amount, updated_at = p_now where id = v_from.id;
    v_from.pending_debits := v_from.pending_debits - v_pending.amount;
  end if;
  if p_action = 'post' then
    perform ledger_move(p_id, v_from, v_to, v_amount, p_shard, p_now);
  end if;
  return query select 'OK'::text, v_pending.currency, v_amount;
end
$$;

-- A money movement with its idempotency record in ONE statement (so one round trip and one implicit
-- transaction): take the key's lock, replay a stored answer, or execute and store the response the
-- caller rendered for the outcome. The response bodies are rendered by the application for every
-- possible outcome beforehand, so that what is stored is byte-for-byte what is sent.
--
-- p_statuses / p_bodies are indexed by outcome, in this order:
--   1 OK, 2 ACCOUNT_NOT_FOUND, 3 COUNTERPARTY_NOT_FOUND, 4 CURRENCY_MISMATCH, 5 INSUFFICIENT_FUNDS,
--   6 BALANCE_LIMIT_EXCEEDED.
-- result: executed | replayed | in_progress (another transaction holds the key) | key_reused
-- (stored with another fingerprint).
create function ledger_move_once(
  p_principal uuid,
  p_key text,
  p_fingerprint bytea,
  p_id uuid,
  p_kind text,
  p_account_id uuid,
  p_counterparty_id uuid,
  p_amount bigint,
  p_description text,
  p_pending boolean,
  p_expires_at timestamptz,
  p_actor_sees_all boolean,
  p_shard smallint,
  p_now timestamptz,
  p_statuses integer[],
  p_bodies text[]
) returns table (result text, outcome text, currency text, from_account_id uuid, to_account_id uuid,
                 status_code integer, body text)
language plpgsql as $$
declare
  v_stored idempotency_keys%rowtype;
  v_executed record;
  v_index integer;
begin
  if p_key is not null then
    if not pg_try_advisory_xact_lock(hashtextextended(p_principal::text || ':' || p_key, 0)) then
      return query select 'in_progress'::text, null::text, null::text, null::uuid, null::uuid, null::integer, null::text;
      return;
    end if;
    select * into v_stored from idempotency_keys k where k.principal_id = p_principal and k.key = p_key;
    if found then
      if v_stored.fingerprint <> p_fingerprint then
        return query select 'key_reused'::text, null::text, null::text, null::uuid, null::uuid, null::integer, null::text;
      else
        return query select 'replayed'::text, null::text, null::text, null::uuid, null::uuid, v_stored.status_code,
          v_stored.response_body;
      end if;
      return;
    end if;
  end if;

  select * into v_executed from ledger_execute(p_id, p_kind, p_account_id, p_counterparty_id, p_amount, p_description,
    p_pending, p_expires_at, p_principal, p_actor_sees_all, p_shard, p_now);
  v_index := array_position(array['OK', 'ACCOUNT_NOT_FOUND', 'COUNTERPARTY_NOT_FOUND', 'CURRENCY_MISMATCH',
    'INSUFFICIENT_FUNDS', 'BALANCE_LIMIT_EXCEEDED'], v_executed.outcome);
  if v_index is null then
    raise exception 'ledger_move_once: unknown outcome %', v_executed.outcome;
  end if;

  if p_key is not null then
    insert into idempotency_keys (principal_id, key, fingerprint, status_code, response_body)
    values (p_principal, p_key, p_fingerprint, p_statuses[v_index], p_bodies[v_index]);
  end if;
  return query select 'executed'::text, v_executed.outcome, v_executed.currency, v_executed.from_account_id,
    v_executed.to_account_id, p_statuses[v_index], p_bodies[v_index];
end
$$;

-- Several movements in one transaction (one commit, one WAL flush for all of them), as TigerBeetle
-- batches transfers. Every user account the batch names is locked first, in id order, so two
-- batches (or a batch and a single transfer) can never deadlock; all the batch's system-account
-- updates go to one shard, so shards add no lock cycle either. Each item then runs exactly as
-- ledger_move_once, with its own idempotency key and its own outcome.
-- p_items: [{principal, key, fingerprint (hex), id, kind, accountId, counterpartyId, amount,
--            description, pending, expiresAt, actorSeesAll, now, statuses, bodies}, ...]
create function ledger_move_batch(p_items jsonb, p_shard smallint)
returns table (item integer, result text, outcome text, currency text, from_account_id uuid,
               to_account_id uuid, status_code integer, body text)
language plpgsql as $$
declare
  v_item jsonb;
  v_index bigint;
begin
  perform 1 from accounts a
  where a.owner_id is not null and a.id in (
    select (e->>'accountId')::uuid from jsonb_array_elements(p_items) e
    union
    select (e->>'counterpartyId')::uuid from jsonb_array_elements(p_items) e where e->>'counterpartyId' is not null
  )
  order by a.id
  for update;

  for v_item, v_index in select e.value, e.ordinality from jsonb_array_elements(p_items) with ordinality e loop
    return query select v_index::integer, m.* from ledger_move_once(
      (v_item->>'principal')::uuid,
      v_item->>'key',
      decode(v_item->>'fingerprint', 'hex'),
      (v_item->>'id')::uuid,
      v_item->>'kind',
      (v_item->>'accountId')::uuid,
      (v_item->>'counterpartyId')::uuid,
      (v_item->>'amount')::bigint,
      v_item->>'description',
      (v_item->>'pending')::boolean,
      (v_item->>'expiresAt')::timestamptz,
      (v_item->>'actorSeesAll')::boolean,
      p_shard,
      (v_item->>'now')::timestamptz,
      array(select jsonb_array_elements_text(v_item->'statuses')::integer),
      array(select jsonb_array_elements_text(v_item->'bodies'))
    ) m;
  end loop;
end
$$;
