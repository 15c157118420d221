// WORKERS > 1: the real `serve` forks worker processes (node:cluster) that share one port on one
// PostgreSQL. Checked from outside, as an operator would: the port answers; two different worker
// processes serve requests (each keeps its own cache counters, so /metrics scraped over fresh
// connections shows two different processes answering, both having served authenticated requests);
// a killed worker is replaced; SIGTERM to the primary drains every worker and the primary exits 0;
// and WORKERS=2 without DATABASE_URL and REDIS_URL is refused at start.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { postgresBackend, postgresSkipReason, redisSkipReason, TEST_REDIS_URL, type TestDatabase } from '../helpers/backends.js';
import { parseCacheCounters } from '../helpers/metrics.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from '../helpers/server.js';
import { logLines, request, runCli, serviceEnv, startServiceProcess, type HttpResult, type ServiceProcess } from '../ops/service-process.js';

const SHUTDOWN_TIMEOUT_MS = 10_000;
const say = (line: string) => process.stdout.write(`# ${line}\n`);

/** Pids of the live child processes of `parent` (Linux /proc); undefined where /proc is not there. */
async function childPids(parent: number): Promise<number[] | undefined> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return undefined;
  }
  const children: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] !== 'Z' && Number(fields[1]) === parent) children.push(Number(entry));
  }
  return children.sort((x, y) => x - y);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const countLines = (service: ServiceProcess, message: string) => logLines(service.stdout()).filter((line) => line['msg'] === message).length;

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

describe('WORKERS=2 on PostgreSQL and Redis: one port, two worker processes', async () => {
  const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
  let database: TestDatabase | undefined;
  let service: ServiceProcess | undefined;
  let token = '';

  before(async () => {
    if (skip) return;
    database = await postgresBackend.createDatabase();
    service = await startServiceProcess(
      serviceEnv(database, {
        WORKERS: '2',
        REDIS_URL: TEST_REDIS_URL,
        DATABASE_POOL_SIZE: '4',
        SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        LOG_LEVEL: 'info',
      }),
      { startTimeoutMs: 45_000 },
    );
    // /health answered: one worker listens. Wait for the second.
    const started = service;
    await until('both workers to listen', async () => (countLines(started, 'Server listening at ' + started.baseUrl) >= 2 ? true : undefined), 30_000);
    const login = await request(service.port, 'POST', '/api/v1/auth/login', { body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } });
    assert.equal(login.status, 200, login.body);
    token = (JSON.parse(login.body) as { data: { accessToken: string } }).data.accessToken;
  });

  after(async () => {
    if (service) {
      const workers = (await childPids(service.child.pid ?? -1)) ?? [];
      await service.kill();
      for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await database?.drop();
  });

  it('when it runs, then one port answers /health and /health/ready, and two different worker processes serve requests', { skip, timeout: 60_000 }, async () => {
    const primary = service as ServiceProcess;
    assert.equal((await request(primary.port, 'GET', '/health')).status, 200);
    const ready = await request(primary.port, 'GET', '/health/ready');
    assert.equal(ready.status, 200, ready.body);
    assert.equal((JSON.parse(ready.body) as { checks: Record<string, string> }).checks['database'], 'ok');

    const workers = await childPids(primary.child.pid ?? -1);
    if (workers) {
      say(`primary ${primary.child.pid}, workers ${workers.join(', ')}`);
      assert.equal(workers.length, 2, `the primary has ${workers.length} child processes`);
    }

    // Each worker counts its own cache reads; /metrics requests read no cache, so between rounds
    // of authenticated requests every worker's total is fixed. Two different totals, both non-zero,
    // answered on one port = two processes that each served authenticated requests.
    let totals = new Set<number>();
    for (let round = 0; round < 10; round++) {
      const me = await request(primary.port, 'GET', '/api/v1/users/me', { token });
      assert.equal(me.status, 200, me.body);
      totals = new Set<number>();
      for (let scrape = 0; scrape < 8; scrape++) {
        const metrics = await request(primary.port, 'GET', '/metrics');
        assert.equal(metrics.status, 200);
        const counters = parseCacheCounters(metrics.body);
        totals.add(counters.l1_hit + counters.shared_hit + counters.miss);
      }
      if (totals.size >= 2 && ![...totals].includes(0)) break;
    }
    say(`users-cache totals seen on one port: ${[...totals].join(', ')}`);
    assert.equal(totals.size, 2, `expected two workers' counters, saw ${[...totals].join(', ')}`);
    assert.ok(![...totals].includes(0), 'one worker never served an authenticated request');
  });

  it('when 5 logins for one email fail from one client, then the 6th attempt is 429, whichever worker takes it', { skip, timeout: 30_000 }, async () => {
    // One service on one port: the contract's brute-force limit (5 failures) holds for the service,
    // not per worker process. Each attempt is a fresh connection, so the primary deals them to both.
    const primary = service as ServiceProcess;
    const email = `nobody-${Date.now()}@example.com`;
    const statuses: Array<number | string | undefined> = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const response = await request(primary.port, 'POST', '/api/v1/auth/login', { body: { email, password: 'wrong-password-1' } });
      statuses.push(response.status ?? response.error);
    }
    assert.deepEqual(statuses.slice(0, 5), [401, 401, 401, 401, 401]);
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await request(primary.port, 'POST', '/api/v1/auth/login', { body: { email, password: 'wrong-password-1' } });
      statuses.push(response.status ?? response.error);
    }
    say(`login attempts 1-7 for one email: ${statuses.join(' ')}`);
    assert.deepEqual(statuses.slice(5), [429, 429], `attempts 6 and 7 after 5 failures: ${statuses.slice(5).join(', ')}`);
  });

  it('when a worker is killed, then the primary starts another and the port keeps answering', { skip, timeout: 60_000 }, async () => {
    const primary = service as ServiceProcess;
    const workers = await childPids(primary.child.pid ?? -1);
    if (!workers) {
      say('no /proc: cannot find the worker pids; nothing to kill');
      return;
    }
    const [victim] = workers;
    assert.ok(victim);
    process.kill(victim, 'SIGKILL');
    const replaced = await until(
      'a replacement worker',
      async () => {
        const now = await childPids(primary.child.pid ?? -1);
        return now && now.length === 2 && !now.includes(victim) ? now : undefined;
      },
      30_000,
    );
    await until('the replacement to listen', async () => (countLines(primary, 'Server listening at ' + primary.baseUrl) >= 3 ? true : undefined), 30_000);
    say(`worker ${victim} killed; workers now ${replaced.join(', ')}`);
    assert.equal(countLines(primary, 'cluster: worker died, starting another'), 1);
    for (let index = 0; index < 6; index++) {
      const me = await request(primary.port, 'GET', '/api/v1/users/me', { token });
      assert.equal(me.status, 200, `${me.status ?? me.error} ${me.body}`);
    }
  });

  it('when SIGTERM reaches the primary mid-burst, then every worker drains its in-flight requests and the primary exits 0', { skip, timeout: 60_000 }, async () => {
    const primary = service as ServiceProcess;
    const workers = (await childPids(primary.child.pid ?? -1)) ?? [];
    // Slow logins (argon2 behind a one-permit semaphore in each worker) and fast reads, each on its
    // own connection, so the primary deals them to both workers.
    const total = 48;
    let sent = 0;
    let allSent!: () => void;
    const sentAll = new Promise<void>((resolve) => (allSent = resolve));
    const onSent = () => ++sent === total && allSent();
    const burst: Array<Promise<HttpResult>> = Array.from({ length: total }, (_, index) =>
      index % 2 === 0
        ? // Each login from its own client: one client may have at most LOGIN_MAX_FAILURES checks in flight per email.
          request(primary.port, 'POST', '/api/v1/auth/login', {
            body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
            onSent,
            timeoutMs: 30_000,
            localAddress: `127.0.${index >> 8}.${(index % 250) + 2}`,
          })
        : request(primary.port, 'GET', '/api/v1/users/me', { token, onSent, timeoutMs: 30_000 }),
    );
    await sentAll;
    assert.equal((await request(primary.port, 'GET', '/health')).status, 200);
    await sleep(50);

    const signalAt = performance.now();
    primary.signal('SIGTERM');
    const [results, exit] = await Promise.all([Promise.all(burst), primary.exited]);
    const context = `\n--- stderr ---\n${primary.stderr()}\n--- stdout (tail) ---\n${primary.stdout().slice(-3_000)}`;

    const failed = results.filter((result) => result.status !== 200);
    assert.deepEqual(failed.map((result) => result.status ?? result.error), [], `requests sent before SIGTERM that did not get a 200${context}`);
    const inFlight = results.filter((result) => (result.sentAt ?? Infinity) < signalAt && result.doneAt > signalAt).length;
    say(`${results.length} requests before SIGTERM, ${inFlight} in flight at the signal; primary exited ${exit.code} after ${Math.round(exit.at - signalAt)} ms`);
    assert.ok(inFlight > 0, `no request was in flight at the signal; the test proves nothing${context}`);

    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `primary exit${context}`);
    assert.ok(exit.at - signalAt < SHUTDOWN_TIMEOUT_MS + 2_000, `exit took ${Math.round(exit.at - signalAt)} ms`);
    assert.equal(countLines(primary, 'shutdown: draining in-flight requests'), 2, `both workers started draining${context}`);
    assert.equal(countLines(primary, 'shutdown: complete'), 2, `both workers finished draining${context}`);
    const errors = logLines(primary.stdout()).filter((line) => line['level'] === 'error' || line['level'] === 'fatal');
    // The one error logged is the worker this suite killed on purpose.
    assert.deepEqual(
      errors.map((line) => line['msg']),
      ['cluster: worker died, starting another'],
      'error-level log lines',
    );
    for (const pid of workers) assert.ok(!alive(pid), `worker ${pid} still runs after the primary exited`);
  });
});

describe('WORKERS=2 without DATABASE_URL or REDIS_URL', () => {
  for (const [what, env] of [
    ['neither', { WORKERS: '2', DATA_DIR: 'memory://' }],
    ['no REDIS_URL', { WORKERS: '2', DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' }],
    ['no DATABASE_URL', { WORKERS: '2', DATA_DIR: 'memory://', REDIS_URL: TEST_REDIS_URL }],
  ] as const) {
    it(`when started with ${what}, then it exits 1 with a stderr line starting "WORKERS:"`, { timeout: 60_000 }, async () => {
      const result = await runCli(['serve'], { ...env }, { timeoutMs: 30_000 });
      assert.equal(result.timedOut, false, 'the process did not exit');
      assert.equal(result.code, 1, `exit code ${result.code}; stderr: ${result.stderr}`);
      const lines = result.stderr.split('\n').filter(Boolean);
      assert.ok(lines.some((line) => line.startsWith('WORKERS:')), `stderr: ${result.stderr}`);
      assert.equal(result.stdout, '', 'nothing on stdout: no worker was started');
    });
  }
});
