// Load from C load generators, for comparing protocols on equal terms: `wrk` (HTTP/1.1) and
// `h2load` (nghttp2's, HTTP/2: gRPC unary calls with a fixed message). Node load generators
// (autocannon, bench/grpc-load.ts) share the machine's two cores with the server and cost
// differently per protocol; these two cost a few percent of a core for either.
// Both are Debian packages (wrk, nghttp2-client); `available()` says which are installed, and the
// bench leaves their rows out with a line when one is not.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { LoadSummary } from './load-runner.js';
import { cpuSecondsOf } from './proc-stat.js';

export interface CLoadSpec {
  readonly tool: 'wrk' | 'h2load';
  readonly url: string;
  /** wrk: connections; h2load: HTTP/2 sessions. */
  readonly connections: number;
  /** h2load: calls in flight per session (-m). */
  readonly streamsPerConnection?: number;
  readonly headers?: Record<string, string>;
  /** h2load: the request body file (a framed gRPC message); the call is then a POST. */
  readonly bodyFile?: string;
  readonly durationSeconds: number;
}

/** Whether `tool` can run here. */
export function available(tool: CLoadSpec['tool']): boolean {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
    return true;
  } catch (error) {
    // wrk prints its version and exits 1; only a missing binary is "not available".
    return (error as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** "1.23ms", "850.00us", "2.1s" -> milliseconds. */
function milliseconds(text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text ?? '');
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}

const number = (pattern: RegExp, output: string): number => Number(pattern.exec(output)?.[1] ?? Number.NaN);

export async function cLoad(spec: CLoadSpec): Promise<LoadSummary> {
  const headerArgs = Object.entries(spec.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const args =
    spec.tool === 'wrk'
      ? ['-t', '1', '-c', String(spec.connections), '-d', `${spec.durationSeconds}s`, '--latency', ...headerArgs, spec.url]
      : [
          '-t', '1',
          '-c', String(spec.connections),
          '-m', String(spec.streamsPerConnection ?? 1),
          '-D', String(spec.durationSeconds),
          ...(spec.bodyFile ? ['-d', spec.bodyFile] : []),
          ...headerArgs,
          spec.url,
        ];
  const child = spawn(spec.tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  // The loader's own CPU, read while it runs (its /proc entry goes with it).
  let cpu = 0;
  const pid = child.pid;
  const sampler = setInterval(() => {
    cpu = cpuSecondsOf(pid) ?? cpu;
  }, 100);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearInterval(sampler);
  if (code !== 0) throw new Error(`${spec.tool} failed (exit ${code}) for ${spec.url}:\n${output}`);

  if (spec.tool === 'wrk') {
    const total = number(/(\d+) requests in/, output);
    const non2xx = number(/Non-2xx or 3xx responses: (\d+)/, output) || 0;
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
    return {
      requestsPerSecond: number(/Requests\/sec:\s+([\d.]+)/, output),
      p50Ms: milliseconds(/\s50%\s+(\S+)/.exec(output)?.[1]),
      p99Ms: milliseconds(/\s99%\s+(\S+)/.exec(output)?.[1]),
      total,
      ok2xx: total - non2xx,
      non2xx,
      errors: socketErrors ? Number(socketErrors[1]) + Number(socketErrors[2]) + Number(socketErrors[3]) : 0,
      timeouts: socketErrors ? Number(socketErrors[4]) : 0,
      durationSeconds: spec.durationSeconds,
      clientCpuSeconds: cpu,
    };
  }
  // h2load: "requests: N total, N started, N done, S succeeded, F failed, E errored, T timeout";
  // "succeeded" is an HTTP 2xx (the bench checks grpc-status separately); latency: mean only.
  const counts = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(output);
  return {
    requestsPerSecond: number(/finished in [\d.]+s, ([\d.]+) req\/s/, output),
    p50Ms: milliseconds(/time for request:\s+\S+\s+\S+\s+(\S+)/.exec(output)?.[1]),
    p99Ms: Number.NaN,
    total: Number(counts?.[1] ?? 0),
    ok2xx: Number(counts?.[2] ?? 0),
    non2xx: Number(counts?.[3] ?? 0),
    errors: Number(counts?.[4] ?? 0),
    timeouts: Number(counts?.[5] ?? 0),
    durationSeconds: spec.durationSeconds,
    clientCpuSeconds: cpu,
  };
}
