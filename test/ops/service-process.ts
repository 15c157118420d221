// Runs the REAL service (`node --import tsx src/main.ts <command>`) as a child process, the way an
// operator would, and talks to it over fresh TCP connections. Shared by the test/ops suites.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestDatabase } from '../helpers/backends.js';
import { freePort } from '../helpers/ports.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from '../helpers/server.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MAIN_ENTRY = path.join(REPO_ROOT, 'src/main.ts');

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** performance.now() when the process exited. */
  readonly at: number;
}

/**
 * The environment a child gets: PATH/HOME and friends from ours, but none of the service's own
 * variables, so a developer's shell (DATABASE_URL, PORT, …) cannot leak into a test.
 */
export function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ', 'SYSTEMROOT', 'NODE_OPTIONS']) {
    const value = process.env[name];
    if (value !== undefined) base[name] = value;
  }
  return { ...base, NODE_ENV: 'test', ...env };
}

/**
 * The service's environment on a test database: the bootstrap admin, a rate limit no test reaches
 * unless it sets its own, one hashing thread; `extra` adds to it or overrides it.
 */
export function serviceEnv(database: TestDatabase, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATA_DIR: database.dataDir,
    ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
    BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
    BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
    RATE_LIMIT_MAX: '1000000000',
    PASSWORD_HASH_CONCURRENCY: '1',
    ...extra,
  };
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The process was still running at `timeoutMs` and was SIGKILLed. */
  readonly timedOut: boolean;
  readonly durationMs: number;
  /** Milliseconds from its last line of output (or its start, without output) to its exit. */
  readonly lingeredMs: number;
}

/**
 * Runs a CLI command to completion (stdin optional). A process still running at `timeoutMs` is
 * SIGKILLed and reported with `timedOut: true` (its output so far is kept), so a test can check
 * what the command did AND, separately, that it exited.
 */
export async function runCli(
  args: readonly string[],
  env: Record<string, string>,
  options: { stdin?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const startedAt = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN_ENTRY, ...args], {
    cwd: REPO_ROOT,
    env: childEnv(env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let lastOutputAt = startedAt;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    lastOutputAt = performance.now();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    lastOutputAt = performance.now();
  });
  child.stdin.on('error', () => undefined);
  if (options.stdin !== undefined) child.stdin.end(options.stdin);
  else child.stdin.end();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs ?? 60_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  const exitedAt = performance.now();
  clearTimeout(timer);
  return { code, signal, stdout, stderr, timedOut, durationMs: exitedAt - startedAt, lingeredMs: exitedAt - lastOutputAt };
}

export { freePort };

export interface HttpResult {
  /** HTTP status, or undefined when no response arrived. */
  readonly status: number | undefined;
  /** Node error code when the request failed (ECONNREFUSED, ECONNRESET, …). */
  readonly error: string | undefined;
  readonly body: string;
  readonly headers: http.IncomingHttpHeaders;
  /** performance.now() when the whole request had been handed to the kernel (undefined: never). */
  readonly sentAt: number | undefined;
  /** performance.now() when the response (or the error) arrived. */
  readonly doneAt: number;
}

/**
 * One request on its OWN connection (no keep-alive agent, `Connection: close`), so a request can only
 * be answered, refused before being accepted, or reset — never queued behind a reused socket.
 */
export function request(
  port: number,
  method: string,
  urlPath: string,
  options: {
    token?: string;
    body?: unknown;
    timeoutMs?: number;
    onSent?: () => void;
    /** Another loopback address (127.x.y.z) to send from: another client for per-client limits. */
    localAddress?: string;
  } = {},
): Promise<HttpResult> {
  return new Promise((resolve) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: http.OutgoingHttpHeaders = { connection: 'close' };
    if (options.token) headers['authorization'] = `Bearer ${options.token}`;
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    let sentAt: number | undefined;
    let settled = false;
    const settle = (result: Omit<HttpResult, 'sentAt' | 'doneAt'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...result, sentAt, doneAt: performance.now() });
    };
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: urlPath,
        headers,
        agent: false,
        timeout: options.timeoutMs ?? 15_000,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => settle({ status: res.statusCode, error: undefined, body, headers: res.headers }));
        res.on('error', (error: NodeJS.ErrnoException) =>
          settle({ status: undefined, error: error.code ?? error.message, body, headers: res.headers }),
        );
      },
    );
    req.on('finish', () => {
      sentAt = performance.now();
      options.onSent?.();
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) =>
      settle({ status: undefined, error: error.code ?? error.message, body: '', headers: {} }),
    );
    req.end(payload);
  });
}

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly baseUrl: string;
  /** Everything the process wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  /** Sends a signal (no-op once exited). */
  signal(signal: NodeJS.Signals): void;
  /** SIGKILLs the process if it still runs (for `after` hooks). */
  kill(): Promise<void>;
}

/**
 * Starts `bastion serve` on a free port and waits until /health answers 200 — or, with
 * `waitForHealth: false`, returns as soon as the process is spawned.
 */
export async function startServiceProcess(
  env: Record<string, string>,
  options: { startTimeoutMs?: number; command?: readonly string[]; waitForHealth?: boolean } = {},
): Promise<ServiceProcess> {
  const port = await freePort();
  const command = options.command ?? [process.execPath, '--import', 'tsx', MAIN_ENTRY, 'serve'];
  const [executable, ...args] = command;
  if (!executable) throw new Error('empty command');
  const child = spawn(executable, args, {
    cwd: REPO_ROOT,
    env: childEnv({ HOST: '127.0.0.1', ...env, PORT: String(port) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let exitInfo: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal, at: performance.now() };
      resolve(exitInfo);
    });
  });
  const service: ServiceProcess = {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    signal(signal) {
      if (!exitInfo) child.kill(signal);
    },
    async kill() {
      if (exitInfo) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  if (options.waitForHealth === false) return service;
  const deadline = performance.now() + (options.startTimeoutMs ?? 60_000);
  for (;;) {
    if (exitInfo) {
      throw new Error(`service exited during start (code ${exitInfo.code}, signal ${exitInfo.signal}):\n${stderr}\n${stdout.slice(-4_000)}`);
    }
    const health = await request(port, 'GET', '/health', { timeoutMs: 2_000 });
    if (health.status === 200) return service;
    if (performance.now() > deadline) {
      await service.kill();
      throw new Error(`service did not answer /health within the start timeout:\n${stderr}\n${stdout.slice(-4_000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Parses the pino JSON lines a process wrote (non-JSON lines are skipped). */
export function logLines(output: string): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial line at the end of the buffer
    }
  }
  return lines;
}

/** The `kid` in a JWT's protected header. */
export function jwtKid(token: string): string | undefined {
  const [header] = token.split('.');
  if (!header) return undefined;
  const parsed = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { kid?: unknown };
  return typeof parsed.kid === 'string' ? parsed.kid : undefined;
}
