// Ledger benchmark: in one invocation against the same PostgreSQL, pgbench's TPC-B-like script as
// the baseline, then POST /api/v1/transfers over HTTP (valid tokens, unique idempotency keys) with
// random pairs among 1,000 funded accounts, and the same with 90% of transfers touching one hot
// account. The first run has the outbox off (EVENTS_OUTBOX=false), the others write every transfer's
// event and publish it to NATS JetStream, RabbitMQ and Redis Streams, read back by a real consumer of
// each broker for the commit-to-consumer lag. Prints markdown tables and writes
// bench/results/ledger-latest.md.
//
//   npm run bench:ledger            (BENCH_DATABASE_URL to use another server; BENCH_SECONDS=15;
//                                    BENCH_OUTBOX_ROUNDS=12, BENCH_OUTBOX_ROUND_SECONDS=5, BENCH_WARMUP_SECONDS=3;
//                                    BENCH_EVENTS_PUBLISHERS=nats,rabbitmq,redis; NATS_URL, AMQP_URL, REDIS_URL)
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import autocannon from 'autocannon';
import pg from 'pg';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as connectNats } from '@nats-io/transport-node';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { untilReady } from '../test/helpers/poll.js';
import { freePort } from '../test/helpers/ports.js';
import type { ConsumerReport, ConsumersSpec } from './event-consumers.js';
import { cpuSecondsByCommand, cpuSecondsOf } from './proc-stat.js';

const ADMIN_URL = process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 15);
/**
 * The outbox's price: BENCH_OUTBOX_ROUNDS pairs of short runs (BENCH_OUTBOX_ROUND_SECONDS each), events
 * off against the outbox alone, on two services running side by side, so that the pairs follow each
 * other within seconds (this VM drifts by ±10 % within a minute; the database also grows as the
 * rounds go on, which a pair shares).
 */
const OUTBOX_ROUNDS = Number(process.env['BENCH_OUTBOX_ROUNDS'] ?? 12);
const OUTBOX_ROUND_SECONDS = Number(process.env['BENCH_OUTBOX_ROUND_SECONDS'] ?? 5);
const WARMUP_SECONDS = Number(process.env['BENCH_WARMUP_SECONDS'] ?? 3);
const ACCOUNTS = 1_000;
const CONNECTIONS = 64;
const ADMIN = { email: 'bench-admin@bastion.test', password: 'bench-admin-password' };

const PUBLISHERS = (process.env['BENCH_EVENTS_PUBLISHERS'] ?? 'nats,rabbitmq,redis').split(',').filter(Boolean);
const NATS_URL = process.env['NATS_URL'] ?? 'nats://127.0.0.1:4222';
const AMQP_URL = process.env['AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function withBenchDatabase<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl('bastion_bench_ledger') });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Removes what the run created on the brokers: its NATS stream, RabbitMQ exchange and Redis stream. */
async function dropBrokerState(names: {
  EVENTS_NATS_STREAM: string;
  EVENTS_RABBITMQ_EXCHANGE: string;
  EVENTS_REDIS_STREAM: string;
}): Promise<void> {
  if (PUBLISHERS.includes('nats')) {
    const connection = await connectNats({ servers: NATS_URL });
    await (await jetstreamManager(connection)).streams.delete(names.EVENTS_NATS_STREAM).catch(() => undefined);
    await connection.close();
  }
  if (PUBLISHERS.includes('rabbitmq')) {
    const connection = await amqp.connect(AMQP_URL);
    const channel = await connection.createChannel();
    await channel.deleteExchange(names.EVENTS_RABBITMQ_EXCHANGE).catch(() => undefined);
    await connection.close().catch(() => undefined);
  }
  if (PUBLISHERS.includes('redis')) {
    const redis = new Redis(REDIS_URL);
    await redis.del(names.EVENTS_REDIS_STREAM);
    redis.disconnect();
  }
}

async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function recreate(name: string): Promise<void> {
  await withAdmin(async (client) => {
    await client.query(`drop database if exists ${name} with (force)`);
    await client.query(`create database ${name}`);
  });
}

function pgbench(): { tps: number; latencyMs: number } {
  const name = 'bastion_bench_pgbench';
  const url = new URL(databaseUrl(name));
  const args = ['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres')];
  execFileSync('pgbench', [...args, '-i', '-q', '-s', '10', name], { stdio: 'ignore' });
  const output = execFileSync('pgbench', [...args, '-c', '16', '-j', '2', '-T', String(SECONDS), '-M', 'prepared', name], {
    encoding: 'utf8',
  });
  const tps = Number(/tps = ([\d.]+)/.exec(output)?.[1] ?? NaN);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(output)?.[1] ?? NaN);
  return { tps, latencyMs };
}

interface Row {
  scenario: string;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** Requests answered (autocannon's count). */
  total: number;
}

/** Where the machine's CPU went, in seconds: the service under load, PostgreSQL, the brokers, the consumers, the load generator. */
interface CpuSpent {
  service: number;
  postgres: number;
  brokers: number;
  consumers: number;
  loader: number;
}
const CPU_GROUPS = ['service', 'postgres', 'brokers', 'consumers', 'loader'] as const;
/** The brokers' server processes (RabbitMQ is Erlang's beam.smp and its helpers). */
const BROKER_COMMANDS = ['beam.smp', 'erl_child_setup', 'epmd', 'inet_gethost', 'nats-server', 'redis-server'];

function cpuNow(servicePid: number | undefined, consumerPid?: number): CpuSpent {
  const byCommand = cpuSecondsByCommand();
  const own = process.cpuUsage(); // autocannon runs in this process
  return {
    service: cpuSecondsOf(servicePid) ?? 0,
    postgres: byCommand.get('postgres') ?? 0,
    brokers: BROKER_COMMANDS.reduce((total, command) => total + (byCommand.get(command) ?? 0), 0),
    consumers: cpuSecondsOf(consumerPid) ?? 0,
    loader: (own.user + own.system) / 1e6,
  };
}

/** Runs `work` and adds what each group spent meanwhile to `into`. */
async function accounting<T>(into: CpuSpent, servicePid: number | undefined, consumerPid: number | undefined, work: () => Promise<T>): Promise<T> {
  const before = cpuNow(servicePid, consumerPid);
  const result = await work();
  const after = cpuNow(servicePid, consumerPid);
  for (const group of CPU_GROUPS) into[group] += after[group] - before[group];
  return result;
}
const noCpu = (): CpuSpent => ({ service: 0, postgres: 0, brokers: 0, consumers: 0, loader: 0 });

/** A markdown row of CPU per transfer (µs) by group, and the sum. */
function cpuRow(name: string, spent: CpuSpent, transfers: number): string {
  const perTransfer = (seconds: number) => ((seconds / Math.max(1, transfers)) * 1e6).toFixed(0);
  const all = CPU_GROUPS.reduce((total, group) => total + spent[group], 0);
  return `| ${name} | ${CPU_GROUPS.map((group) => perTransfer(spent[group])).join(' | ')} | ${perTransfer(all)} |`;
}

async function main() {
  process.stdout.write(`# ledger benchmark: ${os.cpus().length} cores, ${SECONDS}s per scenario, ${CONNECTIONS} connections\n`);
  await recreate('bastion_bench_pgbench');
  process.stdout.write('pgbench TPC-B-like (scale 10, 16 clients, -M prepared)…\n');
  const baseline = pgbench();

  await recreate('bastion_bench_ledger');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  /** Starts the service on `at` (the main port unless given) and returns its stop. */
  const startService = async (env: Record<string, string>, at = { port, base }) => {
    // BENCH_SERVER_NODE_ARGS: extra node flags for the service (e.g. --cpu-prof), for diagnosis.
    const nodeArgs = (process.env['BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, 'dist/src/main.js', 'serve'], {
      env: {
        ...process.env,
        PORT: String(at.port),
        HOST: '127.0.0.1',
        DATABASE_URL: databaseUrl('bastion_bench_ledger'),
        DATABASE_POOL_SIZE: process.env['BENCH_POOL_SIZE'] ?? '16',
        BOOTSTRAP_ADMIN_EMAIL: ADMIN.email,
        BOOTSTRAP_ADMIN_PASSWORD: ADMIN.password,
        RATE_LIMIT_MAX: '1000000000',
        // Every service of the run is the same deployment, PostgreSQL + Redis (the rate limit, the
        // cache and the live-event bus on Redis), with events off, on, or published: with Redis only
        // where the Redis Streams publisher needs it, the published run also paid a Redis round trip
        // per request for the rate limit and a PUBLISH per transfer, and was compared with a service
        // that paid neither.
        REDIS_URL,
        LOG_LEVEL: 'warn',
        ...env,
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await untilReady(at.base, { timeoutMs: 30_000 });
    const stop = async () => {
      child.kill('SIGTERM');
      await once(child, 'exit');
    };
    return Object.assign(stop, { pid: child.pid });
  };
  // First without events (EVENTS_OUTBOX=false), to price the outbox; then with it and all three
  // publishers, as a deployment runs.
  let stopService = await startService({ EVENTS_OUTBOX: 'false' });
  let consumerProcess: ChildProcess | undefined;
  const runId = Date.now().toString(36);
  const eventsEnv = {
    EVENTS_PUBLISHERS: PUBLISHERS.join(','),
    NATS_URL,
    AMQP_URL,
    REDIS_URL,
    EVENTS_NATS_STREAM: `BENCH_${runId}`,
    EVENTS_NATS_SUBJECT_PREFIX: `bench.${runId}`,
    EVENTS_RABBITMQ_EXCHANGE: `bench.${runId}`,
    EVENTS_REDIS_STREAM: `bench:${runId}`,
  };
  try {
    const post = async <T>(path: string, body: unknown, token?: string, key?: string): Promise<T> => {
      const response = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(key ? { 'idempotency-key': key } : {}),
        },
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
      return (await response.json()) as T;
    };
    const { data: login } = await post<{ data: { accessToken: string } }>('/api/v1/auth/login', ADMIN);
    const token = login.accessToken;
    process.stdout.write(`funding ${ACCOUNTS} accounts…\n`);
    const accounts: string[] = [];
    for (let index = 0; index < ACCOUNTS; index += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, ACCOUNTS - index) }, async () => {
          const { data } = await post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, token);
          await post(`/api/v1/accounts/${data.id}/deposits`, { amount: 1_000_000_000 }, token, randomUUID());
          return data.id;
        }),
      );
      accounts.push(...batch);
    }
    const hot = accounts[0] ?? '';
    const pick = () => accounts[Math.floor(Math.random() * accounts.length)] ?? '';

    const run = (scenario: string, pair: () => [string, string], duration = SECONDS, url = base): Promise<Row> =>
      new Promise((resolve, reject) => {
        const instance = autocannon(
          {
            url,
            connections: CONNECTIONS,
            duration,
            requests: [
              {
                method: 'POST',
                path: '/api/v1/transfers',
                setupRequest: (request) => {
                  const [from, to] = pair();
                  return {
                    ...request,
                    headers: {
                      'content-type': 'application/json',
                      authorization: `Bearer ${token}`,
                      'idempotency-key': randomUUID(),
                    },
                    body: JSON.stringify({ fromAccountId: from, toAccountId: to, amount: 1 + Math.floor(Math.random() * 100) }),
                  };
                },
              },
            ],
          },
          (error, result) => {
            if (error) return reject(error);
            resolve({
              scenario,
              rps: result.requests.average,
              p50: result.latency.p50,
              p99: result.latency.p99,
              non2xx: result.non2xx,
              errors: result.errors,
              total: result.requests.total,
            });
          },
        );
        void instance;
      });

    const distinctPair = (first: () => string, second: () => string): [string, string] => {
      for (;;) {
        const a = first();
        const b = second();
        if (a !== b) return [a, b];
      }
    };
    // The outbox's price: events off against the outbox alone (every transfer's event written in its
    // batch, the relay fanning out to webhooks, none registered, no broker). The events-off service
    // keeps running; an outbox-on service starts beside it on another port, both are warmed up, and
    // the load alternates between them in OUTBOX_ROUNDS pairs of OUTBOX_ROUND_SECONDS (ABBA order,
    // so neither mode always goes first). The idle one costs a timer tick now and then.
    const names = { off: 'POST /transfers, random pairs, events off (EVENTS_OUTBOX=false)', on: 'POST /transfers, random pairs, outbox on, no broker' } as const;
    const onPort = await freePort();
    const urls = { off: base, on: `http://127.0.0.1:${onPort}` } as const;
    const stopOutboxService = await startService({}, { port: onPort, base: urls.on });
    const pids = { off: stopService.pid, on: stopOutboxService.pid } as const;
    const samples: Record<keyof typeof urls, Row[]> = { off: [], on: [] };
    const roundsCpu = { off: noCpu(), on: noCpu() };
    const ratios: number[] = [];
    try {
      for (const mode of ['off', 'on'] as const) await run(`warm-up ${mode}`, () => distinctPair(pick, pick), WARMUP_SECONDS, urls[mode]);
      for (let round = 1; round <= OUTBOX_ROUNDS; round++) {
        const order = round % 2 === 1 ? (['off', 'on'] as const) : (['on', 'off'] as const);
        for (const mode of order) {
          const row = await accounting(roundsCpu[mode], pids[mode], undefined, () =>
            run(names[mode], () => distinctPair(pick, pick), OUTBOX_ROUND_SECONDS, urls[mode]),
          );
          samples[mode].push(row);
        }
        const ratio = (samples.on.at(-1)?.rps ?? 0) / (samples.off.at(-1)?.rps ?? 1);
        ratios.push(ratio);
        process.stdout.write(`round ${round}/${OUTBOX_ROUNDS} (${order.join(' then ')}): outbox on / events off ${ratio.toFixed(3)}\n`);
      }
    } finally {
      await stopOutboxService();
    }
    await stopService();
    const medianRow = (rows: Row[]): Row => {
      const sorted = [...rows].sort((a, b) => a.rps - b.rps);
      const middle = sorted[Math.floor(sorted.length / 2)];
      if (!middle) throw new Error('no samples');
      return middle;
    };
    const eventsOff = medianRow(samples.off);
    const outboxOnly = medianRow(samples.on);
    const sortedRatios = [...ratios].sort((a, b) => a - b);
    const sum = (rows: Row[]) => rows.reduce((total, row) => total + row.rps, 0);
    const outboxRatio = {
      median: sortedRatios.length % 2 === 1
        ? (sortedRatios[(sortedRatios.length - 1) / 2] ?? 0)
        : ((sortedRatios[sortedRatios.length / 2 - 1] ?? 0) + (sortedRatios[sortedRatios.length / 2] ?? 0)) / 2,
      min: sortedRatios[0] ?? 0,
      max: sortedRatios.at(-1) ?? 0,
      /** All transfers of the outbox-on rounds over all of the events-off rounds (equal durations). */
      pooled: sum(samples.on) / sum(samples.off),
      all: ratios,
    };

    // The brokers' publishers start at the outbox's end: the earlier runs' events are not theirs to
    // publish (a publisher added to a deployment starts from the first retained event).
    await withBenchDatabase((client) =>
      client.query(
        `insert into outbox_cursors (publisher, position) select p, coalesce((select max(seq) from outbox_events), 0)
         from unnest($1::text[]) as p on conflict (publisher) do update set position = excluded.position`,
        [PUBLISHERS],
      ),
    );
    const startSeq = await withBenchDatabase(async (client) =>
      Number((await client.query<{ seq: string }>('select coalesce(max(seq), 0) as seq from outbox_events')).rows[0]?.seq ?? 0),
    );
    stopService = await startService(eventsEnv);
    // One transfer creates the NATS stream, then the consumers start, in a process of their own.
    await post('/api/v1/transfers', { fromAccountId: accounts[0], toAccountId: accounts[1], amount: 1 }, token, randomUUID());
    const spec: ConsumersSpec = {
      ...(PUBLISHERS.includes('nats') ? { nats: { url: NATS_URL, stream: eventsEnv.EVENTS_NATS_STREAM } } : {}),
      ...(PUBLISHERS.includes('rabbitmq') ? { rabbitmq: { url: AMQP_URL, exchange: eventsEnv.EVENTS_RABBITMQ_EXCHANGE } } : {}),
      ...(PUBLISHERS.includes('redis') ? { redis: { url: REDIS_URL, stream: eventsEnv.EVENTS_REDIS_STREAM } } : {}),
    };
    consumerProcess = spawn(process.execPath, ['--import', 'tsx', 'bench/event-consumers.ts', JSON.stringify(spec)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let consumerOut = '';
    let progress: Array<[string, number]> = [];
    consumerProcess.stdout?.setEncoding('utf8').on('data', (chunk: string) => (consumerOut += chunk));
    consumerProcess.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      const last = chunk.trim().split('\n').at(-1);
      try {
        progress = JSON.parse(last ?? '[]') as Array<[string, number]>;
      } catch {
        // a partial line: the next one will do
      }
    });
    while (!consumerOut.includes('ready')) await sleep(100);
    // Warmed up as the other services were (JIT, the pool's connections, the publishers' first
    // batches): measured cold, the first run paid for all of it.
    await run('warm-up events on', () => distinctPair(pick, pick), WARMUP_SECONDS);
    process.stdout.write(`uniform transfers, events on (${PUBLISHERS.join(', ')})…\n`);
    const uniformCpu = noCpu();
    const uniform = await accounting(uniformCpu, stopService.pid, consumerProcess.pid, () =>
      run(`POST /transfers, random pairs of 1,000 accounts, events on (${PUBLISHERS.join(', ')})`, () => distinctPair(pick, pick)),
    );
    process.stdout.write('hot-account transfers…\n');
    const hotCpu = noCpu();
    const hotRun = await accounting(hotCpu, stopService.pid, consumerProcess.pid, () =>
      run('POST /transfers, 90% touch one hot account, events on', () => {
        if (Math.random() >= 0.9) return distinctPair(pick, pick);
        return Math.random() < 0.5 ? distinctPair(() => hot, pick) : distinctPair(pick, () => hot);
      }),
    );
    // Let the relay drain the backlog the load left, then read what each consumer saw.
    await sleep(1_000); // requests still in flight when the load stopped commit their batches
    const written = await withBenchDatabase(async (client) =>
      Number((await client.query<{ count: string }>('select count(*) from outbox_events where seq > $1', [startSeq])).rows[0]?.count ?? 0),
    );
    const drainStarted = Date.now();
    // The consumers started after the funding: everything from the first events-on transfer on, but
    // for RabbitMQ's, whose queue is bound after that first transfer and so never sees it.
    while (Date.now() - drainStarted < 60_000 && (progress.length === 0 || progress.some(([, count]) => count < written - 1))) {
      await sleep(500);
    }
    await sleep(1_000);
    const reportLine = new Promise<string>((resolve) => {
      const check = setInterval(() => {
        const line = consumerOut.split('\n').find((candidate) => candidate.startsWith('['));
        if (line) {
          clearInterval(check);
          resolve(line);
        }
      }, 100);
    });
    consumerProcess.kill('SIGTERM');
    const reports = JSON.parse(await reportLine) as ConsumerReport[];
    const lagRows = reports.map(
      (report) => `| ${report.name} | ${report.distinct} | ${report.lagP50Ms.toFixed(0)} | ${report.lagP99Ms.toFixed(0)} |`,
    );

    const lines = [
      `Command: \`npm run bench:ledger\` (${SECONDS} s per scenario, ${CONNECTIONS} HTTP connections, PostgreSQL ${ADMIN_URL.replace(/\/\/[^@]*@/, '//')}, ${os.cpus().length} cores, ${new Date().toISOString().slice(0, 10)})`,
      '',
      '| scenario | transfers/s (tps) | p50 ms | p99 ms | non-2xx | ratio to pgbench |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      `| pgbench TPC-B-like, scale 10, 16 clients, -M prepared (baseline) | ${baseline.tps.toFixed(0)} | ${baseline.latencyMs.toFixed(1)} (avg) | – | – | 1.00 |`,
      ...[eventsOff, outboxOnly, uniform, hotRun].map(
        (row) =>
          `| ${row.scenario} | ${row.rps.toFixed(0)} | ${row.p50} | ${row.p99} | ${row.non2xx + row.errors} | ${(row.rps / baseline.tps).toFixed(2)} |`,
      ),
      '',
      `Hot-account throughput is ${(hotRun.rps / uniform.rps).toFixed(2)}× the uniform case. Uniform transfers with the outbox on`,
      `(each transfer's event written in its batch) run at ${outboxRatio.median.toFixed(2)}× events off: the median of ${ratios.length} pairs of ${OUTBOX_ROUND_SECONDS} s runs`,
      `on two services side by side (per-pair range ${outboxRatio.min.toFixed(2)}–${outboxRatio.max.toFixed(2)}; all of the outbox-on runs' transfers over all of the`,
      `events-off runs' ${outboxRatio.pooled.toFixed(2)}; the two rows above are each mode's median run). Per pair, in order:`,
      `${outboxRatio.all.map((ratio) => ratio.toFixed(2)).join(', ')}. With the relay also publishing to`,
      `${PUBLISHERS.join(', ')} and a consumer of each reading (all on the same 2 cores), at ${(uniform.rps / eventsOff.rps).toFixed(2)}× events off.`,
      '',
      `Commit-to-consumer lag per publisher over both events-on scenarios (a real consumer of each broker, in its own process; ${written} events written):`,
      '',
      '| publisher | distinct events received | lag p50 ms | lag p99 ms |',
      '| --- | ---: | ---: | ---: |',
      ...lagRows,
      '',
      'Machine CPU per transfer (µs, from /proc: the service under load, every `postgres` process, the brokers\' servers,',
      'the consumers\' process, this process running autocannon), summed over each mode\'s runs:',
      '',
      `| scenario | service | PostgreSQL | brokers | consumers | load generator | all |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      cpuRow(names.off, roundsCpu.off, samples.off.reduce((total, row) => total + row.total, 0)),
      cpuRow(names.on, roundsCpu.on, samples.on.reduce((total, row) => total + row.total, 0)),
      cpuRow(uniform.scenario, uniformCpu, uniform.total),
      cpuRow(hotRun.scenario, hotCpu, hotRun.total),
    ];
    const table = lines.join('\n');
    process.stdout.write(`\n${table}\n`);
    await mkdir('bench/results', { recursive: true });
    await writeFile('bench/results/ledger-latest.md', `${table}\n`);
  } finally {
    consumerProcess?.kill('SIGKILL');
    await stopService();
    await dropBrokerState(eventsEnv).catch(() => undefined);
    await withAdmin(async (client) => {
      await client.query('drop database if exists bastion_bench_ledger with (force)');
      await client.query('drop database if exists bastion_bench_pgbench with (force)');
    }).catch(() => undefined);
  }
}

await main();
