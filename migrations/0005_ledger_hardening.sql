-- Ledger hardening: system-account shards are taken in one global order by a batch, and a shard is
-- never pushed past bigint's range.
--
-- 1. Every system account has its 32 shard rows (ledger.service.ts SYSTEM_ACCOUNT_SHARDS) from the
--    start, so a deposit whose shard is full has others to go to, and a batch can lock the shards it
--    needs before its first item runs.
-- 2. ledger_move_batch locks, after the user accounts, the one shard it uses of every system account
--    its items name, in account id order: two batches mixing currencies in opposite orders used to
--    take one currency's shard each and then wait for each other's (40P01).
-- 3. ledger_shard_add applies a system account's side of a movement to its preferred shard, or to
--    another one that stays within bigint; ledger_execute calls it before anything is written, so that
--    a deposit no shard can take is BALANCE_LIMIT_EXCEEDED (422), not an overflow error (500).

insert into system_account_shards (account_id, shard, balance)
select a.id, g.shard, 0
from accounts a cross join generate_series(0, 31) as g(shard)
where a.owner_id is null
on conflict (account_id, shard) do nothing;

-- Adds p_delta to one shard of a system account; false when no shard can take it without leaving
-- bigint. The preferred shard is waited for (a batch already holds it; a lone movement holds no
-- other shard); another shard is taken only if nobody holds it (SKIP LOCKED), so a shard lock is
-- never waited for out of the batch's order. Shards with room that are all busy: 40001, retried.
create function ledger_shard_add(p_account_id uuid, p_delta bigint, p_shard smallint)
returns boolean language plpgsql as $$
declare
  -- The balances b for which b + p_delta stays a bigint.
  v_lowest bigint := -9223372036854775807 - 1 - least(p_delta, 0);
  v_highest bigint := 9223372036854775807 - greatest(p_delta, 0);
  v_shard smallint;
begin
  insert into system_account_shards as s (account_id, shard, balance) values (p_account_id, p_shard, p_delta)
  on conflict (account_id, shard) do update set balance = s.balance + p_delta
    where s.balance between v_lowest and v_highest;
  if found then
    return true;
  end if;

  select s.shard into v_shard from system_account_shards s
  where s.account_id = p_account_id and s.shard <> p_shard and s.balance between v_lowest and v_highest
  order by s.shard < p_shard, s.shard
  limit 1
  for update skip locked;
  if found then
    update system_account_shards s set balance = s.balance + p_delta
    where s.account_id = p_account_id and s.shard = v_shard;
    return true;
  end if;

  if exists (select 1 from system_account_shards s
             where s.account_id = p_account_id and s.shard <> p_shard and s.balance between v_lowest and v_highest) then
    raise exception 'every shard of system account % with room is busy', p_account_id using errcode = '40001';
  end if;
  return false;
end
$$;

-- Two entries and the user balances of a posted amount (the system side is ledger_shard_add's).
create function ledger_post_entries(p_transfer_id uuid, p_from accounts, p_to accounts, p_amount bigint, p_now timestamptz)
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
end
$$;

-- Applies a posted amount (used by ledger_resolve). Pending transfers are between user accounts, so
-- the system side, and its "no room" case, cannot happen here; should it, the statement fails whole.
create or replace function ledger_move(p_transfer_id uuid, p_from accounts, p_to accounts, p_amount bigint, p_shard smallint, p_now timestamptz)
returns void language plpgsql as $$
begin
  if (p_from.owner_id is null and not ledger_shard_add(p_from.id, -p_amount, p_shard))
     or (p_to.owner_id is null and not ledger_shard_add(p_to.id, p_amount, p_shard)) then
    raise exception 'no shard of the system account can take % more', p_amount using errcode = '22003';
  end if;
  perform ledger_post_entries(p_transfer_id, p_from, p_to, p_amount, p_now);
end
$$;

-- As in 0003, with one more rule after BALANCE_LIMIT_EXCEEDED of the user account: the system
-- account's side must fit a shard (BALANCE_LIMIT_EXCEEDED too). The shard is the last lock taken,
-- after every user account, as before; it is taken before anything is written so that a refusal
-- leaves nothing behind.
create or replace function ledger_execute(
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

  if not p_pending and (
       (v_from.owner_id is null and not ledger_shard_add(v_from.id, -p_amount, p_shard))
       or (v_to.owner_id is null and not ledger_shard_add(v_to.id, p_amount, p_shard))) then
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
    perform ledger_post_entries(p_id, v_from, v_to, p_amount, p_now);
  end if;

  return query select 'OK'::text, v_account.currency, v_from.id, v_to.id;
end
$$;

-- As in 0003, plus: after the user accounts, the batch's shard of every system account its
-- deposits and withdrawals name is locked in account id order (created first if missing), before
-- any item runs. Items then find their shard already held; a lock cycle between batches would need
-- two locks taken in opposite orders, and none are.
create or replace function ledger_move_batch(p_items jsonb, p_shard smallint)
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

  if exists (select 1 from jsonb_array_elements(p_items) e where e->>'kind' <> 'transfer') then
    -- ON CONFLICT DO UPDATE ... WHERE false locks an existing row without writing it, and the rows
    -- are inserted or locked in the SELECT's order.
    insert into system_account_shards as s (account_id, shard, balance)
    select sa.id, p_shard, 0::bigint
    from accounts sa
    where sa.owner_id is null and sa.currency in (
      select ua.currency from accounts ua
      where ua.id in (select (e->>'accountId')::uuid from jsonb_array_elements(p_items) e where e->>'kind' <> 'transfer'))
    order by sa.id
    on conflict (account_id, shard) do update set balance = s.balance where false;
  end if;

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
