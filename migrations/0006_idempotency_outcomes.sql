-- An idempotency record keeps the domain outcome of the request, not an HTTP response: the outcome
-- by name ('OK' or the rule that refused it), the transfer it created (transfers never change, so
-- the transfer as it was answered can always be read back), and the id of the request that first
-- produced it. Each transport renders a replay from these, as it rendered the first answer.
--
-- Existing records (REST responses) are converted: a 201 keeps its transfer's id; an error keeps its
-- code, the NOT_FOUND ones told apart by the message the ledger wrote for each rule.
alter table idempotency_keys
  add column outcome text,
  add column transfer_id uuid,
  add column request_id text;

update idempotency_keys set
  outcome = case
    when status_code = 201 then 'OK'
    when (response_body::jsonb)->'error'->>'code' <> 'NOT_FOUND' then (response_body::jsonb)->'error'->>'code'
    when (response_body::jsonb)->'error'->>'message' = 'Destination account not found' then 'COUNTERPARTY_NOT_FOUND'
    when (response_body::jsonb)->'error'->>'message' = 'Pending transfer not found' then 'TRANSFER_NOT_FOUND'
    else 'ACCOUNT_NOT_FOUND'
  end,
  transfer_id = case when status_code = 201 then ((response_body::jsonb)->'data'->>'id')::uuid end,
  request_id = (response_body::jsonb)->'error'->>'requestId';

alter table idempotency_keys
  drop column status_code,
  drop column response_body,
  alter column outcome set not null,
  add constraint idempotency_keys_transfer_of_ok check ((outcome = 'OK') = (transfer_id is not null));

-- The ledger's functions now live in src/components/ledger/ledger.sql, applied after the numbered
-- migrations. These stored HTTP responses or are replaced by the set-based batch.
drop function if exists ledger_move_batch(jsonb, smallint);
drop function if exists ledger_move_once(uuid, text, bytea, uuid, text, uuid, uuid, bigint, text, boolean, timestamptz,
  boolean, smallint, timestamptz, integer[], text[]);
drop function if exists ledger_execute(uuid, text, uuid, uuid, bigint, text, boolean, timestamptz, uuid, boolean,
  smallint, timestamptz);
