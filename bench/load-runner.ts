// Runs ONE autocannon load in its own process (so the load generator never shares a core's event
// loop with a server under test) and prints a compact JSON summary on stdout.
// Usage: node --import tsx bench/load-runner.ts '<json LoadSpec>'
// (bench/grpc-load.ts is the same for gRPC unary calls, which autocannon cannot make.)
import autocannon from 'autocannon';

export interface LoadSpec {
  readonly url: string;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly method?: 'GET' | 'POST';
  readonly headers?: Record<string, string>;
  readonly body?: string;
  /**
   * A value unique to each request (an idempotency key): sent in this header, or put in place of
   * this placeholder in the body. Without it the request is built once and sent as is.
   */
  readonly uniqueKey?: { readonly header: string } | { readonly bodyPlaceholder: string };
}

export interface LoadSummary {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly total: number;
  readonly ok2xx: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly durationSeconds: number;
  /** CPU time (user + system) the load generator's process spent generating the load, in seconds. */
  readonly clientCpuSeconds: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
const keyPrefix = `bench-${process.pid.toString(36)}-${Date.now().toString(36)}-`;
let keyCounter = 0;
const url = new URL(spec.url);
const unique = spec.uniqueKey;
const method = spec.method ?? 'GET';
const headers = spec.headers ?? {};
const cpuAtStart = process.cpuUsage();
const result = await autocannon({
  url: spec.url,
  connections: spec.connections,
  duration: spec.durationSeconds,
  method,
  headers,
  ...(spec.body !== undefined ? { body: spec.body } : {}),
  ...(unique
    ? {
        requests: [
          {
            method,
            path: `${url.pathname}${url.search}`,
            setupRequest: (request) => {
              const key = `${keyPrefix}${(keyCounter++).toString(36)}`;
              return 'header' in unique
                ? { ...request, headers: { ...headers, [unique.header]: key }, body: spec.body }
                : { ...request, headers, body: (spec.body ?? '').replace(unique.bodyPlaceholder, key) };
            },
          },
        ],
      }
    : {}),
});
const cpu = process.cpuUsage(cpuAtStart);
const summary: LoadSummary = {
  requestsPerSecond: result.requests.average,
  p50Ms: result.latency.p50,
  p99Ms: result.latency.p99,
  total: result.requests.total,
  ok2xx: result['2xx'],
  non2xx: result.non2xx,
  errors: result.errors,
  timeouts: result.timeouts,
  durationSeconds: result.duration,
  clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
};
process.stdout.write(`${JSON.stringify(summary)}\n`);
