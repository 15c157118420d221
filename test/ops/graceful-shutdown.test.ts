// Graceful shutdown of the REAL process (`node --import tsx src/main.ts serve`): a burst of
// authenticated requests and slow (argon2) logins is in flight when SIGTERM/SIGINT arrives.
//
// What is asserted (the decision on 503s is documented here):
// - Every request uses its OWN connection (`Connection: close`, no agent), so no request can be queued
//   behind a reused keep-alive socket that the server closes under it.
// - Requests fully sent before the signal (and given one more round-trip, so the server has read
//   them) must ALL be answered 2xx; some of them must still be running when the signal arrives
//   (logins queue behind the argon2 semaphore, PASSWORD_HASH_CONCURRENCY=1) and complete 2xx after it.
// - Requests sent after the signal may be 2xx (signal not handled yet), 503, or refused/reset before
//   being accepted — nothing else. The 503 is real even on a fresh connection: between fastify's
//   "closing" flag and the listener actually closing, a newly accepted request is answered by
//   fastify's return503OnClosing (with `Connection: close`), or by /health/ready itself with
//   `checks.shutdown: "in progress"`. Clients may retry those; they never reached a handler.
// - /health/ready, polled after the signal, never goes back to 200 once it stopped answering 200.
// - The process exits with code 0 within SHUTDOWN_TIMEOUT_MS; when draining takes longer than that
//   bound, it exits with code 1 shortly after the bound (connections cut) instead of hanging.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postgresBackend, postgresSkipReason, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from '../helpers/server.js';
import { logLines, request, serviceEnv, startServiceProcess, type HttpResult, type ServiceProcess } from './service-process.js';

// 24 logins on one hashing thread keep requests in flight at the signal even on an idle machine (~20 ms
// each), and must drain within the bound on a loaded CI box too: there they took 9.8 s, past the
// service's 10 s default, so the bound here is three times that.
const SHUTDOWN_TIMEOUT_MS = 30_000;
/** Scheduling slack on a loaded 2-core CI box between "the bound passed" and "the exit was observed". */
const EXIT_SLACK_MS = 2_000;
const HASH_IN_PROGRESS_SLACK_MS = 8_000;
const LOGINS = 24;
const ME_REQUESTS = 60;
const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE']);

const baseEnv = (database: TestDatabase, extra: Record<string, string> = {}): Record<string, string> =>
  serviceEnv(database, { LOGIN_MAX_FAILURES: '1000', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS), LOG_LEVEL: 'info', ...extra });

async function loginToken(port: number): Promise<string> {
  const response = await request(port, 'POST', '/api/v1/auth/login', {
    body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
  });
  assert.equal(response.status, 200, `login failed: ${response.status} ${response.error ?? ''} ${response.body}`);
  return (JSON.parse(response.body) as { data: { accessToken: string } }).data.accessToken;
}

const describeResult = (result: HttpResult) => result.status ?? result.error ?? 'no answer';

function tally(results: readonly HttpResult[]): string {
  const counts = new Map<string | number, number>();
  for (const result of results) {
    const key = describeResult(result);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([key, count]) => `${key}×${count}`).join(', ') || 'none';
}

interface Burst {
  readonly results: Promise<HttpResult[]>;
  /** Resolves once every request of the burst has been fully written to its socket. */
  readonly allSent: Promise<void>;
}

function fireBurst(port: number, token: string): Burst {
  const total = LOGINS + ME_REQUESTS;
  let sent = 0;
  let markSent!: () => void;
  const allSent = new Promise<void>((resolve) => (markSent = resolve));
  const onSent = () => {
    sent += 1;
    if (sent === total) markSent();
  };
  const requests: Array<Promise<HttpResult>> = [];
  let logins = 0;
  // Interleaved, so slow logins and fast reads share the connection backlog.
  for (let i = 0; i < total; i++) {
    if (i % 3 === 0 && logins < LOGINS) {
      logins += 1;
      requests.push(
        request(port, 'POST', '/api/v1/auth/login', {
          body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
          onSent,
          timeoutMs: SHUTDOWN_TIMEOUT_MS + 15_000,
        }),
      );
    } else {
      requests.push(request(port, 'GET', '/api/v1/users/me', { token, onSent, timeoutMs: SHUTDOWN_TIMEOUT_MS + 15_000 }));
    }
  }
  return { results: Promise.all(requests), allSent };
}

interface PostSignal {
  readonly reads: HttpResult[];
  readonly readiness: HttpResult[];
}

/** After the signal: keep arriving (fresh connections) until the process has exited. */
async function pollDuringShutdown(service: ServiceProcess, token: string, exited: { value: boolean }): Promise<PostSignal> {
  const reads: HttpResult[] = [];
  const readiness: HttpResult[] = [];
  while (!exited.value) {
    const [read, ready] = await Promise.all([
      request(service.port, 'GET', '/api/v1/users/me', { token, timeoutMs: 10_000 }),
      request(service.port, 'GET', '/health/ready', { timeoutMs: 10_000 }),
    ]);
    reads.push(read);
    readiness.push(ready);
    if (read.error === 'ECONNREFUSED' && ready.error === 'ECONNREFUSED') break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { reads, readiness };
}

async function burstThenSignal(service: ServiceProcess, signal: NodeJS.Signals) {
  const token = await loginToken(service.port);
  const burst = fireBurst(service.port, token);
  await burst.allSent;
  // One more round-trip on a fresh connection: the event loop has had its turn to read the burst.
  const marker = await request(service.port, 'GET', '/health');
  assert.equal(marker.status, 200);
  await new Promise((resolve) => setTimeout(resolve, 50));

  const exited = { value: false };
  void service.exited.then(() => (exited.value = true));
  const signalAt = performance.now();
  service.signal(signal);
  const [results, postSignal, exit] = await Promise.all([
    burst.results,
    pollDuringShutdown(service, token, exited),
    service.exited,
  ]);
  return { results, postSignal, exit, signalAt };
}

function assertGracefulOutcome(
  service: ServiceProcess,
  signal: NodeJS.Signals,
  outcome: Awaited<ReturnType<typeof burstThenSignal>>,
) {
  const { results, postSignal, exit, signalAt } = outcome;
  const context = `\n--- stderr ---\n${service.stderr()}\n--- stdout (tail) ---\n${service.stdout().slice(-3_000)}`;

  // 1. Everything sent before the signal was answered, and answered 2xx.
  const failed = results.filter((result) => result.status === undefined || result.status < 200 || result.status >= 300);
  assert.equal(failed.length, 0, `requests sent before ${signal} that did not get a 2xx: ${tally(failed)}${context}`);

  // 2. Some of them were still in flight when the signal arrived, and completed afterwards.
  const inFlight = results.filter((result) => (result.sentAt ?? Infinity) < signalAt && result.doneAt > signalAt);
  assert.ok(inFlight.length > 0, `no request was in flight when ${signal} arrived; the test proves nothing${context}`);
  process.stdout.write(
    `# ${signal}: ${results.length} requests before the signal (${tally(results)}), ${inFlight.length} of them in flight at the signal\n`,
  );

  // 3. Late arrivals: answered 2xx/503, or refused/reset before being accepted — never anything else.
  for (const result of [...postSignal.reads, ...postSignal.readiness]) {
    const acceptable =
      (result.status !== undefined && ((result.status >= 200 && result.status < 300) || result.status === 503)) ||
      (result.error !== undefined && CONNECTION_ERRORS.has(result.error));
    assert.ok(acceptable, `a request after ${signal} got ${describeResult(result)} ${result.body}${context}`);
  }
  process.stdout.write(
    `# after ${signal}: /users/me ${tally(postSignal.reads)}; /health/ready ${tally(postSignal.readiness)}\n`,
  );

  // 4. Readiness never recovers once it stopped saying 200 (503 "shutdown in progress", or refused).
  const firstNotReady = postSignal.readiness.findIndex((result) => result.status !== 200);
  if (firstNotReady >= 0) {
    const recovered = postSignal.readiness.slice(firstNotReady).filter((result) => result.status === 200);
    assert.equal(recovered.length, 0, `/health/ready answered 200 again after ${describeResult(postSignal.readiness[firstNotReady]!)}`);
  }
  for (const result of postSignal.readiness.filter((r) => r.status === 503 && r.body.includes('"checks"'))) {
    const body = JSON.parse(result.body) as { status: string; checks: Record<string, string> };
    assert.equal(body.status, 'unavailable');
    assert.equal(body.checks['shutdown'], 'in progress');
  }

  // 5. Exit code 0, by itself, within the bound.
  assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `exit${context}`);
  const tookMs = exit.at - signalAt;
  assert.ok(tookMs < SHUTDOWN_TIMEOUT_MS + EXIT_SLACK_MS, `exit took ${Math.round(tookMs)} ms${context}`);

  // 6. The log tells the story, without errors.
  const logs = logLines(service.stdout());
  assert.ok(logs.some((line) => line['msg'] === 'shutdown: draining in-flight requests' && line['signal'] === signal), context);
  assert.ok(logs.some((line) => line['msg'] === 'shutdown: complete'), context);
  const errors = logs.filter((line) => typeof line['level'] === 'number' ? line['level'] >= 50 : line['level'] === 'error');
  assert.deepEqual(errors, [], 'error-level log lines during shutdown');
}

describeOnBackends('graceful shutdown of the real process', ({ it, createDatabase, defer }) => {
  const start = async (extra: Record<string, string> = {}) => {
    const service = await startServiceProcess(baseEnv(await createDatabase({ pgliteTemplate: true }), extra));
    defer(() => service.kill());
    return service;
  };

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`when ${signal} arrives mid-burst, then in-flight requests complete 2xx, late ones are 503 or refused, and the exit code is 0 within the bound`, { timeout: 90_000 }, async () => {
      const service = await start();
      assertGracefulOutcome(service, signal, await burstThenSignal(service, signal));
    });
  }

  it('when the process is idle, then SIGTERM exits 0 promptly', { timeout: 60_000 }, async () => {
    const service = await start();
    const signalAt = performance.now();
    service.signal('SIGTERM');
    const exit = await service.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, service.stderr());
    assert.ok(exit.at - signalAt < 5_000, `idle shutdown took ${Math.round(exit.at - signalAt)} ms`);
  });

  it('when draining outlasts SHUTDOWN_TIMEOUT_MS, then the process exits with code 1 shortly after the bound instead of hanging', { timeout: 60_000 }, async () => {
    const boundMs = 200;
    const service = await start({ SHUTDOWN_TIMEOUT_MS: String(boundMs) });
    // 60 logins behind a one-permit argon2 semaphore take well over a second to drain. All of them
    // are sent and read before the signal (as in the burst test), so all of them are in flight.
    let sent = 0;
    let allSent!: () => void;
    const sentAll = new Promise<void>((resolve) => (allSent = resolve));
    const logins = Array.from({ length: 60 }, () =>
      request(service.port, 'POST', '/api/v1/auth/login', {
        body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
        timeoutMs: 30_000,
        onSent: () => ++sent === 60 && allSent(),
      }),
    );
    await sentAll;
    assert.equal((await request(service.port, 'GET', '/health')).status, 200);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const signalAt = performance.now();
    service.signal('SIGTERM');
    const exit = await Promise.race([
      service.exited,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), boundMs + 10_000)),
    ]);
    const loginResults = await Promise.all(logins);
    process.stdout.write(`# drain past the bound: logins ${tally(loginResults)}, exit ${exit ? Math.round(exit.at - signalAt) : '-'} ms after the signal\n`);
    assert.ok(exit, `the process was still running ${boundMs + 10_000} ms after SIGTERM (SHUTDOWN_TIMEOUT_MS=${boundMs})`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 1, signal: null }, `${service.stderr()}\n${service.stdout().slice(-3_000)}`);
    // The bound, not the drain, ended it: a drain to the end would answer all 60.
    assert.ok(loginResults.filter((result) => result.status === 200).length < 60, tally(loginResults));
    // process.exit joins the hashing thread, which finishes the argon2 computation it is on first; at
    // its lowered priority on a CPU-starved host that took up to 2.4 s (CI, 2 cores shared with the
    // other test files): hence the slack of one starved hash, not of a drain.
    assert.ok(exit.at - signalAt < boundMs + HASH_IN_PROGRESS_SLACK_MS, `exit took ${Math.round(exit.at - signalAt)} ms`);
    assert.ok(logLines(service.stdout()).some((line) => line['msg'] === 'shutdown: timed out, closing connections'));
  });
});

// Draining WORKERS=2 mid-burst is covered by test/scale/cluster.test.ts; this is the start-up edge.
describe('graceful shutdown of a WORKERS=2 primary (PostgreSQL + Redis)', () => {
  let skip: string | undefined;
  let database: TestDatabase | undefined;
  let service: ServiceProcess | undefined;
  before(async () => {
    skip = (await postgresSkipReason()) ?? (await redisSkipReason());
    if (skip) return;
    database = await postgresBackend.createDatabase();
  });
  after(async () => {
    await service?.kill();
    await database?.drop();
  });

  it('when SIGTERM arrives while the workers are still starting, then the primary exits 0, not 1', { timeout: 300_000 }, async (t) => {
    if (skip || !database) return t.skip(skip);
    service = await startServiceProcess(baseEnv(database, { WORKERS: '2', REDIS_URL: TEST_REDIS_URL }), { waitForHealth: false });
    // The primary forks and logs this at once; the workers need a second or more to listen.
    const deadline = performance.now() + 30_000;
    while (!logLines(service.stdout()).some((line) => line['msg'] === 'cluster: workers started')) {
      assert.ok(performance.now() < deadline, `the primary never started its workers:\n${service.stderr()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    service.signal('SIGTERM');
    const exit = await service.exited;
    assert.deepEqual(
      { code: exit.code, signal: exit.signal },
      { code: 0, signal: null },
      `exit code ${exit.code}, signal ${exit.signal}: a stop requested during start-up is not a failure, but workers that ` +
        'have not installed their signal handlers yet die of the forwarded SIGTERM, and the primary counts that as a ' +
        `failed worker\n${service.stdout().slice(-3_000)}`,
    );
  });
});
