// HTTP benchmark: the real service (compiled, `node dist/src/main.js serve`) against a bare Fastify 5
// route, with autocannon running in separate processes. `npm run bench` builds first.
//
// Scenarios (32 connections):
//   bare route · two diagnostics (the bare route with the service's response headers; the bare
//   route writing as the service does) · GET /api/v1/users/me · GET /api/v1/users/:id (admin), in
//   BENCH_ROUNDS interleaved rounds of BENCH_DURATION seconds, each compared with the bare route's
//   run in the same round (median of the per-round ratios reported); a login flood (16 connections
//   of POST /api/v1/auth/login) measured together with /users/me running at the same time; then,
//   on PostgreSQL + Redis when both answer, four services side by side: GET /users/:id with the
//   cache disabled, from Redis (L1 off), from L1, and with WORKERS=2, in interleaved rounds with
//   the bare route again.
//
// Environment: BENCH_DURATION (3), BENCH_ROUNDS (7), BENCH_WARMUP (2), BENCH_CONNECTIONS (32), BENCH_LOGIN_CONNECTIONS
// (16); BENCH_DATABASE_URL runs the service on PostgreSQL (an empty database, or one whose admin is
// BENCH_ADMIN_EMAIL / BENCH_ADMIN_PASSWORD); otherwise embedded PGlite in a fresh data directory.
// Prints a markdown table and writes it to bench/results/latest.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/ports.js';
import type { LoadSpec, LoadSummary } from './load-runner.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST_MAIN = path.join(ROOT, 'dist/src/main.js');
const RESULTS = path.join(ROOT, 'bench/results/latest.md');

const numberFromEnv = (name: string, fallback: number): number => {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
};
const DURATION = numberFromEnv('BENCH_DURATION', 3);
const ROUNDS = numberFromEnv('BENCH_ROUNDS', 7);
const WARMUP = numberFromEnv('BENCH_WARMUP', 2);
const CONNECTIONS = numberFromEnv('BENCH_CONNECTIONS', 32);
const LOGIN_CONNECTIONS = numberFromEnv('BENCH_LOGIN_CONNECTIONS', 16);
const DATABASE_URL = process.env['BENCH_DATABASE_URL'] || undefined;
const ADMIN_EMAIL = process.env['BENCH_ADMIN_EMAIL'] ?? 'bench-admin@bastion.test';
const ADMIN_PASSWORD = process.env['BENCH_ADMIN_PASSWORD'] ?? 'bench-admin-password-1';

const children: ChildProcess[] = [];
const cleanups: Array<() => Promise<void>> = [];
const log = (message: string) => process.stderr.write(`bench: ${message}\n`);

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  output(): string;
}

async function startProcess(name: string, args: readonly string[], env: NodeJS.ProcessEnv, port: number, healthPath: string): Promise<Started> {
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`${name} exited during start:\n${output}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}${healthPath}`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} did not become healthy within 60 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { child, port, output: () => output };
}

/** One autocannon run in its own process. */
async function load(spec: LoadSpec): Promise<LoadSummary> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/load-runner.ts'), JSON.stringify(spec)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`load runner failed (exit ${code}) for ${spec.url}`);
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as LoadSummary;
}

interface Ratio {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

interface Row {
  readonly scenario: string;
  readonly result: LoadSummary;
  /** For interleaved scenarios: the per-round ratios to the baseline's run in the same round. */
  readonly ratio?: Ratio;
}

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? Number.NaN) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** A process's resident memory now and at its peak, in MB (Linux /proc; undefined elsewhere). */
function memoryOf(pid: number | undefined): { residentMb: number; peakMb: number } | undefined {
  if (pid === undefined) return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN);
    return { residentMb: kib('VmRSS') / 1024, peakMb: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}
const IDLE_SETTLE_MS = 3_000;

const ratioOf = (values: readonly number[]): Ratio => ({ median: medianOf(values), min: Math.min(...values), max: Math.max(...values) });

function table(rows: readonly Row[], bare: LoadSummary): string {
  const lines = [
    '| scenario | req/s | p50 ms | p99 ms | ratio to bare (per-round range) | non-2xx / errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const { scenario, result, ratio } of rows) {
    const shown = ratio
      ? `${fixed(ratio.median, 3)} (${fixed(ratio.min, 2)}–${fixed(ratio.max, 2)})`
      : fixed(result.requestsPerSecond / bare.requestsPerSecond, 3);
    lines.push(
      `| ${scenario} | ${fixed(result.requestsPerSecond, 0)} | ${fixed(result.p50Ms, 1)} | ${fixed(result.p99Ms, 1)} | ` +
        `${shown} | ${result.non2xx} / ${result.errors} |`,
    );
  }
  return lines.join('\n');
}

type Scenario = [name: string, spec: Omit<LoadSpec, 'durationSeconds'>];

const HEADERS_DIAGNOSTIC = 'bare route + the service\'s response headers (diagnostic)';
const COALESCED_DIAGNOSTIC = 'bare route, writes coalesced as the service does (diagnostic)';

interface Interleaved {
  /** One row per scenario: its median round, and its ratio to the baseline (the first scenario). */
  readonly rows: Row[];
  /** The median over rounds of a's req/s over b's in the same round. */
  pairedRatio(a: string, b: string): number;
}

/**
 * Warms every scenario up, then runs them in ROUNDS interleaved rounds (the first scenario is the
 * baseline). This VM's speed drifts by tens of percent within a minute, so a scenario is compared
 * with the baseline's run in the same round, seconds apart, and the ratio reported is the median
 * of those per-round ratios (with their range); req/s and latencies are the median round's.
 */
async function interleaved(scenarios: readonly Scenario[]): Promise<Interleaved> {
  for (const [name, spec] of scenarios) {
    log(`warm-up: ${name}`);
    await load({ ...spec, durationSeconds: WARMUP });
  }
  const samples = new Map<string, LoadSummary[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, spec] of scenarios) {
      log(`round ${round}/${ROUNDS}: ${name}`);
      samples.set(name, [...(samples.get(name) ?? []), await load({ ...spec, durationSeconds: DURATION })]);
    }
  }
  const medianRound = (results: readonly LoadSummary[]): LoadSummary => {
    const sorted = [...results].sort((a, b) => a.requestsPerSecond - b.requestsPerSecond);
    const middle = sorted[Math.floor(sorted.length / 2)];
    if (!middle) throw new Error('no samples');
    return middle;
  };
  const perRound = (a: string, b: string): number[] => {
    const of = samples.get(b) ?? [];
    return (samples.get(a) ?? []).map((sample, index) => sample.requestsPerSecond / (of[index]?.requestsPerSecond ?? Number.NaN));
  };
  const baseline = scenarios[0]?.[0] ?? '';
  return {
    rows: scenarios.map(([name]) => ({
      scenario: name,
      result: medianRound(samples.get(name) ?? []),
      ratio: ratioOf(perRound(name, baseline)),
    })),
    pairedRatio: (a, b) => medianOf(perRound(a, b)),
  };
}

async function main(): Promise<void> {
  if (!existsSync(DIST_MAIN)) throw new Error(`${DIST_MAIN} is missing: run \`npm run build\` (npm run bench does)`);

  const barePort = await freePort();
  const bare = await startProcess(
    'bare server',
    ['--import', 'tsx', path.join(ROOT, 'bench/bare-server.ts')],
    { ...process.env, PORT: String(barePort) },
    barePort,
    '/bare',
  );

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bastion-bench-'));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const servicePort = await freePort();
  const serviceEnv: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    NODE_ENV: 'production',
    PORT: String(servicePort),
    HOST: '127.0.0.1',
    // The default: PGlite in a data directory on disk. (memory:// keeps the whole database in
    // ArrayBuffers of the JS heap; measured, young-generation GCs then take ~15 ms instead of ~1 ms
    // and authenticated reads lose a fifth of their throughput. It is for throwaway databases.)
    DATA_DIR: dataDir,
    ...(DATABASE_URL ? { DATABASE_URL } : {}),
    RATE_LIMIT_MAX: '1000000000',
    // The login flood is one email from one client: the brute-force throttle reserves an attempt per
    // password check in flight (at most LOGIN_MAX_FAILURES), and the flood is there to measure hashing.
    LOGIN_MAX_FAILURES: '1000',
    LOG_LEVEL: 'warn',
    BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
    BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
  };
  const service = await startProcess('service', [DIST_MAIN, 'serve'], serviceEnv, servicePort, '/health');
  await new Promise((resolve) => setTimeout(resolve, IDLE_SETTLE_MS));
  const idleMemory = memoryOf(service.child.pid);
  const api = `http://127.0.0.1:${service.port}`;

  const loginBody = JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  const loginResponse = await fetch(`${api}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: loginBody,
  });
  if (loginResponse.status !== 200) {
    throw new Error(`admin login failed (${loginResponse.status}): ${await loginResponse.text()}`);
  }
  const session = ((await loginResponse.json()) as { data: { accessToken: string; user: { id: string } } }).data;
  const auth = { authorization: `Bearer ${session.accessToken}` };

  const backend = DATABASE_URL ? 'PostgreSQL' : 'PGlite (a data directory on disk, the default)';
  log(`service on ${backend}; ${CONNECTIONS} connections, ${WARMUP} s warm-up + ${DURATION} s per scenario`);

  // The bare route and the service's routes are measured in interleaved rounds, each compared with
  // the bare route's run of the same round: this VM's speed drifts by tens of percent within a
  // minute, and a ratio of two runs minutes apart would mostly measure that drift.
  const scenarios: Scenario[] = [
    ['bare Fastify route (baseline)', { url: `http://127.0.0.1:${bare.port}/bare`, connections: CONNECTIONS }],
    [HEADERS_DIAGNOSTIC, { url: `http://127.0.0.1:${bare.port}/bare-headers`, connections: CONNECTIONS }],
    [COALESCED_DIAGNOSTIC, { url: `http://127.0.0.1:${bare.port}/bare-coalesced`, connections: CONNECTIONS }],
    ['GET /api/v1/users/me', { url: `${api}/api/v1/users/me`, connections: CONNECTIONS, headers: auth }],
    // The same read through GraphQL (issue 11: at least 60% of REST's req/s), every field of REST's body.
    [
      'POST /graphql { me }',
      {
        url: `${api}/graphql`,
        connections: CONNECTIONS,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ me { id email name role createdAt updatedAt } }' }),
      },
    ],
    ['GET /api/v1/users/:id (admin)', { url: `${api}/api/v1/users/${session.user.id}`, connections: CONNECTIONS, headers: auth }],
  ];
  const { rows } = await interleaved(scenarios);
  const bareResult = rows[0]?.result;
  if (!bareResult) throw new Error('no baseline');

  log(`login flood (${LOGIN_CONNECTIONS} connections) + GET /users/me (${CONNECTIONS} connections) at the same time`);
  const loginSpec: LoadSpec = {
    url: `${api}/api/v1/auth/login`,
    connections: LOGIN_CONNECTIONS,
    durationSeconds: DURATION,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: loginBody,
  };
  const meSpec: LoadSpec = { url: `${api}/api/v1/users/me`, connections: CONNECTIONS, durationSeconds: DURATION, headers: auth };
  await Promise.all([load({ ...loginSpec, durationSeconds: WARMUP }), load({ ...meSpec, durationSeconds: WARMUP })]);
  const [flood, meDuringFlood] = await Promise.all([load(loginSpec), load(meSpec)]);
  rows.push({ scenario: `POST /api/v1/auth/login flood (${LOGIN_CONNECTIONS} conns)`, result: flood });
  rows.push({ scenario: `GET /api/v1/users/me during the login flood (${CONNECTIONS} conns)`, result: meDuringFlood });

  const loadedMemory = memoryOf(service.child.pid);

  // Scale-out: the same read through each cache tier, and one process against two, on PostgreSQL
  // and Redis (skipped with a line when either is absent).
  service.child.kill('SIGTERM');
  const scaleRows = await scaleScenarios(scenarios[0]);

  const markdown = [
    '# Bastion HTTP benchmark',
    '',
    `${new Date().toISOString()} · Node ${process.version} · ${os.availableParallelism()} CPUs (${os.cpus()[0]?.model ?? 'unknown'}) · ` +
      `service on ${backend} · autocannon ${CONNECTIONS} connections, ${WARMUP} s warm-up, then ${DURATION} s per measurement, ` +
      'load generated from separate processes on the same machine.',
    '',
    table(rows, bareResult),
    '',
    `The first five rows ran in ${ROUNDS} interleaved rounds of ${DURATION} s. "Ratio to bare" is the median of the ` +
      'per-round ratios (req/s over the bare route\'s req/s in the same round), with their range; req/s, p50 and p99 are ' +
      'the median round\'s. The two login-flood rows ran once, after the rounds; their ratio is to the median bare round.',
    '',
    'The two diagnostic rows are the bare route with one thing of the service\'s added. ' +
      `"${HEADERS_DIAGNOSTIC}": the ten API security headers (src/transports/http/security-headers.ts), X-Request-Id and three RateLimit-*, what they cost before any of ` +
      `the service's own work. "${COALESCED_DIAGNOSTIC}": its response written in the check phase of the event loop ` +
      '(coalesceWrite, src/transports/http/write-coalescing.ts), what that technique gives a route that does nothing else.',
    '',
    `Service memory (resident): ${fixed(idleMemory?.residentMb ?? Number.NaN, 0)} MB idle ${IDLE_SETTLE_MS / 1000} s after its first start ` +
      `on a new data directory; ${fixed(loadedMemory?.residentMb ?? Number.NaN, 0)} MB after the rounds and the login flood, ` +
      `${fixed(loadedMemory?.peakMb ?? Number.NaN, 0)} MB at its peak.`,
    '',
    'p50/p99 are autocannon latency percentiles. ' +
      'Logins are deliberately slow (argon2id, 19 MiB, t=2, in PASSWORD_HASH_CONCURRENCY worker threads at a lowered OS priority).',
    '',
    ...(scaleRows
      ? [
          '## Cache tiers and processes (GET /api/v1/users/:id as admin, service on PostgreSQL + Redis)',
          '',
          table(scaleRows.rows, scaleRows.rows[0]?.result ?? bareResult),
          '',
          `The bare route and the four services (all running, on one database) ran in ${ROUNDS} interleaved rounds of ${DURATION} s; ` +
            'ratios are medians of per-round ratios, as above.',
          '',
          `L1 hit vs cache disabled: ${fixed(scaleRows.l1VsDisabled, 2)}×; Redis hit vs cache disabled: ${fixed(scaleRows.redisVsDisabled, 2)}×; ` +
            `2 worker processes vs 1: ${fixed(scaleRows.twoVsOne, 2)}×.`,
          '',
        ]
      : ['Cache-tier and 2-process scenarios skipped: PostgreSQL or Redis not reachable.', '']),
  ].join('\n');
  process.stdout.write(`\n${markdown}`);
  await mkdir(path.dirname(RESULTS), { recursive: true });
  await writeFile(RESULTS, markdown);
  log(`written to ${path.relative(ROOT, RESULTS)}`);

  const serviceErrors = service.output().split('\n').filter((line) => /"level":(50|60)|"level":"(error|fatal)"/.test(line));
  if (serviceErrors.length > 0) log(`the service logged ${serviceErrors.length} error lines, e.g.:\n${serviceErrors.slice(0, 3).join('\n')}`);
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

async function scaleScenarios(baseline: Scenario | undefined): Promise<
  { rows: Row[]; l1VsDisabled: number; redisVsDisabled: number; twoVsOne: number } | undefined
> {
  const postgresUrl = process.env['BENCH_SCALE_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
  const redisUrl = process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
  if (!baseline) throw new Error('no baseline');
  if (!(await reachable(5432)) || !(await reachable(6379))) {
    log('PostgreSQL or Redis not reachable: skipping the cache-tier and 2-process scenarios');
    return undefined;
  }
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ connectionString: postgresUrl });
  await admin.connect();
  const name = 'bastion_bench_http';
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  const url = new URL(postgresUrl);
  url.pathname = `/${name}`;
  const variants: Array<[key: string, scenario: string, env: Record<string, string>]> = [
    ['disabled', 'cache disabled (every read from PostgreSQL)', { CACHE_ENABLED: 'false' }],
    ['redis', 'Redis hit (L1 off: CACHE_L1_TTL_MS=0)', { REDIS_URL: redisUrl, CACHE_L1_TTL_MS: '0' }],
    ['l1', 'L1 hit (in-process, Redis behind it)', { REDIS_URL: redisUrl }],
    ['two', 'L1 hit, WORKERS=2 (two processes, one port)', { REDIS_URL: redisUrl, WORKERS: '2' }],
  ];
  const started: Started[] = [];
  try {
    const scenarios: Scenario[] = [baseline];
    // One after another: the first applies the migrations and creates the admin.
    for (const [, scenario, env] of variants) {
      const port = await freePort();
      started.push(
        await startProcess(
          scenario,
          [DIST_MAIN, 'serve'],
          {
            PATH: process.env['PATH'],
            HOME: process.env['HOME'],
            NODE_ENV: 'production',
            PORT: String(port),
            HOST: '127.0.0.1',
            DATABASE_URL: url.toString(),
            RATE_LIMIT_MAX: '1000000000',
            LOG_LEVEL: 'warn',
            BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
            BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
            ...env,
          },
          port,
          '/health/ready',
        ),
      );
      const base = `http://127.0.0.1:${port}`;
      const login = await fetch(`${base}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
      });
      const session = ((await login.json()) as { data: { accessToken: string; user: { id: string } } }).data;
      scenarios.push([
        scenario,
        { url: `${base}/api/v1/users/${session.user.id}`, connections: CONNECTIONS, headers: { authorization: `Bearer ${session.accessToken}` } },
      ]);
    }
    const { rows, pairedRatio } = await interleaved(scenarios);
    const named = (key: string) => variants.find(([candidate]) => candidate === key)?.[1] ?? key;
    return {
      rows,
      l1VsDisabled: pairedRatio(named('l1'), named('disabled')),
      redisVsDisabled: pairedRatio(named('redis'), named('disabled')),
      twoVsOne: pairedRatio(named('two'), named('l1')),
    };
  } finally {
    await Promise.all(
      started.map(async ({ child }) => {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }),
    );
    await admin.query(`drop database if exists ${name} with (force)`).catch(() => undefined);
    await admin.end();
  }
}

async function stopAll(): Promise<void> {
  await Promise.all(
    children
      .filter((child) => child.exitCode === null && child.signalCode === null)
      .map(async (child) => {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }),
  );
}

try {
  await main();
} catch (error) {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
} finally {
  await stopAll();
  for (const cleanup of cleanups) await cleanup();
}
