-- The pending transfers that can still time out: one row each from the reservation until it is
-- resolved (posted, voided or expired). The expiry sweep reads only these. Before, it walked
-- transfers_pending_expiry_idx, and since transfers are immutable that index kept every pending
-- transfer with a timeout forever: each tick probed all of them (328 ms at 300,000 resolved ones),
-- growing with the ledger.
--
-- Kept by a statement-level trigger on transfers (one call per INSERT statement, the rows in a
-- transition table), not by the ledger's functions: whatever writes transfers keeps the list, also
-- an instance still running the previous ledger.sql during a rolling upgrade. The table is locked
-- against inserts while this migration runs, so no reservation falls between the back-fill and the
-- trigger.
lock table transfers in share row exclusive mode;

create table pending_timeouts (
  transfer_id uuid primary key references transfers (id),
  expires_at timestamptz not null
);
create index pending_timeouts_expires_idx on pending_timeouts (expires_at);

create function pending_timeouts_keep() returns trigger language plpgsql as $$
begin
  insert into pending_timeouts (transfer_id, expires_at)
  select n.id, n.expires_at from written n where n.pending and n.expires_at is not null;
  delete from pending_timeouts p using written n where n.pending_id is not null and p.transfer_id = n.pending_id;
  return null;
end
$$;
create trigger transfers_pending_timeouts after insert on transfers
  referencing new table as written for each statement execute function pending_timeouts_keep();

insert into pending_timeouts (transfer_id, expires_at)
select t.id, t.expires_at from transfers t
where t.pending and t.expires_at is not null
  and not exists (select 1 from transfers r where r.pending_id = t.id);

drop index transfers_pending_expiry_idx;
