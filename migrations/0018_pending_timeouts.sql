-- The pending transfers that can still time out: one row each from the reservation until it is
-- resolved (posted, voided or expired), written and deleted by the ledger's own functions (ledger.sql)
-- in the statement that reserves or resolves. The expiry sweep reads only these. Before, it walked
-- transfers_pending_expiry_idx, and since transfers are immutable that index kept every pending
-- transfer with a timeout forever: each tick probed all of them (328 ms at 300,000 resolved ones),
-- growing with the ledger.
create table pending_timeouts (
  transfer_id uuid primary key references transfers (id),
  expires_at timestamptz not null
);
create index pending_timeouts_expires_idx on pending_timeouts (expires_at);

insert into pending_timeouts (transfer_id, expires_at)
select t.id, t.expires_at from transfers t
where t.pending and t.expires_at is not null
  and not exists (select 1 from transfers r where r.pending_id = t.id);

drop index transfers_pending_expiry_idx;
