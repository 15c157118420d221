// What the benchmarks read of a process from Linux's /proc: its CPU time, for the loader and the
// server under test of each run, or of every process by command name.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** A /proc/<pid>/stat line's command name and CPU time (user + system, all threads) in seconds. */
function parseStat(stat: string): { command: string; cpuSeconds: number } {
  // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    command: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
    cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS,
  };
}

/** A process's CPU time so far (user + system, all its threads), in seconds (Linux /proc; undefined elsewhere or once it has gone). */
export function cpuSecondsOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).cpuSeconds;
  } catch {
    return undefined;
  }
}

/**
 * CPU time so far of every process on the machine, summed per command name (`postgres`,
 * `beam.smp`, …), in seconds: what a group of processes used between two snapshots. A process that
 * exits between the snapshots takes its time with it.
 */
export function cpuSecondsByCommand(): Map<string, number> {
  const totals = new Map<string, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const { command, cpuSeconds } = parseStat(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      totals.set(command, (totals.get(command) ?? 0) + cpuSeconds);
    } catch {
      // gone between the listing and the read
    }
  }
  return totals;
}
