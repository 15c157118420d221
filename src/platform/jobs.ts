// Periodic work that runs once per tick across all instances (expiring pending transfers, purging old
// keys and sessions, pruning the outbox), not once per instance. Each instance ticks on its own timer
// and tries to claim the job's run in the database: one UPDATE that moves `next_run_at` forward only
// if it is due and no other instance holds a live lease, so exactly one instance runs each tick. On
// PostgreSQL that is the cluster; on PGlite, the one process. Times are the database's, one clock.
//
// Why not a job library: pg-boss and graphile-worker need a PostgreSQL server (not PGlite), and
// BullMQ needs Redis; this is one table and two statements on either database.
import { hostname } from 'node:os';
import { sql } from 'kysely';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Database } from './db/index.js';
import { newId } from './ids.js';
import type { Logger } from './logger.js';

interface ScheduledJobsTable {
  name: string;
  next_run_at: Date;
  lease_owner: string | null;
  lease_until: Date | null;
  last_started_at: Date | null;
  last_finished_at: Date | null;
  last_result: string | null;
}

declare module './db/tables.js' {
  interface Tables {
    scheduled_jobs: ScheduledJobsTable;
  }
}

/** Runs `job` once every `intervalMs` across the deployment; resolves to how many things it handled. Returns the stop. */
export type Schedule = (name: string, intervalMs: number, job: () => Promise<number>) => () => void;

export interface Scheduler {
  readonly every: Schedule;
  /** Stops every job's timer and waits for runs in progress. */
  stop(): Promise<void>;
}

interface SchedulerOptions {
  readonly database: Database;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** How long a claimed run may take before another instance may run the job again. */
  readonly leaseMs?: number;
}

const DEFAULT_LEASE_MS = 10 * 60_000;

export function createScheduler(options: SchedulerOptions): Scheduler {
  const { database, logger } = options;
  const owner = `${hostname()}:${process.pid}:${newId()}`;
  const leaseSeconds = (options.leaseMs ?? DEFAULT_LEASE_MS) / 1000;
  const registers = options.registry ? [options.registry] : [];
  const runs = new Counter({
    name: 'bastion_job_runs_total',
    help: 'Periodic job runs by this instance, by job and result (ok, failed); a tick another instance ran is not counted',
    labelNames: ['job', 'result'] as const,
    registers,
  });
  const duration = new Histogram({
    name: 'bastion_job_duration_seconds',
    help: 'How long a periodic job run took on this instance',
    labelNames: ['job'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers,
  });
  const stops: Array<() => void> = [];
  const inFlight = new Set<Promise<void>>();

  /** True when this instance won the tick: the run was due and nobody held it. */
  const claim = async (name: string, intervalMs: number): Promise<boolean> => {
    const result = await sql`
      update scheduled_jobs
      set next_run_at = now() + make_interval(secs => ${intervalMs / 1000}), lease_owner = ${owner},
          lease_until = now() + make_interval(secs => ${leaseSeconds}), last_started_at = now()
      where name = ${name} and next_run_at <= now() and (lease_until is null or lease_until < now())`.execute(database.db);
    return (result.numAffectedRows ?? 0n) > 0n;
  };
  const finish = (name: string, result: 'ok' | 'failed') =>
    sql`update scheduled_jobs set lease_owner = null, lease_until = null, last_finished_at = now(), last_result = ${result}
        where name = ${name} and lease_owner = ${owner}`.execute(database.db);

  const every: Schedule = (name, intervalMs, job) => {
    let running = false;
    let registered: Promise<unknown> | undefined;
    const tick = () => {
      if (running) return;
      running = true;
      const run = (async () => {
        registered ??= sql`insert into scheduled_jobs (name, next_run_at) values (${name}, now()) on conflict (name) do nothing`.execute(
          database.db,
        );
        await registered;
        if (!(await claim(name, intervalMs))) return;
        const started = process.hrtime.bigint();
        try {
          const count = await job();
          runs.inc({ job: name, result: 'ok' });
          if (count > 0) logger.info({ job: name, count }, name);
          await finish(name, 'ok');
        } catch (error) {
          runs.inc({ job: name, result: 'failed' });
          logger.warn({ err: error, job: name }, `${name} failed`);
          await finish(name, 'failed');
        } finally {
          duration.observe({ job: name }, Number(process.hrtime.bigint() - started) / 1e9);
        }
      })()
        .catch((error: unknown) => {
          registered = undefined;
          logger.warn({ err: error, job: name }, `${name}: could not claim the run`);
        })
        .finally(() => {
          running = false;
          inFlight.delete(run);
        });
      inFlight.add(run);
    };
    // Ticks at the interval; the claim keeps it to one run per interval across instances.
    const timer = setInterval(tick, intervalMs);
    timer.unref();
    const stop = () => clearInterval(timer);
    stops.push(stop);
    return stop;
  };

  return {
    every,
    async stop() {
      for (const stop of stops.splice(0)) stop();
      await Promise.all([...inFlight]);
    },
  };
}
