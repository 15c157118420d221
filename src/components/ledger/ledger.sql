-- The ledger's rules, as SQL functions. Money moves only through ledger_apply: one statement per
-- batch of requests (one round trip, one commit) that locks, checks, writes, and keeps each keyed
-- request's outcome for idempotent replays. Tables live in the numbered migrations; this file is
-- applied after them on every start (CREATE OR REPLACE, skipped when unchanged), so a rule is changed
-- here, in place, not by a migration that re-creates a whole function.
--
-- THE ORDER IN WHICH A REQUEST IS CHECKED, and the outcome each check returns (by name):
--
--   Every request with an Idempotency-Key, first:
--     in_progress        another transaction holds the (caller, key) lock (or the key is twice in a batch)
--     key_reused         the key was used by this caller with another request (fingerprint)
--     replayed           the key was used with this request: its stored outcome, transfer and request id
--   Moves (kind transfer | deposit | withdrawal):
--     ACCOUNT_NOT_FOUND       the account in the path / fromAccountId is unknown, closed, frozen (its owner is
--                             being closed: only the closure's own withdrawals move it), a system account,
--                             or (but for deposits, an admin's) not the caller's
--     COUNTERPARTY_NOT_FOUND  transfer: toAccountId is unknown, closed, frozen or a system account
--     CURRENCY_MISMATCH       the two accounts hold different currencies
--     INSUFFICIENT_FUNDS      the debited user account's available balance (balance - reserved) < amount
--     BALANCE_LIMIT_EXCEEDED  a posted credit would take a user balance past 2^53 - 1, or no shard of the
--                             system account can take its side within bigint
--     OK                      transfer written; two entries and the balances, or (pending) the reservation
--   Resolutions of a pending transfer (kind post | void | expire), ledger_resolve:
--     TRANSFER_NOT_FOUND      unknown, not pending, or (post/void) not from the caller's account
--     PENDING_ALREADY_POSTED  PENDING_EXPIRED (expired by the sweep, or timed out now)  PENDING_ALREADY_VOIDED
--     AMOUNT_EXCEEDS_PENDING  a post for more than was reserved
--     ACCOUNT_NOT_FOUND       post: the source was frozen since (a void still releases it)
--     COUNTERPARTY_NOT_FOUND  post: the destination was closed or frozen since
--     BALANCE_LIMIT_EXCEEDED  post: the credit would take the destination past 2^53 - 1
--     OK
--
-- Locks: every user account a batch names, in id order, then the batch's shard of every system
-- account it names, in id order, before anything is checked. Two batches therefore never wait for
-- each other in a cycle. Another shard is only ever taken with SKIP LOCKED.

-- A batch's requests, decoded from the JSON the application sends (ledger.repo.ts applyBatch).
-- (Its columns grew: a function's result type cannot be replaced in place.)
drop function if exists ledger_items(jsonb);
create function ledger_items(p_items jsonb)
returns table (item integer, principal uuid, key text, fingerprint bytea, request_id text, id uuid, kind text,
               account_id uuid, counterparty_id uuid, pending_id uuid, amount bigint, description text,
               pending boolean, expires_at timestamptz, actor_sees_all boolean, now timestamptz,
               event_id uuid, traceparent text, frozen_ok boolean)
language sql immutable as $$
  select x.item, x.principal, x.key, decode(x.fingerprint, 'hex'), x.request_id, x.id, x.kind, x.account_id,
         x.counterparty_id, x.pending_id, x.amount, x.description, coalesce(x.pending, false), x.expires_at,
         coalesce(x.actor_sees_all, false), x.now, x.event_id, x.traceparent, coalesce(x.frozen_ok, false)
  from jsonb_to_recordset(p_items) as x(item integer, principal uuid, key text, fingerprint text, request_id text,
    id uuid, kind text, account_id uuid, counterparty_id uuid, pending_id uuid, amount bigint, description text,
    pending boolean, expires_at timestamptz, actor_sees_all boolean, now timestamptz, event_id uuid, traceparent text,
    frozen_ok boolean)
$$;

-- Adds p_delta to one shard of a system account; false when no shard can take it without leaving
-- bigint. The preferred shard is waited for (the batch already holds it); another shard is taken only
-- if nobody holds it (SKIP LOCKED), so a shard lock is never waited for out of the batch's order.
-- Shards with room that are all busy: 40001, retried by the application.
create or replace function ledger_shard_add(p_account_id uuid, p_delta bigint, p_shard smallint)
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

-- Replaced by ledger_move (resolutions) and ledger_write_moves (moves).
drop function if exists ledger_post_entries(uuid, accounts, accounts, bigint, timestamptz);

-- Applies a posted amount of a resolution: its two entries, the user balances and (through
-- ledger_shard_add) a system side. Pending transfers are between user accounts, so the system side,
-- and its "no room" case, cannot happen here; should it, the statement fails whole.
create or replace function ledger_move(p_transfer_id uuid, p_from accounts, p_to accounts, p_amount bigint,
  p_shard smallint, p_now timestamptz)
returns void language plpgsql as $$
begin
  if (p_from.owner_id is null and not ledger_shard_add(p_from.id, -p_amount, p_shard))
     or (p_to.owner_id is null and not ledger_shard_add(p_to.id, p_amount, p_shard)) then
    raise exception 'no shard of the system account can take % more', p_amount using errcode = '22003';
  end if;
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

-- Writes accepted moves, set-based: their transfers, their entries, one update per account touched
-- (the sum of its moves) and, with p_system, one per system account on the batch's shard. The rules
-- were checked by the caller (ledger_apply), in order, against exactly these sums.
create or replace function ledger_write_moves(p_items jsonb, p_item integer[], p_from uuid[], p_to uuid[],
  p_system boolean, p_shard smallint)
returns void language plpgsql as $$
begin
  if coalesce(array_length(p_item, 1), 0) = 0 then
    return;
  end if;
  with moves as (
    select i.item, i.id, i.kind, i.amount, i.pending, i.expires_at, i.description, i.principal, i.now,
           f.id as from_id, t.id as to_id, f.currency, f.owner_id is null as from_system, t.owner_id is null as to_system
    from unnest(p_item, p_from, p_to) as m(item, from_id, to_id)
    join ledger_items(p_items) i on i.item = m.item
    join accounts f on f.id = m.from_id
    join accounts t on t.id = m.to_id
  ), written as (
    insert into transfers (id, kind, from_account_id, to_account_id, amount, currency, pending, expires_at,
                           description, initiated_by, created_at)
    select m.id, m.kind, m.from_id, m.to_id, m.amount, m.currency, m.pending, case when m.pending then m.expires_at end,
           m.description, m.principal, m.now
    from moves m
    order by m.item
  ), entered as (
    insert into entries (transfer_id, account_id, amount, created_at)
    select m.id, e.account_id, e.amount, m.now
    from moves m cross join lateral (values (m.from_id, -m.amount), (m.to_id, m.amount)) as e(account_id, amount)
    where not m.pending
  ), effects as (
    -- What each move does to each account: balance, reservation, and (system) the shard.
    select m.from_id as account_id, m.from_system as system, case when m.pending then 0 else -m.amount end as d_balance,
           case when m.pending then m.amount else 0 end as d_reserved, m.now
    from moves m
    union all
    select m.to_id, m.to_system, m.amount, 0, m.now from moves m where not m.pending
  ), users_updated as (
    update accounts a
    set balance = a.balance + d.d_balance, pending_debits = a.pending_debits + d.d_reserved, updated_at = d.at
    from (select e.account_id, sum(e.d_balance) as d_balance, sum(e.d_reserved) as d_reserved, max(e.now) as at
          from effects e where not e.system group by e.account_id) d
    where a.id = d.account_id
  )
  update system_account_shards s
  set balance = s.balance + d.d_balance
  from (select e.account_id, sum(e.d_balance) as d_balance from effects e where e.system group by e.account_id) d
  where p_system and s.account_id = d.account_id and s.shard = p_shard;
end
$$;

-- Posts (all or part of) or voids a pending transfer, or expires it: see the rule order above.
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
  if p_action = 'post' and v_from.frozen_at is not null then
    return query select 'ACCOUNT_NOT_FOUND'::text, v_pending.currency, null::bigint;
    return;
  end if;
  if (v_to.closed_at is not null or v_to.frozen_at is not null) and p_action = 'post' then
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

-- The data of a transfer event that ledger_apply wrote without it (step 7): the transfer as the API
-- shows it, built from its row when the relay reads the event (events.repo.ts readAfter, which joins
-- this per event). Transfers are immutable, so this is exactly what building it at write time gave.
-- The event's subject names the transfer (transfer.created, .pending) or the pending transfer it
-- resolved (.posted, .voided, .expired; at most one resolution each). Keys in jsonb order; the
-- description is kept when null, the other null fields are left out. A set-returning SQL function
-- so that the planner inlines it into the reader's query (an index probe per event, ~10 us; a
-- function called per row cost twice that).
drop function if exists ledger_event_data(text, text);
create function ledger_event_data(p_type text, p_subject text) returns table (data jsonb)
language sql stable as $$
  select jsonb_strip_nulls(jsonb_build_object(
           'id', t.id, 'fromAccountId', t.from_account_id, 'toAccountId', t.to_account_id, 'amount', t.amount,
           'currency', t.currency,
           'status', case t.kind when 'void' then 'voided' when 'expire' then 'expired'
                                 else case when t.pending then 'pending' else 'posted' end end,
           'createdAt', to_char(t.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'expiresAt', to_char(t.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'pendingId', t.pending_id)) || jsonb_build_object('description', t.description)
  from transfers t
  -- Any other event (its subject is no transfer's) matches no row: the planner may run this probe
  -- for rows the caller then discards, so nothing here may fail on another subject.
  where t.id = case when p_type in ('transfer.created', 'transfer.pending') then substr(p_subject, 11)::uuid
                    when p_type in ('transfer.posted', 'transfer.voided', 'transfer.expired')
                      then (select r.id from transfers r where r.pending_id = substr(p_subject, 11)::uuid) end
$$;

-- A batch of money requests in one statement (one commit and one WAL flush for all, as TigerBeetle
-- batches transfers), each with its own outcome and idempotency record. Moves are checked and
-- written set-based: a few statements per batch whatever its size. Their rules depend on the moves
-- before them (a balance spent by an earlier one), so they are decided in item order by running sums:
-- every move up to the first one a rule refuses is written at once; that one gets its outcome; the
-- rest are checked again on the new balances (one more round per refusal). Resolutions of pending
-- transfers (rare) then run one by one (ledger_resolve). Any order of the batch's requests is one
-- they could have arrived in.
create or replace function ledger_apply(p_items jsonb, p_shard smallint)
returns table (item integer, result text, outcome text, request_id text, transfer_id uuid, kind text,
               from_account_id uuid, to_account_id uuid, amount bigint, currency text, pending boolean,
               pending_id uuid, expires_at timestamptz, description text, created_at timestamptz)
language plpgsql
-- Every lookup here is by key into a table that grows (accounts, transfers, idempotency keys) from a
-- batch of at most a few hundred rows: index probes, always. The plans are cached (generic after
-- five calls, possibly while the tables were empty), and a hash join or a sequential scan chosen
-- then would cost more with every transfer written since.
set enable_seqscan = off set enable_hashjoin = off set enable_mergejoin = off
as $$
#variable_conflict use_column
declare
  v_count integer := jsonb_array_length(p_items);
  v_result text[] := array_fill(null::text, array[v_count]);
  v_outcome text[] := array_fill(null::text, array[v_count]);
  v_request text[] := array_fill(null::text, array[v_count]);
  v_transfer uuid[] := array_fill(null::uuid, array[v_count]);
  -- The moves that pass every rule that depends on nothing else in the batch, in item order.
  v_move integer[] := '{}';
  v_from uuid[] := '{}';
  v_to uuid[] := '{}';
  v_from_user boolean[] := '{}';
  v_to_user boolean[] := '{}';
  v_amount bigint[] := '{}';
  v_pending boolean[] := '{}';
  v_moves integer;
  v_done integer := 0; -- moves at positions <= v_done are decided
  v_refused record;
  v_row record;
  v_answer text;
begin
  -- 1. Locks, in one global order: user accounts by id, then the batch's shard of each system account.
  perform 1 from accounts a
  where a.owner_id is not null and a.id in (
    select i.account_id from ledger_items(p_items) i
    union select i.counterparty_id from ledger_items(p_items) i
    union select t.from_account_id from transfers t join ledger_items(p_items) i on t.id = i.pending_id
    union select t.to_account_id from transfers t join ledger_items(p_items) i on t.id = i.pending_id)
  order by a.id
  for update;

  -- ON CONFLICT DO UPDATE ... WHERE false locks an existing row without writing it; rows are inserted
  -- or locked in the SELECT's order.
  insert into system_account_shards as s (account_id, shard, balance)
  select sa.id, p_shard, 0::bigint
  from accounts sa
  where sa.owner_id is null and sa.currency in (
    select ua.currency from accounts ua join ledger_items(p_items) i on ua.id = i.account_id
    where i.kind in ('deposit', 'withdrawal'))
  order by sa.id
  on conflict (account_id, shard) do update set balance = s.balance where false;

  -- 2. Idempotency: take each key's lock (transaction-scoped), then, in a later statement so that its
  -- snapshot is taken with the lock held, look up what is stored.
  for v_row in
    select k.item,
           case when k.nth = 1 then pg_try_advisory_xact_lock(hashtextextended(k.principal::text || ':' || k.key, 0))
                else false end as got
    from (select i.item, i.principal, i.key, row_number() over (partition by i.principal, i.key order by i.item) as nth
          from ledger_items(p_items) i where i.key is not null) k
  loop
    if not v_row.got then
      v_result[v_row.item] := 'in_progress';
    end if;
  end loop;

  for v_row in
    select i.item, s.fingerprint = i.fingerprint as same, s.outcome, s.request_id, s.transfer_id
    from ledger_items(p_items) i
    join idempotency_keys s on s.principal_id = i.principal and s.key = i.key
  loop
    continue when v_result[v_row.item] is not null;
    if v_row.same then
      v_result[v_row.item] := 'replayed';
      v_outcome[v_row.item] := v_row.outcome;
      v_request[v_row.item] := v_row.request_id;
      v_transfer[v_row.item] := v_row.transfer_id;
    else
      v_result[v_row.item] := 'key_reused';
    end if;
  end loop;

  -- 3. Moves: the rules that depend on nothing else in the batch.
  for v_row in
    select i.item, i.amount, i.pending,
      case
        when a.id is null or (i.kind <> 'deposit' and not i.actor_sees_all and a.owner_id is distinct from i.principal)
          then 'ACCOUNT_NOT_FOUND'
        when i.kind = 'transfer' and c.id is null then 'COUNTERPARTY_NOT_FOUND'
        when i.kind <> 'transfer' and s.id is null then 'NO_SYSTEM_ACCOUNT'
        when coalesce(c.currency, s.currency) <> a.currency then 'CURRENCY_MISMATCH'
      end as refused,
      case when i.kind = 'deposit' then s.id else a.id end as from_id,
      case when i.kind = 'deposit' then a.id else coalesce(c.id, s.id) end as to_id,
      i.kind <> 'deposit' as from_user,
      i.kind <> 'withdrawal' as to_user
    from ledger_items(p_items) i
    left join accounts a on a.id = i.account_id and a.closed_at is null and a.owner_id is not null
                        and (a.frozen_at is null or i.frozen_ok)
    -- The other side: a transfer's destination, or the currency's system account.
    left join accounts c on i.kind = 'transfer' and c.id = i.counterparty_id and c.closed_at is null and c.owner_id is not null
                        and c.frozen_at is null
    left join accounts s on i.kind <> 'transfer' and s.owner_id is null and s.currency = a.currency
    where i.kind in ('transfer', 'deposit', 'withdrawal')
    order by i.item
  loop
    continue when v_result[v_row.item] is not null;
    if v_row.refused = 'NO_SYSTEM_ACCOUNT' then
      raise exception 'no system account for the currency of account %', v_row.to_id;
    elsif v_row.refused is not null then
      v_result[v_row.item] := 'executed';
      v_outcome[v_row.item] := v_row.refused;
    else
      v_move := v_move || v_row.item;
      v_from := v_from || v_row.from_id;
      v_to := v_to || v_row.to_id;
      v_from_user := v_from_user || v_row.from_user;
      v_to_user := v_to_user || v_row.to_user;
      v_amount := v_amount || v_row.amount;
      v_pending := v_pending || v_row.pending;
    end if;
  end loop;

  -- 4. Moves: the rules on balances, by running sums in item order (see the function's comment).
  v_moves := coalesce(array_length(v_move, 1), 0);
  while v_done < v_moves loop
    with candidate as (
      select c.pos, c.from_id, c.to_id, c.from_user, c.to_user, c.amount, c.pending
      from unnest(v_from, v_to, v_from_user, v_to_user, v_amount, v_pending)
        with ordinality as c(from_id, to_id, from_user, to_user, amount, pending, pos)
      where c.pos > v_done
    ), effect as (
      -- rule_no: the rule's place in the rule order, for a move refused by two.
      select c.pos, 1 as rule_no, c.from_id as account_id, c.amount, -c.amount::numeric as d_available,
             case when c.pending then 0 else -c.amount end::numeric as d_balance
      from candidate c where c.from_user
      union all
      select c.pos, 2, c.to_id, c.amount, c.amount::numeric, c.amount::numeric
      from candidate c where c.to_user and not c.pending
      union all
      select c.pos, 3, case when c.from_user then c.to_id else c.from_id end, c.amount, null::numeric,
             case when c.from_user then c.amount else -c.amount end::numeric
      from candidate c where not c.pending and not (c.from_user and c.to_user)
    ), running as (
      select e.*,
             coalesce(sum(e.d_available) over earlier, 0) as available_before,
             coalesce(sum(e.d_balance) over earlier, 0) as balance_before
      from effect e
      window earlier as (partition by e.account_id order by e.pos rows between unbounded preceding and 1 preceding)
    )
    select r.pos, r.rule_no, r.account_id, r.d_balance into v_refused
    from running r
    left join accounts a on r.rule_no < 3 and a.id = r.account_id
    left join system_account_shards s on r.rule_no = 3 and s.account_id = r.account_id and s.shard = p_shard
    where (r.rule_no = 1 and a.balance - a.pending_debits + r.available_before < r.amount)
       or (r.rule_no = 2 and a.balance + r.balance_before + r.amount > 9007199254740991)
       or (r.rule_no = 3 and coalesce(s.balance + r.balance_before + r.d_balance, 9223372036854775808)
                          not between -9223372036854775808 and 9223372036854775807)
    order by r.pos, r.rule_no
    limit 1;

    if not found then
      perform ledger_write_moves(p_items, v_move[v_done + 1 : v_moves], v_from[v_done + 1 : v_moves],
        v_to[v_done + 1 : v_moves], true, p_shard);
      for p in v_done + 1 .. v_moves loop
        v_result[v_move[p]] := 'executed';
        v_outcome[v_move[p]] := 'OK';
      end loop;
      exit;
    end if;

    perform ledger_write_moves(p_items, v_move[v_done + 1 : v_refused.pos - 1], v_from[v_done + 1 : v_refused.pos - 1],
      v_to[v_done + 1 : v_refused.pos - 1], true, p_shard);
    for p in v_done + 1 .. v_refused.pos - 1 loop
      v_result[v_move[p]] := 'executed';
      v_outcome[v_move[p]] := 'OK';
    end loop;
    v_result[v_move[v_refused.pos]] := 'executed';
    if v_refused.rule_no = 1 then
      v_outcome[v_move[v_refused.pos]] := 'INSUFFICIENT_FUNDS';
    elsif v_refused.rule_no = 2 then
      v_outcome[v_move[v_refused.pos]] := 'BALANCE_LIMIT_EXCEEDED';
    elsif ledger_shard_add(v_refused.account_id, v_refused.d_balance::bigint, p_shard) then
      -- The batch's shard is full: another one took the system side, the rest is written as usual.
      perform ledger_write_moves(p_items, array[v_move[v_refused.pos]], array[v_from[v_refused.pos]],
        array[v_to[v_refused.pos]], false, p_shard);
      v_outcome[v_move[v_refused.pos]] := 'OK';
    else
      v_outcome[v_move[v_refused.pos]] := 'BALANCE_LIMIT_EXCEEDED';
    end if;
    v_done := v_refused.pos;
  end loop;

  -- 5. Resolutions of pending transfers, one by one.
  for v_row in
    select i.* from ledger_items(p_items) i where i.kind in ('post', 'void', 'expire') order by i.item
  loop
    continue when v_result[v_row.item] is not null;
    select r.outcome into v_answer from ledger_resolve(v_row.id, v_row.pending_id, v_row.kind, v_row.amount,
      v_row.principal, v_row.actor_sees_all, p_shard, v_row.now) r;
    v_result[v_row.item] := 'executed';
    v_outcome[v_row.item] := v_answer;
  end loop;

  -- 6. What a keyed request executed is kept, in this transaction, for its replays.
  insert into idempotency_keys (principal_id, key, fingerprint, outcome, transfer_id, request_id)
  select i.principal, i.key, i.fingerprint, v_outcome[i.item], case when v_outcome[i.item] = 'OK' then i.id end,
         i.request_id
  from ledger_items(p_items) i
  where i.key is not null and v_result[i.item] = 'executed';

  -- 7. Each transfer written leaves its event in the outbox (events.sql), in this transaction: a move
  -- transfer.created (posted at once) or transfer.pending; a resolution transfer.posted, .voided or
  -- .expired, about the pending transfer it resolved. Inserted here rather than through
  -- outbox_append: building one JSON array of the events only for outbox_append to take it apart
  -- again cost ~7 us per event. The rule outbox_append keeps holds: the transaction's id is assigned
  -- before the first position, since an event is only written for an item executed OK, which wrote
  -- its transfer above. nextval runs after the sort (a volatile target is evaluated in output order),
  -- so positions follow the items.
  -- The row is lean, for the money path pays for every byte (heap, WAL, flush): no data, which the
  -- relay builds from the immutable transfer when it reads the event (ledger_event_data above), and
  -- type and subject from the item itself (a move's transfer is the item's id and pending flag, a
  -- resolution's subject its pending transfer), not from a look-up of the transfer just written.
  insert into outbox_events (seq, id, type, subject, traceparent, created_at)
  select nextval('outbox_events_seq'), i.event_id,
         case i.kind when 'post' then 'transfer.posted' when 'void' then 'transfer.voided'
                     when 'expire' then 'transfer.expired'
                     else case when i.pending then 'transfer.pending' else 'transfer.created' end end,
         'transfers/' || case when i.kind in ('post', 'void', 'expire') then i.pending_id else i.id end,
         i.traceparent, i.now
  from ledger_items(p_items) i
  where v_result[i.item] = 'executed' and v_outcome[i.item] = 'OK' and i.event_id is not null
  order by i.item;

  return query
  select i.item, v_result[i.item], v_outcome[i.item], coalesce(v_request[i.item], i.request_id), t.id, t.kind,
         t.from_account_id, t.to_account_id, t.amount, t.currency, t.pending, t.pending_id, t.expires_at, t.description,
         t.created_at
  from ledger_items(p_items) i
  left join transfers t on v_outcome[i.item] = 'OK' and t.id = coalesce(v_transfer[i.item], i.id)
  order by i.item;
end
$$;
