// Background housekeeping on a timer: one run at a time (a slow run is not stacked on), what a run
// did is logged when it did something, a failure is a warning and the next tick tries again. The
// timer does not keep the process alive.
import type { Logger } from './logger.js';

/** repeatEvery as a Schedule (platform/jobs.ts): on this instance's timer only, for when no scheduler is given. */
export const localSchedule =
  (logger: Logger) =>
  (name: string, intervalMs: number, job: () => Promise<number>): (() => void) =>
    repeatEvery(logger, name, intervalMs, job);

/** Runs `job` every `intervalMs`; `job` resolves to how many things it handled. Returns the stop. */
export function repeatEvery(logger: Logger, name: string, intervalMs: number, job: () => Promise<number>): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    job()
      .then((count) => {
        if (count > 0) logger.info({ count }, name);
      })
      .catch((error: unknown) => logger.warn({ err: error }, `${name} failed`))
      .finally(() => (running = false));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
