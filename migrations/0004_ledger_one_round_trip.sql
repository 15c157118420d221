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

-- The entries of a transfer are only ever read in bulk (ledger check), never by transfer id.
drop index entries_transfer_idx;

-- A pending transfer that timed out answers PENDING_EXPIRED (not "already voided") to a late post
-- or void: the same function as in 0003 but for that branch.
create or replace function ledger_resolve(
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
