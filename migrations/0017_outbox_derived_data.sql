-- A transfer's event no longer stores a copy of its data: transfers are immutable (their trigger
-- forbids UPDATE and DELETE), so the data built from the transfer row when the relay reads the event
-- (ledger_event_data, ledger.sql) is the same as the ledger built when it wrote it. The row loses
-- ~300 of its ~480 bytes, and the batched money path half of the outbox's WAL. The other events keep
-- their data stored, as outbox_append writes it.
alter table outbox_events alter column data drop not null;
