-- Periodic jobs that must run once per tick across every instance, not once per instance
-- (src/platform/jobs.ts): each job's next run, claimed by one instance with a compare-and-set.
create table scheduled_jobs (
  name text primary key,
  next_run_at timestamptz not null,
  lease_owner text,
  lease_until timestamptz,
  last_started_at timestamptz,
  last_finished_at timestamptz,
  last_result text
);
