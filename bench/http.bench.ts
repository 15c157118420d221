// HTTP benchmark: the real service (compiled, `node dist/src/main.js serve`, with GRPC_PORT so that
// gRPC is served too) against a bare Fastify 5 route, with the load generated in separate processes:
// autocannon (bench/load-runner.ts) for HTTP/1.1, bench/grpc-load.ts (raw node:http2, hand-framed
// gRPC) for gRPC unary calls, which autocannon cannot make. `npm run bench` builds first.
//
// Scenarios (32 connections; for gRPC, 32 calls in flight):
//   bare route · two diagnostics (the bare route with the service's response headers; the bare
//   route writing as the service does) · `me` through the three protocols: GET /api/v1/users/me,
//   POST /graphql `{ me { … } }`, gRPC bastion.v1.UserService/GetMe · GET /api/v1/users/:id (admin),
//   in BENCH_ROUNDS interleaved rounds of BENCH_DURATION seconds (each round starting one scenario
//   further on), each compared with the bare route's run in the same round (median of the per-round
//   ratios reported), and GraphQL's and gRPC's `me` also with REST's run in the same round against
//   issue 11's targets (GraphQL ≥ 0.6 × REST, gRPC ≥ 1.0 × REST); a login flood (16 connections
//   of POST /api/v1/auth/login) measured together with /users/me running at the same time; a transfer
//   through each protocol (POST /api/v1/transfers, the GraphQL `transfer` mutation, gRPC
//   LedgerService/CreateTransfer: 1 cent between two accounts of the bench user, funded first, a new
//   idempotency key per request) in interleaved rounds with REST as the baseline, against issue 11's
//   target (within 20 % of REST), each run checked against the credited account's balance; then, on
//   PostgreSQL + Redis when both answer, four services side by side: GET /users/:id with the
//   cache disabled, from Redis (L1 off), from L1, and with WORKERS=2, in interleaved rounds with
//   the bare route again. Every run also records the CPU the load generator and the server under
//   test used (/proc/<pid>/stat), so that a loader that would be the bottleneck shows.
//   GET /api/v1/users/me also runs with an ES256 and an RS256 token beside the EdDSA one (issue 13:
//   the verified-token cache keeps the read path's speed for every ACCESS_TOKEN_ALG): the service is
//   first started on the same data with each of those, an admin logs in, and it stops; the service
//   measured (EdDSA) has retired their keys, which verify until the tokens expire.
//
// Environment: BENCH_DURATION (3), BENCH_ROUNDS (7), BENCH_WARMUP (2), BENCH_CONNECTIONS (32), BENCH_LOGIN_CONNECTIONS
// (16), BENCH_GRPC_STREAMS (1: calls in flight per HTTP/2 session; the sessions carry BENCH_CONNECTIONS
// calls in all); BENCH_DATABASE_URL runs the service, transfers included, on PostgreSQL (an empty
// database, or one whose admin is BENCH_ADMIN_EMAIL / BENCH_ADMIN_PASSWORD); otherwise embedded PGlite
// in a fresh data directory.
// Prints a markdown table and writes it to bench/results/latest.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, toBinary } from '@bufbuild/protobuf';
import { freePort } from '../test/helpers/ports.js';
import { CreateTransferRequestSchema, LedgerService } from '../src/transports/grpc/gen/bastion/v1/ledger_service_pb.js';
import { UserService } from '../src/transports/grpc/gen/bastion/v1/user_service_pb.js';
import { available, cLoad, type CLoadSpec } from './c-load.js';
import { cpuSecondsOf } from './proc-stat.js';
import type { GrpcLoadSpec } from './grpc-load.js';
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
/** gRPC: calls in flight per HTTP/2 session; the sessions carry BENCH_CONNECTIONS calls in all, as REST's connections. */
const GRPC_STREAMS = numberFromEnv('BENCH_GRPC_STREAMS', 1);
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

type AnyLoadSpec = LoadSpec | GrpcLoadSpec | CLoadSpec;
const isGrpc = (spec: AnyLoadSpec | Omit<AnyLoadSpec, 'durationSeconds'>): spec is GrpcLoadSpec => 'origin' in spec;
const targetOf = (spec: AnyLoadSpec): string => (isGrpc(spec) ? `${spec.origin}${spec.path}` : spec.url);

/**
 * One load in its own process: autocannon (bench/load-runner.ts), gRPC unary calls
 * (bench/grpc-load.ts), or a C load generator (wrk, h2load: bench/c-load.ts).
 */
async function load(spec: AnyLoadSpec): Promise<LoadSummary> {
  if ('tool' in spec) return cLoad(spec);
  const runner = isGrpc(spec) ? 'bench/grpc-load.ts' : 'bench/load-runner.ts';
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, runner), JSON.stringify(spec)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`load runner failed (exit ${code}) for ${targetOf(spec)}`);
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as LoadSummary;
}

interface Ratio {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** A load's summary, with the CPU time the server under test spent meanwhile (when known). */
type Measured = LoadSummary & { readonly serverCpuSeconds?: number };

interface Row {
  readonly scenario: string;
  readonly result: Measured;
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

const shownRatio = (ratio: Ratio): string => `${fixed(ratio.median, 3)} (${fixed(ratio.min, 2)}–${fixed(ratio.max, 2)})`;

/** CPU cores the load generator and the server used during a load (CPU seconds per second of load). */
const cpuCores = (result: Measured): string =>
  `${fixed(result.clientCpuSeconds / result.durationSeconds, 2)} / ` +
  (result.serverCpuSeconds === undefined ? '–' : fixed(result.serverCpuSeconds / result.durationSeconds, 2));

function table(rows: readonly Row[], bare: LoadSummary, { ratioTo = 'bare', unit = 'req/s' } = {}): string {
  const lines = [
    `| scenario | ${unit} | p50 ms | p99 ms | ratio to ${ratioTo} (per-round range) | non-2xx / errors | CPU cores: loader / server |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const { scenario, result, ratio } of rows) {
    const shown = ratio ? shownRatio(ratio) : fixed(result.requestsPerSecond / bare.requestsPerSecond, 3);
    lines.push(
      `| ${scenario} | ${fixed(result.requestsPerSecond, 0)} | ${fixed(result.p50Ms, 1)} | ${fixed(result.p99Ms, 1)} | ` +
        `${shown} | ${result.non2xx} / ${result.errors} | ${cpuCores(result)} |`,
    );
  }
  return lines.join('\n');
}

interface ScenarioOptions {
  /** The server under test: its CPU time is read around every run. */
  readonly serverPid?: number | undefined;
  /** Around every run of the scenario (warm-up included), e.g. to check what it did. */
  readonly around?: (run: () => Promise<Measured>) => Promise<Measured>;
}

type Scenario = [
  name: string,
  spec: Omit<LoadSpec, 'durationSeconds'> | Omit<GrpcLoadSpec, 'durationSeconds'> | Omit<CLoadSpec, 'durationSeconds'>,
  options?: ScenarioOptions,
];

const HEADERS_DIAGNOSTIC = 'bare route + the service\'s response headers (diagnostic)';
const REST_ME = 'GET /api/v1/users/me';
const REST_ME_API_KEY = 'GET /api/v1/users/me with an API key';
const OTHER_ACCESS_TOKEN_ALGS = ['ES256', 'RS256'] as const;
const restMeWith = (alg: (typeof OTHER_ACCESS_TOKEN_ALGS)[number]) => `GET /api/v1/users/me, ${alg} token`;

/** An admin's access token from the service at `api`. */
async function adminAccessToken(api: string): Promise<string> {
  const response = await fetch(`${api}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
  });
  if (response.status !== 200) throw new Error(`admin login failed (${response.status}): ${await response.text()}`);
  return ((await response.json()) as { data: { accessToken: string } }).data.accessToken;
}
const GRAPHQL_ME = 'POST /graphql { me }';
const GRPC_ME = 'gRPC UserService/GetMe (unary, h2c)';
const BARE_GRPC_DIAGNOSTIC = 'bare @grpc/grpc-js server, GetMe answering a fixed user, h2load (diagnostic)';
/** The `me` pair from C load generators (wrk for REST, h2load for gRPC): the protocols on equal terms. */
const REST_ME_WRK = 'GET /api/v1/users/me, wrk';
const GRPC_ME_H2LOAD = 'gRPC UserService/GetMe (unary, h2c), h2load';
/** Both C loaders installed (Debian: wrk, nghttp2-client); their rows are left out otherwise. */
const C_LOADERS = available('wrk') && available('h2load');
const GET_ME_PATH = `/${UserService.typeName}/${UserService.method.getMe.name}`;
/** h2load's calls in flight: as many as REST's connections, over a few HTTP/2 sessions (as gRPC clients multiplex). */
const H2LOAD_SESSIONS = 4;
const H2LOAD_STREAMS = Math.max(1, Math.round(CONNECTIONS / H2LOAD_SESSIONS));
/** An empty protobuf message, gRPC-framed (no compression, length 0): GetMe's request, for h2load's -d. */
const EMPTY_GRPC_FRAME = path.join(os.tmpdir(), `bastion-bench-empty-${process.pid}.grpc`);

const h2loadCalls = (url: string, headers: Record<string, string>): Omit<CLoadSpec, 'durationSeconds'> => ({
  tool: 'h2load',
  url,
  connections: H2LOAD_SESSIONS,
  streamsPerConnection: H2LOAD_STREAMS,
  headers: { 'content-type': 'application/grpc', te: 'trailers', ...headers },
  bodyFile: EMPTY_GRPC_FRAME,
});

/** One unary call's grpc-status (h2load counts only HTTP 2xx): fails the bench unless it is 0. */
async function probeGrpcStatus(url: string, headers: Record<string, string>): Promise<void> {
  const target = new URL(url);
  const session = http2.connect(target.origin);
  try {
    const stream = session.request({ ':method': 'POST', ':path': target.pathname, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const status = new Promise<string | undefined>((resolve, reject) => {
      stream.on('response', (responseHeaders) => {
        if (responseHeaders['grpc-status'] !== undefined) resolve(String(responseHeaders['grpc-status']));
      });
      stream.on('trailers', (trailers) => resolve(trailers['grpc-status'] === undefined ? undefined : String(trailers['grpc-status'])));
      stream.on('error', reject);
    });
    stream.resume();
    stream.end(Buffer.alloc(5));
    const code = await status;
    if (code !== '0') throw new Error(`${url}: grpc-status ${code}, not 0: the h2load rows would count failures as successes`);
  } finally {
    session.close();
  }
}
const BARE_MERCURIUS_DIAGNOSTIC = 'bare Mercurius route, me answering a fixed user (diagnostic)';
const REST_TRANSFER = 'POST /api/v1/transfers';
const GRAPHQL_TRANSFER = 'POST /graphql mutation transfer';
const GRPC_TRANSFER = 'gRPC LedgerService/CreateTransfer (unary, h2c)';

/** An issue-11 target: a protocol's row, its per-round ratio to REST's, and whether the ratio meets it. */
interface Target {
  readonly row: Row | undefined;
  readonly ratio: Ratio;
  readonly target: string;
  readonly met: (ratio: number) => boolean;
}

function targetTable(targets: readonly Target[], unit: string): string {
  const lines = [
    `| protocol | ${unit} | p50 ms | p99 ms | ratio to REST (per-round range) | target | met | CPU cores: loader / server |`,
    '| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |',
  ];
  for (const { row, ratio, target, met } of targets) {
    if (!row) continue;
    const { result } = row;
    lines.push(
      `| ${row.scenario} | ${fixed(result.requestsPerSecond, 0)} | ${fixed(result.p50Ms, 1)} | ${fixed(result.p99Ms, 1)} | ` +
        `${shownRatio(ratio)} | ${target} | ${met(ratio.median) ? 'yes' : '**no**'} | ${cpuCores(result)} |`,
    );
  }
  return lines.join('\n');
}

const logTargets = (targets: readonly Target[]) => {
  for (const { row, ratio, target, met } of targets) {
    log(`${row?.scenario ?? '?'}: ${fixed(ratio.median, 3)} of REST (target ${target}): ${met(ratio.median) ? 'met' : 'NOT met'}`);
  }
};

/** One GraphQL request through fetch: HTTP 200 and no `errors` (the load counts any 200 as a success). */
async function probeGraphql(api: string, auth: Record<string, string>, body: string): Promise<void> {
  const response = await fetch(`${api}/graphql`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body });
  const text = await response.text();
  if (response.status !== 200 || 'errors' in (JSON.parse(text) as object)) throw new Error(`GraphQL probe failed (${response.status}): ${text}`);
}
const COALESCED_DIAGNOSTIC = 'bare route, writes coalesced as the service does (diagnostic)';

interface Interleaved {
  /** One row per scenario: its median round, and its ratio to the baseline (the first scenario). */
  readonly rows: Row[];
  /** The median over rounds of a's req/s over b's in the same round. */
  pairedRatio(a: string, b: string): number;
  /** The same, with the range of the per-round ratios. */
  paired(a: string, b: string): Ratio;
}

async function measure([, spec, options]: Scenario, durationSeconds: number): Promise<Measured> {
  const run = async (): Promise<Measured> => {
    const before = cpuSecondsOf(options?.serverPid);
    const result = await load({ ...spec, durationSeconds } as AnyLoadSpec);
    const after = cpuSecondsOf(options?.serverPid);
    return before === undefined || after === undefined ? result : { ...result, serverCpuSeconds: after - before };
  };
  return options?.around ? options.around(run) : run();
}

/**
 * Warms every scenario up, then runs them in ROUNDS interleaved rounds (the first scenario is the
 * baseline; each round starts one scenario further on, so that none always runs first or right
 * after the same one). This VM's speed drifts by tens of percent within a minute, so a scenario is
 * compared with the baseline's run in the same round, seconds apart, and the ratio reported is the
 * median of those per-round ratios (with their range); req/s and latencies are the median round's.
 */
async function interleaved(scenarios: readonly Scenario[]): Promise<Interleaved> {
  for (const scenario of scenarios) {
    log(`warm-up: ${scenario[0]}`);
    const warm = await measure(scenario, WARMUP);
    if (warm.ok2xx === 0) throw new Error(`${scenario[0]}: no successful answer in the warm-up (${JSON.stringify(warm)})`);
  }
  const samples = new Map<string, Measured[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (let index = 0; index < scenarios.length; index++) {
      const scenario = scenarios[(index + round - 1) % scenarios.length];
      if (!scenario) continue;
      log(`round ${round}/${ROUNDS}: ${scenario[0]}`);
      samples.set(scenario[0], [...(samples.get(scenario[0]) ?? []), await measure(scenario, DURATION)]);
    }
  }
  const medianRound = (results: readonly Measured[]): Measured => {
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
    paired: (a, b) => ratioOf(perRound(a, b)),
  };
}

async function main(): Promise<void> {
  if (!existsSync(DIST_MAIN)) throw new Error(`${DIST_MAIN} is missing: run \`npm run build\` (npm run bench does)`);

  const barePort = await freePort();
  const bareGrpcPort = await freePort();
  const bare = await startProcess(
    'bare server',
    ['--import', 'tsx', path.join(ROOT, 'bench/bare-server.ts')],
    { ...process.env, PORT: String(barePort), BARE_GRPC_PORT: String(bareGrpcPort) },
    barePort,
    '/bare',
  );
  for (let attempt = 0; !(await reachable(bareGrpcPort)); attempt++) {
    if (attempt > 100) throw new Error('the bare gRPC server did not listen');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bastion-bench-'));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const servicePort = await freePort();
  const grpcPort = await freePort();
  const serviceEnv: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    NODE_ENV: 'production',
    PORT: String(servicePort),
    // gRPC (h2c) on its own listener, over the same services.
    GRPC_PORT: String(grpcPort),
    HOST: '127.0.0.1',
    // The default: PGlite in a data directory on disk. (memory:// keeps the whole database in
    // ArrayBuffers of the JS heap; measured, young-generation GCs then take ~15 ms instead of ~1 ms
    // and authenticated reads lose a fifth of their throughput. It is for throwaway databases.)
    DATA_DIR: dataDir,
    ...(DATABASE_URL ? { DATABASE_URL } : {}),
    RATE_LIMIT_MAX: '1000000000',
    API_KEY_RATE_LIMIT_MAX: '1000000000',
    // The login flood is one email from one client: the brute-force throttle reserves an attempt per
    // password check in flight (at most LOGIN_MAX_FAILURES), and the flood is there to measure hashing.
    LOGIN_MAX_FAILURES: '1000',
    LOG_LEVEL: 'warn',
    BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
    BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
  };
  // A token of each other ACCESS_TOKEN_ALG: the service started on the same data with it, an admin
  // login, stopped. The service measured below starts with EdDSA and retires those keys, which keep
  // verifying for the token's lifetime, so `me` runs with each algorithm's token on one service.
  const otherAlgTokens = new Map<string, string>();
  for (const alg of OTHER_ACCESS_TOKEN_ALGS) {
    const port = await freePort();
    const env = { ...serviceEnv, PORT: String(port), GRPC_PORT: String(await freePort()), ACCESS_TOKEN_ALG: alg };
    const started = await startProcess(`service (ACCESS_TOKEN_ALG=${alg})`, [DIST_MAIN, 'serve'], env, port, '/health');
    otherAlgTokens.set(alg, await adminAccessToken(`http://127.0.0.1:${port}`));
    const exited = once(started.child, 'exit');
    started.child.kill('SIGTERM');
    await exited;
  }
  const service = await startProcess('service', [DIST_MAIN, 'serve'], serviceEnv, servicePort, '/health');
  for (const deadline = Date.now() + 30_000; !(await reachable(grpcPort)); ) {
    if (Date.now() > deadline) throw new Error(`the service's gRPC listener (GRPC_PORT=${grpcPort}) did not open:\n${service.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
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
  // An API key of the same admin (users:read covers `me`): the same read, authenticated by key.
  const keyResponse = await fetch(`${api}/api/v1/api-keys`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench', scopes: ['users:read'] }),
  });
  if (keyResponse.status !== 201) throw new Error(`creating an API key failed (${keyResponse.status}): ${await keyResponse.text()}`);
  const apiKeyAuth = { authorization: `Bearer ${((await keyResponse.json()) as { data: { secret: string } }).data.secret}` };
  const grpcOrigin = `http://127.0.0.1:${grpcPort}`;
  const grpcCalls = (path: string, message?: Uint8Array, uniqueKeyField?: number): Omit<GrpcLoadSpec, 'durationSeconds'> => ({
    origin: grpcOrigin,
    path,
    sessions: Math.ceil(CONNECTIONS / GRPC_STREAMS),
    streamsPerSession: GRPC_STREAMS,
    metadata: auth,
    ...(message ? { messageBase64: Buffer.from(message).toString('base64') } : {}),
    ...(uniqueKeyField !== undefined ? { uniqueKeyField } : {}),
  });
  const onService: ScenarioOptions = { serverPid: service.child.pid };
  if (C_LOADERS) {
    await writeFile(EMPTY_GRPC_FRAME, Buffer.alloc(5));
    cleanups.push(() => rm(EMPTY_GRPC_FRAME, { force: true }));
    await probeGrpcStatus(`${grpcOrigin}${GET_ME_PATH}`, auth);
    await probeGrpcStatus(`http://127.0.0.1:${bareGrpcPort}${GET_ME_PATH}`, {});
  } else {
    log('wrk or h2load is not installed (Debian packages wrk, nghttp2-client): the C-loader rows are left out');
  }
  const onBare: ScenarioOptions = { serverPid: bare.child.pid };

  const backend = DATABASE_URL ? 'PostgreSQL' : 'PGlite (a data directory on disk, the default)';
  log(`service on ${backend}; ${CONNECTIONS} connections, ${WARMUP} s warm-up + ${DURATION} s per scenario`);

  // The bare route and the service's routes are measured in interleaved rounds, each compared with
  // the bare route's run of the same round: this VM's speed drifts by tens of percent within a
  // minute, and a ratio of two runs minutes apart would mostly measure that drift.
  const graphqlMe = JSON.stringify({ query: '{ me { id email name role createdAt updatedAt } }' });
  await probeGraphql(api, auth, graphqlMe);
  const scenarios: Scenario[] = [
    ['bare Fastify route (baseline)', { url: `http://127.0.0.1:${bare.port}/bare`, connections: CONNECTIONS }, onBare],
    [HEADERS_DIAGNOSTIC, { url: `http://127.0.0.1:${bare.port}/bare-headers`, connections: CONNECTIONS }, onBare],
    [COALESCED_DIAGNOSTIC, { url: `http://127.0.0.1:${bare.port}/bare-coalesced`, connections: CONNECTIONS }, onBare],
    [REST_ME, { url: `${api}/api/v1/users/me`, connections: CONNECTIONS, headers: auth }, onService],
    ...OTHER_ACCESS_TOKEN_ALGS.map((alg): Scenario => [
      restMeWith(alg),
      { url: `${api}/api/v1/users/me`, connections: CONNECTIONS, headers: { authorization: `Bearer ${otherAlgTokens.get(alg) ?? ''}` } },
      onService,
    ]),
    // The same read authenticated by an API key (issue 13: within 10 % of the access token).
    [REST_ME_API_KEY, { url: `${api}/api/v1/users/me`, connections: CONNECTIONS, headers: apiKeyAuth }, onService],
    // The same read through GraphQL (issue 11: at least 60% of REST's req/s), every field of REST's body.
    [
      GRAPHQL_ME,
      {
        url: `${api}/graphql`,
        connections: CONNECTIONS,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: graphqlMe,
      },
      onService,
    ],
    // And through gRPC (issue 11: at least REST's req/s): as many calls in flight as REST's connections.
    [GRPC_ME, grpcCalls(`/${UserService.typeName}/${UserService.method.getMe.name}`), onService],
    [
      BARE_MERCURIUS_DIAGNOSTIC,
      {
        url: `http://127.0.0.1:${bare.port}/bare-graphql`,
        connections: CONNECTIONS,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: graphqlMe,
      },
      onBare,
    ],
    ...(C_LOADERS
      ? ([
          [REST_ME_WRK, { tool: 'wrk', url: `${api}/api/v1/users/me`, connections: CONNECTIONS, headers: auth }, onService],
          [GRPC_ME_H2LOAD, h2loadCalls(`${grpcOrigin}${GET_ME_PATH}`, auth), onService],
          [BARE_GRPC_DIAGNOSTIC, h2loadCalls(`http://127.0.0.1:${bareGrpcPort}${GET_ME_PATH}`, {}), onBare],
        ] satisfies Scenario[])
      : []),
    ['GET /api/v1/users/:id (admin)', { url: `${api}/api/v1/users/${session.user.id}`, connections: CONNECTIONS, headers: auth }, onService],
  ];
  const meRounds = await interleaved(scenarios);
  const { rows } = meRounds;
  const bareResult = rows[0]?.result;
  if (!bareResult) throw new Error('no baseline');
  const rowOf = (from: readonly Row[], name: string): Row | undefined => from.find((row) => row.scenario === name);
  const meTargets: Target[] = [
    { row: rowOf(rows, GRAPHQL_ME), ratio: meRounds.paired(GRAPHQL_ME, REST_ME), target: '≥ 0.60', met: (ratio) => ratio >= 0.6 },
    { row: rowOf(rows, GRPC_ME), ratio: meRounds.paired(GRPC_ME, REST_ME), target: '≥ 1.00', met: (ratio) => ratio >= 1 },
    ...(C_LOADERS
      ? [{ row: rowOf(rows, GRPC_ME_H2LOAD), ratio: meRounds.paired(GRPC_ME_H2LOAD, REST_ME_WRK), target: '≥ 1.00', met: (ratio: number) => ratio >= 1 }]
      : []),
  ];
  // Issue 13: once verified, a token is answered from the cache, whatever its algorithm.
  const algTargets: Target[] = OTHER_ACCESS_TOKEN_ALGS.map((alg) => ({
    row: rowOf(rows, restMeWith(alg)),
    ratio: meRounds.paired(restMeWith(alg), REST_ME),
    target: '≥ 0.90',
    met: (ratio) => ratio >= 0.9,
  }));

  const apiKeyTargets: Target[] = [
    {
      row: rowOf(rows, REST_ME_API_KEY),
      ratio: meRounds.paired(REST_ME_API_KEY, REST_ME),
      target: 'API key within 10 % of access token (≥ 0.90)',
      met: (ratio) => ratio >= 0.9,
    },
  ];

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

  // A transfer through each protocol, between two accounts of the bench user funded for the whole run.
  const transfers = await transferRounds(api, auth, grpcCalls, onService);
  const afterTransfersMemory = memoryOf(service.child.pid);

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
    `The first ${scenarios.length} rows ran in ${ROUNDS} interleaved rounds of ${DURATION} s (each round starting one scenario further on). ` +
      '"Ratio to bare" is the median of the ' +
      'per-round ratios (req/s over the bare route\'s req/s in the same round), with their range; req/s, p50 and p99 are ' +
      'the median round\'s. The two login-flood rows ran once, after the rounds; their ratio is to the median bare round. ' +
      '"CPU cores" is the CPU time the load generator\'s process and the server under test (all its threads) spent during ' +
      'the run, per second of it (/proc/<pid>/stat; the bare server for the bare rows; "–" where not measured).',
    '',
    'The two diagnostic rows are the bare route with one thing of the service\'s added. ' +
      `"${HEADERS_DIAGNOSTIC}": the ten API security headers (src/transports/http/security-headers.ts), X-Request-Id and three RateLimit-*, what they cost before any of ` +
      `the service's own work. "${COALESCED_DIAGNOSTIC}": its response written in the check phase of the event loop ` +
      '(coalesceWrite, src/transports/http/write-coalescing.ts), what that technique gives a route that does nothing else.',
    '',
    `Service memory (resident): ${fixed(idleMemory?.residentMb ?? Number.NaN, 0)} MB idle ${IDLE_SETTLE_MS / 1000} s after its first start ` +
      `on a new data directory; ${fixed(loadedMemory?.residentMb ?? Number.NaN, 0)} MB after the rounds and the login flood, ` +
      `${fixed(loadedMemory?.peakMb ?? Number.NaN, 0)} MB at its peak; after the transfers ${fixed(afterTransfersMemory?.residentMb ?? Number.NaN, 0)} MB, ` +
      `${fixed(afterTransfersMemory?.peakMb ?? Number.NaN, 0)} MB at its peak.`,
    '',
    'p50/p99 are autocannon latency percentiles (whole milliseconds), and for gRPC bench/grpc-load.ts\'s (per call, exact). ' +
      'Logins are deliberately slow (argon2id, 19 MiB, t=2, in PASSWORD_HASH_CONCURRENCY worker threads at a lowered OS priority).',
    '',
    '## GraphQL and gRPC against REST (issue 11)',
    '',
    '### `me`',
    '',
    targetTable(meTargets, 'req/s'),
    '',
    `The three \`me\` rows of the first table, each as the median of its per-round ratios to REST's run in the same round. ` +
      'GraphQL: `{ me { id email name role createdAt updatedAt } }` (every field of REST\'s body) as a JSON POST. ' +
      `gRPC: bench/grpc-load.ts in its own process, raw node:http2, ${Math.ceil(CONNECTIONS / GRPC_STREAMS)} h2c sessions × ` +
      `${GRPC_STREAMS} call(s) in flight (${Math.ceil(CONNECTIONS / GRPC_STREAMS) * GRPC_STREAMS} calls in all, as REST's ${CONNECTIONS} connections), ` +
      'the request framed once, the answer counted by its grpc-status and not decoded. ' +
      (C_LOADERS
        ? `"${GRPC_ME_H2LOAD}" against "${REST_ME_WRK}": the same two reads from C load generators (h2load -c ${H2LOAD_SESSIONS} -m ${H2LOAD_STREAMS}, ` +
          `wrk -c ${CONNECTIONS}, one thread each), which cost a few percent of a core whatever the protocol, where the Node loaders ` +
          'cost the gRPC row more than REST\'s (see the CPU column); h2load counts HTTP 2xx, so the service\'s and the bare ' +
          'server\'s grpc-status is checked on a call before the rounds; its latency column is the mean (h2load gives no percentiles). ' +
          `"${BARE_GRPC_DIAGNOSTIC}": the same h2load calls to a bare @grpc/grpc-js server (through the service's adapter) whose GetMe ` +
          'returns a constant (bench/bare-server.ts): the most gRPC through grpc-js gives on this machine, before any of the service\'s work. '
        : 'wrk or h2load is not installed (Debian packages wrk, nghttp2-client): the C-loader rows were left out. ') +
      `"${BARE_MERCURIUS_DIAGNOSTIC}": the same GraphQL document to Mercurius (JIT on) on the bare server, a one-type schema ` +
      'whose me returns a constant: the most GraphQL through Mercurius gives here.',
    '',
    '### `me` with an access token of each ACCESS_TOKEN_ALG (issue 13)',
    '',
    targetTable(algTargets, 'req/s'),
    '',
    'GET /api/v1/users/me with an ES256 and an RS256 admin token, each as the median of its per-round ratios to the EdDSA ' +
      'token\'s run in the same round ("REST" here). Those tokens were issued by the service started first on the same data ' +
      'with that ACCESS_TOKEN_ALG; the service measured signs with EdDSA and verifies them with the retired keys. A token\'s ' +
      'signature is checked once, then its verified claims are answered from memory (src/components/auth/access-tokens.ts).',
    '',
    '### `me` with an API key (issue 13)',
    '',
    targetTable(apiKeyTargets, 'req/s'),
    '',
    'GET /api/v1/users/me with a `bsk_` API key of the admin (scope users:read) against its access token ("REST" here), ' +
      'as the median of the per-round ratios. A key is found by its SHA-256 in the same kind of cache as the user\'s state ' +
      '(src/components/api-keys/api-keys.service.ts), its uses are written in batches, and it has its own rate limit (API_KEY_RATE_LIMIT_*, set out of the way here).',
    '',
    `### A transfer through each protocol (service on ${backend})`,
    '',
    table(transfers.rows, transfers.rows[0]?.result ?? bareResult, { ratioTo: 'REST', unit: 'tx/s' }),
    '',
    targetTable(transfers.targets, 'tx/s'),
    '',
    `1 cent from one account of the bench user to another (both its own; the first funded with ${FUNDS} cents), ` +
      `${CONNECTIONS} requests in flight, a new idempotency key in every request (all three protocols require one), ` +
      `in ${ROUNDS} interleaved rounds of ${DURATION} s with REST as the baseline. Ledger check (the credited account's balance before and ` +
      'after each run, warm-ups included): ' +
      transfers.checks.join('; ') +
      '.',
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
  logTargets([...meTargets, ...algTargets, ...apiKeyTargets, ...transfers.targets]);
  await mkdir(path.dirname(RESULTS), { recursive: true });
  await writeFile(RESULTS, markdown);
  log(`written to ${path.relative(ROOT, RESULTS)}`);

  const serviceErrors = service.output().split('\n').filter((line) => /"level":(50|60)|"level":"(error|fatal)"/.test(line));
  if (serviceErrors.length > 0) log(`the service logged ${serviceErrors.length} error lines, e.g.:\n${serviceErrors.slice(0, 3).join('\n')}`);
}

/** What the bench user's first account holds: enough for a cent per transfer through the whole run. */
const FUNDS = 1_000_000_000_000;
const KEY_PLACEHOLDER = '__BENCH_IDEMPOTENCY_KEY__';

interface TransferRounds {
  readonly rows: Row[];
  readonly targets: Target[];
  /** Per protocol: what the ledger moved against what the load generator counted as successful. */
  readonly checks: string[];
}

/**
 * A transfer through each protocol (REST the baseline), interleaved as the reads are: 1 cent from one
 * account of the bench user to another, both its own, the first funded with FUNDS first. The three
 * protocols require an idempotency key on a transfer, so every request carries a new one (REST: the
 * Idempotency-Key header; GraphQL: the idempotencyKey variable; gRPC: idempotency_key). After each
 * run the credited account's balance says how many transfers really happened, which must be at
 * least the successes counted (a GraphQL error answers 200) and at most those plus the calls still
 * in flight when the load stopped.
 */
async function transferRounds(
  api: string,
  auth: Record<string, string>,
  grpcCalls: (path: string, message?: Uint8Array, uniqueKeyField?: number) => Omit<GrpcLoadSpec, 'durationSeconds'>,
  options: ScenarioOptions,
): Promise<TransferRounds> {
  const call = async <T>(method: 'GET' | 'POST', route: string, body?: unknown, key?: string): Promise<T> => {
    const response = await fetch(`${api}${route}`, {
      method,
      headers: { ...auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(key ? { 'idempotency-key': key } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${await response.text()}`);
    return ((await response.json()) as { data: T }).data;
  };
  const from = (await call<{ id: string }>('POST', '/api/v1/accounts', { currency: 'USD', name: 'bench: transfers from' })).id;
  const to = (await call<{ id: string }>('POST', '/api/v1/accounts', { currency: 'USD', name: 'bench: transfers to' })).id;
  await call('POST', `/api/v1/accounts/${from}/deposits`, { amount: FUNDS }, randomUUID());
  const balanceOf = async (id: string) => BigInt(String((await call<{ balance: number | string }>('GET', `/api/v1/accounts/${id}`)).balance));

  const tally = new Map<string, { moved: bigint; succeeded: number; runs: number }>();
  const checked = (name: string): ScenarioOptions => ({
    ...options,
    around: async (run) => {
      const before = await balanceOf(to);
      const result = await run();
      await new Promise((resolve) => setTimeout(resolve, 250)); // calls in flight at the stop finish
      const moved = (await balanceOf(to)) - before;
      const entry = tally.get(name) ?? { moved: 0n, succeeded: 0, runs: 0 };
      tally.set(name, { moved: entry.moved + moved, succeeded: entry.succeeded + result.ok2xx, runs: entry.runs + 1 });
      return result;
    },
  });

  const transfer = { fromAccountId: from, toAccountId: to, amount: 1 };
  const graphqlTransfer = (key: string) =>
    JSON.stringify({
      query:
        'mutation Transfer($input: TransferInput!, $key: String!) { transfer(input: $input, idempotencyKey: $key) ' +
        '{ transfer { id fromAccountId toAccountId amount currency status description createdAt expiresAt pendingId } } }',
      variables: { input: transfer, key },
    });
  await probeGraphql(api, auth, graphqlTransfer(randomUUID()));
  const grpcMessage = toBinary(CreateTransferRequestSchema, create(CreateTransferRequestSchema, { fromAccountId: from, toAccountId: to, amount: 1n }));
  const json = { ...auth, 'content-type': 'application/json' };
  const scenarios: Scenario[] = [
    [
      REST_TRANSFER,
      { url: `${api}/api/v1/transfers`, connections: CONNECTIONS, method: 'POST', headers: json, body: JSON.stringify(transfer), uniqueKey: { header: 'idempotency-key' } },
      checked(REST_TRANSFER),
    ],
    [
      GRAPHQL_TRANSFER,
      { url: `${api}/graphql`, connections: CONNECTIONS, method: 'POST', headers: json, body: graphqlTransfer(KEY_PLACEHOLDER), uniqueKey: { bodyPlaceholder: KEY_PLACEHOLDER } },
      checked(GRAPHQL_TRANSFER),
    ],
    [
      GRPC_TRANSFER,
      grpcCalls(
        `/${LedgerService.typeName}/${LedgerService.method.createTransfer.name}`,
        grpcMessage,
        CreateTransferRequestSchema.field.idempotencyKey.number,
      ),
      checked(GRPC_TRANSFER),
    ],
  ];
  const rounds = await interleaved(scenarios);
  const withinTwentyPercent = (ratio: number) => ratio >= 0.8;
  const checks = [...tally].map(([name, { moved, succeeded, runs }]) => {
    const ok = moved >= BigInt(succeeded) && moved <= BigInt(succeeded + runs * CONNECTIONS);
    if (!ok) log(`ledger check failed for ${name}: ${moved} transfers moved, ${succeeded} successes counted`);
    return `${name}: ${moved} transfers moved, ${succeeded} successful answers counted over ${runs} runs${ok ? '' : ' — **mismatch**'}`;
  });
  return {
    rows: rounds.rows,
    targets: [
      { row: rounds.rows.find((row) => row.scenario === GRAPHQL_TRANSFER), ratio: rounds.paired(GRAPHQL_TRANSFER, REST_TRANSFER), target: '≥ 0.80 (within 20 %)', met: withinTwentyPercent },
      { row: rounds.rows.find((row) => row.scenario === GRPC_TRANSFER), ratio: rounds.paired(GRPC_TRANSFER, REST_TRANSFER), target: '≥ 0.80 (within 20 %)', met: withinTwentyPercent },
    ],
    checks,
  };
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
