// The Redis the scale suites share: a cross-process lock (test files run in parallel, and one of
// them stops the server), control of the local redis-server, and a client for looking at keys.
import { execFile, spawn } from 'node:child_process';
import { readFile, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { servicesRequired, TEST_REDIS_URL } from './backends.js';

const execFileAsync = promisify(execFile);

const LOCK_PATH = path.join(os.tmpdir(), 'bastion-test-redis.lock');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Takes the lock every suite holds while it uses the shared Redis, so that the suite that stops
 * Redis never does so under another suite's feet. A lock left by a dead process is taken over.
 * Resolves to the release function.
 */
export async function lockSharedRedis(timeoutMs = 240_000): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      await writeFile(LOCK_PATH, String(process.pid), { flag: 'wx' });
      return async () => {
        const owner = await readFile(LOCK_PATH, 'utf8').catch(() => '');
        if (owner === String(process.pid)) await unlink(LOCK_PATH).catch(() => undefined);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number(await readFile(LOCK_PATH, 'utf8').catch(() => ''));
    if (!Number.isInteger(owner) || owner <= 0 || !alive(owner)) {
      // Written by a process that is gone (or half-written: give the writer a moment first).
      await sleep(100);
      const again = Number(await readFile(LOCK_PATH, 'utf8').catch(() => ''));
      if (again === owner || !alive(again)) await unlink(LOCK_PATH).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) throw new Error(`the shared Redis stayed locked by pid ${owner} for ${timeoutMs} ms (${LOCK_PATH})`);
    if (!told) {
      process.stdout.write(`# waiting for the shared Redis (locked by pid ${owner})\n`);
      told = true;
    }
    await sleep(250);
  }
}

/** The command CI starts Redis with (see the CI setup); the failure suite restarts it the same way. */
export const REDIS_SERVER_ARGS: readonly string[] = [
  '--daemonize', 'yes',
  '--bind', '127.0.0.1', '-::1',
  '--port', '6379',
  '--save', '',
  '--appendonly', 'no',
  '--dir', '/var/lib/redis',
  '--logfile', '/var/log/redis/ci.log',
];

const LOCAL_REDIS = /^redis:\/\/(127\.0\.0\.1|localhost)(:6379)?\/?(0)?$/;

/** True when `redis-cli -p 6379 ping` answers PONG. */
export async function redisAnswers(): Promise<boolean> {
  try {
    const { stdout } = await execFileAsync('redis-cli', ['-p', '6379', 'ping'], { timeout: 3_000 });
    return stdout.trim() === 'PONG';
  } catch {
    return false;
  }
}

/**
 * Why the suite cannot stop and start the local Redis (undefined when it can): it needs the Redis
 * under test to be the local one on 6379 and redis-cli/redis-server on the PATH. Throws in CI.
 */
export async function redisControlSkipReason(): Promise<string | undefined> {
  let reason: string | undefined;
  if (!LOCAL_REDIS.test(TEST_REDIS_URL)) reason = `TEST_REDIS_URL ${TEST_REDIS_URL} is not the local redis-server on port 6379`;
  else {
    for (const binary of ['redis-cli', 'redis-server']) {
      try {
        await execFileAsync(binary, ['--version'], { timeout: 3_000 });
      } catch (error) {
        reason ??= `${binary} is not runnable (${(error as Error).message})`;
      }
    }
  }
  if (reason === undefined) return undefined;
  if (servicesRequired()) throw new Error(`${reason}; CI requires it`);
  process.stdout.write(`# SKIP redis failure suite: ${reason}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);
  return reason;
}

/** `redis-cli -p 6379 shutdown nosave`, then waits until it no longer answers. */
export async function stopRedis(timeoutMs = 10_000): Promise<void> {
  // redis-cli reports the connection closing under it; the exit code says nothing useful here.
  await execFileAsync('redis-cli', ['-p', '6379', 'shutdown', 'nosave'], { timeout: 5_000 }).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  while (await redisAnswers()) {
    if (Date.now() > deadline) throw new Error('redis-server still answers after shutdown nosave');
    await sleep(50);
  }
}

/** Starts redis-server with the CI command (if it is not running) and waits until PING answers PONG. */
export async function startRedis(timeoutMs = 15_000): Promise<void> {
  if (await redisAnswers()) return;
  await new Promise<void>((resolve, reject) => {
    const child = spawn('redis-server', [...REDIS_SERVER_ARGS], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-server exited with ${code}`))));
  });
  const deadline = Date.now() + timeoutMs;
  while (!(await redisAnswers())) {
    if (Date.now() > deadline) throw new Error(`redis-server did not answer PONG within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** A plain client on the Redis under test, for looking at what the service stored. */
export function inspectRedis(): Redis {
  const client = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1, connectTimeout: 3_000 });
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
  if (keys.length === 0 || !(await redisAnswers())) return;
  const redis = inspectRedis();
  try {
    await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}
