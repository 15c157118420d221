// Waiting for a server: a request repeated until it answers a status, a probe timed until it says
// yes, and a start-up readiness poll.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiResponse } from './client.js';

/**
 * Repeats `request` until it answers `status` or `withinMs` have passed, then returns the last
 * response: "stops working within 1 second" means a request made 1 s later must fail.
 */
export async function eventually(request: () => Promise<ApiResponse<unknown>>, status: number, withinMs = 1_000): Promise<ApiResponse<unknown>> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const response = await request();
    if (response.status === status || Date.now() >= deadline) return response;
    await sleep(50);
  }
}

/**
 * Repeats `probe` back to back until it says yes: the ms from `since` to the answer that said yes,
 * or undefined when it still said no after `limitMs` (a late propagation is measured, not only
 * reported as late).
 */
export async function msUntil(since: number, probe: () => Promise<boolean>, limitMs: number): Promise<number | undefined> {
  for (;;) {
    if (await probe()) return performance.now() - since;
    if (performance.now() - since > limitMs) return undefined;
    await sleep(2);
  }
}

/**
 * Polls GET `${baseUrl}/health/ready` every 100 ms until it answers 200 (true) or `timeoutMs` have
 * passed (false). `check` runs before every attempt; it throws to stop waiting (say, the process exited).
 */
export async function untilReady(baseUrl: string, options: { timeoutMs: number; check?: () => void }): Promise<boolean> {
  const deadline = Date.now() + options.timeoutMs;
  while (Date.now() < deadline) {
    options.check?.();
    try {
      const response = await fetch(`${baseUrl}/health/ready`, { signal: AbortSignal.timeout(1_000) });
      if (response.status === 200) return true;
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  return false;
}

/** What `pg.Client` offers that `untilLockWaiters` needs. */
interface Queryable {
  query<Row>(text: string): Promise<{ rows: Row[] }>;
}

/**
 * Polls PostgreSQL (through `observer`, a connection of its own) until at least `count` statements
 * of the current database wait on a lock: the way a test knows the requests it started have reached
 * the row it holds. Fails after `attempts` polls 10 ms apart.
 */
export async function untilLockWaiters(observer: Queryable, count: number, what: string, attempts = 500): Promise<void> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const { rows } = await observer.query<{ waiting: number }>(
      "select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    );
    if ((rows[0]?.waiting ?? 0) >= count) return;
    await sleep(10);
  }
  throw new Error(`expected ${count} statements waiting on ${what}`);
}
