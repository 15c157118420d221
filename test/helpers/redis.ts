// Redis for the scale suites: the shared local server (TEST_REDIS_URL) that most suites use, a
// private redis-server that the failure suite owns (it stops and starts that one, never the shared
// one, so suites running in parallel are never left without Redis), and a client for looking at keys.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { servicesRequired, TEST_REDIS_URL } from './backends.js';
import { freePort } from './ports.js';

const execFileAsync = promisify(execFile);

/**
 * Why a suite cannot run a redis-server of its own (undefined when it can): redis-server and
 * redis-cli must be on the PATH. Throws in CI.
 */
export async function privateRedisSkipReason(): Promise<string | undefined> {
  let reason: string | undefined;
  for (const binary of ['redis-cli', 'redis-server']) {
    try {
      await execFileAsync(binary, ['--version'], { timeout: 3_000 });
    } catch (error) {
      reason ??= `${binary} is not runnable (${(error as Error).message})`;
    }
  }
  if (reason === undefined) return undefined;
  if (servicesRequired()) throw new Error(`${reason}; CI requires it`);
  process.stdout.write(`# SKIP redis failure suite: ${reason}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);
  return reason;
}

/**
 * A real redis-server process owned by one suite, on a port of its own, keeping nothing on disk
 * (the flags CI starts the shared one with). `stop()` shuts it down the way an operator would
 * (`SHUTDOWN NOSAVE`); `start()` starts it again on the same port.
 */
export class PrivateRedis {
  private child: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  static async create(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** True when PING answers PONG. */
  async answers(): Promise<boolean> {
    try {
      const { stdout } = await execFileAsync('redis-cli', ['-p', String(this.port), 'ping'], { timeout: 3_000 });
      return stdout.trim() === 'PONG';
    } catch {
      return false;
    }
  }

  /** Starts the server (if it is not running) and waits until PING answers PONG. */
  async start(timeoutMs = 15_000): Promise<void> {
    if (this.child && this.child.exitCode === null && (await this.answers())) return;
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'];
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    this.child = child;
    const failed = once(child, 'error');
    const deadline = Date.now() + timeoutMs;
    while (!(await this.answers())) {
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer PONG within ${timeoutMs} ms`);
      await Promise.race([sleep(50), failed.then(([error]) => Promise.reject(error as Error))]);
    }
  }

  /** `SHUTDOWN NOSAVE`, then waits until the process has exited. */
  async stop(timeoutMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    // redis-cli reports the connection closing under it; the exit code says nothing useful here.
    await execFileAsync('redis-cli', ['-p', String(this.port), 'shutdown', 'nosave'], { timeout: 5_000 }).catch(() => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A plain client on the Redis under test, for looking at what the service stored. */
export function inspectRedis(url = TEST_REDIS_URL): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 3_000 });
  client.on('error', () => undefined);
  return client;
}

/** Waits until the shared cache holds `key` for `cache` (in any epoch); false after `timeoutMs`. */
export async function untilCachedInRedis(redis: Redis, cache: string, key: string, timeoutMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const keys = await redis.keys(`bastion:v1:${cache}:*:val:${key}`);
    if (keys.length > 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

/** Deletes the rate-limit state the service keeps in Redis for these client addresses (clean-up). */
export async function forgetRateLimitState(addresses: Iterable<string>): Promise<void> {
  const keys = [...addresses].map((address) => `bastion:v1:rate:${address}`);
  if (keys.length === 0) return;
  const redis = inspectRedis();
  try {
    await redis.del(...keys);
  } catch {
    // Clean-up only: a Redis that is gone keeps nothing to forget.
  } finally {
    redis.disconnect();
  }
}
