// The message brokers the event suites publish to: the shared local NATS JetStream and RabbitMQ (and
// Redis, in redis.ts), probed with the same skip-or-fail rule as the databases, and private broker
// processes a suite owns, so that it can stop and start one without taking it away from the suites
// running beside it.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, constants, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import { connect as connectAmqp } from 'amqplib';
import { servicesRequired } from './backends.js';
import { freePort } from './ports.js';

const execFileAsync = promisify(execFile);

export const TEST_NATS_URL = process.env['TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';
export const TEST_RABBITMQ_URL = process.env['TEST_RABBITMQ_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const NATS_SERVER_BINARY = process.env['NATS_SERVER_BINARY'] ?? '/usr/sbin/nats-server';
/** The broker start script itself: /usr/sbin/rabbitmq-server would switch to the rabbitmq user first. */
const RABBITMQ_SERVER_SCRIPT = process.env['RABBITMQ_SERVER_SCRIPT'] ?? '/usr/lib/rabbitmq/bin/rabbitmq-server';

/** undefined when `probe` succeeds; throws in CI when it fails; else prints one SKIP line and returns why. */
async function skipUnless(suites: string, what: string, probe: () => Promise<void>): Promise<string | undefined> {
  try {
    await probe();
    return undefined;
  } catch (error) {
    const reason = `${what} (${(error as Error).message})`;
    if (servicesRequired()) throw new Error(`${reason}; CI requires it`);
    process.stdout.write(`# SKIP ${suites}: ${reason}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);
    return reason;
  }
}

let natsProbe: Promise<string | undefined> | undefined;

/** undefined if NATS answers with JetStream enabled; throws in CI when it does not; else the reason to skip. */
export function natsSkipReason(): Promise<string | undefined> {
  natsProbe ??= skipUnless('nats suites', `NATS JetStream unreachable at ${TEST_NATS_URL}`, async () => {
    const connection = await connectNats({ servers: TEST_NATS_URL, timeout: 3_000, reconnect: false });
    try {
      await jetstreamManager(connection, { timeout: 3_000 }); // checks that JetStream is enabled
    } finally {
      await connection.close();
    }
  });
  return natsProbe;
}

let rabbitMqProbe: Promise<string | undefined> | undefined;

/** undefined if RabbitMQ accepts a connection; throws in CI when it does not; else the reason to skip. */
export function rabbitMqSkipReason(): Promise<string | undefined> {
  rabbitMqProbe ??= skipUnless('rabbitmq suites', `RabbitMQ unreachable at ${TEST_RABBITMQ_URL.replace(/\/\/[^@]*@/, '//')}`, async () => {
    const connection = await connectAmqp(TEST_RABBITMQ_URL, { timeout: 3_000 });
    connection.on('error', () => undefined);
    await connection.close();
  });
  return rabbitMqProbe;
}

/** Why a suite cannot run its own nats-server (undefined when it can). Throws in CI. */
export const privateNatsSkipReason = (): Promise<string | undefined> =>
  skipUnless('nats failure suite', `${NATS_SERVER_BINARY} is not executable`, () => access(NATS_SERVER_BINARY, constants.X_OK));

/** Why a suite cannot run its own RabbitMQ node (undefined when it can). Throws in CI. */
export const privateRabbitMqSkipReason = (): Promise<string | undefined> =>
  skipUnless('rabbitmq failure suite', `${RABBITMQ_SERVER_SCRIPT} is not executable`, () => access(RABBITMQ_SERVER_SCRIPT, constants.X_OK));

/** True when something accepts a TCP connection on 127.0.0.1:`port`. */
async function listening(port: number): Promise<boolean> {
  const socket = net.connect({ host: '127.0.0.1', port });
  try {
    await once(socket, 'connect');
    return true;
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}

/** Waits until `ready()` says yes; throws if the process exits first or `timeoutMs` pass. */
async function waitUntil(what: string, child: ChildProcess, ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const failed = once(child, 'error').then(([error]) => Promise.reject(error as Error));
  failed.catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    if (Date.now() > deadline) throw new Error(`${what} was not ready within ${timeoutMs} ms`);
    await Promise.race([sleep(100), failed]);
  }
}

/** Sends `signal`, then waits for the exit; SIGKILL (to `killPid`, default the child) if it takes longer than `timeoutMs`. */
async function stopProcess(child: ChildProcess | undefined, signal: NodeJS.Signals, timeoutMs: number, killPid?: () => Promise<number | undefined>): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => {
    void (async () => {
      child.kill('SIGKILL');
      const pid = await killPid?.();
      if (pid) process.kill(pid, 'SIGKILL');
    })().catch(() => undefined);
  }, timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * SIGSTOP / SIGCONT: a broker that is frozen keeps its connections open but never answers, the way a
 * hung server or a half-open network path looks to a client.
 */
function signalProcess(pid: number | undefined, signal: 'SIGSTOP' | 'SIGCONT', what: string): void {
  if (!pid) throw new Error(`${what}: no process to ${signal === 'SIGSTOP' ? 'freeze' : 'thaw'}`);
  process.kill(pid, signal);
}

/** The pid of the redis-server answering on `port` (INFO server's process_id). */
export async function redisServerPid(port: number): Promise<number> {
  const { stdout } = await execFileAsync('redis-cli', ['-p', String(port), 'info', 'server'], { timeout: 3_000 });
  const match = /process_id:(\d+)/.exec(stdout);
  if (!match?.[1]) throw new Error(`redis-server on port ${port} did not report its pid`);
  return Number(match[1]);
}

/** Freezes and thaws a redis-server by pid (PrivateRedis does not hand out its process). */
export function signalRedisServer(pid: number, signal: 'SIGSTOP' | 'SIGCONT'): void {
  signalProcess(pid, signal, 'redis-server');
}

/** Processes still running when the test process exits are killed (a failed suite leaves no broker behind). */
const leftovers = new Set<() => void>();
process.once('exit', () => {
  for (const kill of leftovers) kill();
});

/**
 * A nats-server with JetStream owned by one suite: a port of its own and a store directory of its own
 * (kept across `stop()`/`start()`, as a real restart keeps it). `stop()` is SIGTERM, the way an
 * operator or an orchestrator stops it.
 */
export class PrivateNats {
  private child: ChildProcess | undefined;
  private readonly kill = () => this.child?.kill('SIGKILL');

  private constructor(
    readonly port: number,
    private readonly storeDir: string,
  ) {}

  static async create(): Promise<PrivateNats> {
    const server = new PrivateNats(await freePort(), await mkdtemp(path.join(os.tmpdir(), 'bastion-nats-')));
    await server.start();
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(timeoutMs = 15_000): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return;
    const child = spawn(NATS_SERVER_BINARY, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir], { stdio: 'ignore' });
    this.child = child;
    leftovers.add(this.kill);
    await waitUntil(`nats-server on port ${this.port}`, child, () => listening(this.port), timeoutMs);
  }

  freeze(): void {
    signalProcess(this.child?.pid, 'SIGSTOP', 'nats-server');
  }

  thaw(): void {
    signalProcess(this.child?.pid, 'SIGCONT', 'nats-server');
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    await stopProcess(this.child, 'SIGTERM', timeoutMs);
    leftovers.delete(this.kill);
  }

  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.storeDir, { recursive: true, force: true });
  }
}

/**
 * A RabbitMQ node owned by one suite: its own node name, AMQP and distribution ports, database and
 * logs (all in one temporary directory, kept across `stop()`/`start()`). It starts in about 6 s on
 * this machine. `stop()` sends SIGTERM to the start script, which stops the node cleanly and exits
 * when the Erlang VM has.
 */
export class PrivateRabbitMq {
  private child: ChildProcess | undefined;
  /** The Erlang VM's pid (the child is the start script, which outlives it only briefly). */
  private vmPid: number | undefined;
  private readonly kill = () => {
    this.child?.kill('SIGKILL');
    try {
      if (this.vmPid) process.kill(this.vmPid, 'SIGKILL');
    } catch {
      // already gone
    }
  };

  private constructor(
    readonly port: number,
    private readonly distributionPort: number,
    private readonly nodeName: string,
    private readonly baseDir: string,
  ) {}

  static async create(): Promise<PrivateRabbitMq> {
    const baseDir = await mkdtemp(path.join(os.tmpdir(), 'bastion-rabbitmq-'));
    const node = new PrivateRabbitMq(await freePort(), await freePort(), `bastion-test-${randomBytes(4).toString('hex')}@localhost`, baseDir);
    await node.start();
    return node;
  }

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  private get pidFile(): string {
    return path.join(this.baseDir, 'node.pid');
  }

  private async readPid(): Promise<number | undefined> {
    const text = await readFile(this.pidFile, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** True when the node completes an AMQP handshake (its port opens a moment before it can). */
  private async answers(): Promise<boolean> {
    if (!(await listening(this.port))) return false;
    try {
      const connection = await connectAmqp(this.url, { timeout: 2_000 });
      connection.on('error', () => undefined);
      await connection.close();
      return true;
    } catch {
      return false;
    }
  }

  async start(timeoutMs = 60_000): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return;
    const at = (name: string) => path.join(this.baseDir, name);
    const child = spawn(RABBITMQ_SERVER_SCRIPT, [], {
      cwd: this.baseDir,
      stdio: 'ignore',
      env: {
        ...process.env,
        HOME: this.baseDir, // the Erlang cookie
        RABBITMQ_NODENAME: this.nodeName,
        RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
        RABBITMQ_NODE_PORT: String(this.port),
        RABBITMQ_DIST_PORT: String(this.distributionPort),
        RABBITMQ_MNESIA_BASE: at('mnesia'),
        RABBITMQ_LOG_BASE: at('log'),
        RABBITMQ_PID_FILE: this.pidFile,
        RABBITMQ_ENABLED_PLUGINS_FILE: at('enabled_plugins'),
        RABBITMQ_CONFIG_FILE: at('rabbitmq'),
        RABBITMQ_ADVANCED_CONFIG_FILE: at('advanced.config'),
      },
    });
    this.child = child;
    leftovers.add(this.kill);
    await waitUntil(`RabbitMQ node ${this.nodeName}`, child, () => this.answers(), timeoutMs);
    this.vmPid = await this.readPid();
  }

  /** Freezes the Erlang VM (the start script only relays signals). */
  freeze(): void {
    signalProcess(this.vmPid, 'SIGSTOP', 'RabbitMQ');
  }

  thaw(): void {
    signalProcess(this.vmPid, 'SIGCONT', 'RabbitMQ');
  }

  async stop(timeoutMs = 20_000): Promise<void> {
    await stopProcess(this.child, 'SIGTERM', timeoutMs, () => this.readPid());
    leftovers.delete(this.kill);
  }

  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.baseDir, { recursive: true, force: true });
  }
}
