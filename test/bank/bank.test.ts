// A bank test in the style of Jepsen's: many concurrent transfers, deposits and withdrawals over real
// HTTP, each with a unique idempotency key and retried with the same key on network errors and 5xx,
// while the server process is killed with SIGKILL and restarted, and (on PostgreSQL) its database
// connections are terminated. Afterwards every acknowledged movement exists exactly once, every
// failed one moved nothing, every replay is identical, each currency sums to zero, no user balance
// is negative and the ledger check passes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { checkLedger } from '../../src/components/ledger/index.js';
import { createLogger } from '../../src/platform/logger.js';
import { openDatabase } from '../../src/platform/db/index.js';
import { pgliteBackend, postgresBackend, type TestDatabase } from '../helpers/backends.js';
import { untilReady } from '../helpers/poll.js';
import { freePort } from '../helpers/ports.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD } from '../helpers/server.js';

const ACCOUNTS = 20;
const INITIAL_BALANCE = 100_000;

type MovementKind = 'transfer' | 'deposit' | 'withdrawal';

interface Movement {
  readonly kind: MovementKind;
  readonly path: string;
  readonly key: string;
  readonly body: { fromAccountId: string; toAccountId: string; amount: number } | { amount: number };
  /** The user account debited and credited (null: the currency's system account). */
  readonly debited: string | null;
  readonly credited: string | null;
  readonly amount: number;
}

interface Definite extends Movement {
  readonly status: number;
  readonly text: string;
  /** More than 1: the first tries met a network error, a 5xx or a 409, and the same key was sent again. */
  readonly attempts: number;
}

const debug = (line: string) => {
  if (process.env['BANK_DEBUG']) process.stdout.write(`# ${new Date().toISOString()} ${line}\n`);
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class ServerProcess {
  child: ChildProcess | undefined;
  restarts = 0;
  constructor(
    readonly port: number,
    readonly env: Record<string, string>,
  ) {}

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'serve'], {
      env: { ...process.env, ...this.env, PORT: String(this.port), HOST: '127.0.0.1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    this.child = child;
    const ready = await untilReady(this.baseUrl, {
      timeoutMs: 60_000,
      check: () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`server exited with ${child.exitCode ?? child.signalCode}: ${stderr}`);
        }
      },
    });
    if (!ready) throw new Error(`server did not become ready: ${stderr}`);
  }

  async kill(): Promise<void> {
    const child = this.child;
    // A process killed by a signal has signalCode set and exitCode null.
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.restarts++;
  }
}

async function call(
  baseUrl: string,
  method: string,
  urlPath: string,
  options: { token?: string; body?: unknown; key?: string } = {},
): Promise<{ status: number; text: string; replayed: boolean } | 'network-error'> {
  try {
    const response = await fetch(`${baseUrl}${urlPath}`, {
      method,
      headers: {
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(options.key ? { 'idempotency-key': options.key } : {}),
      },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(15_000),
    });
    return { status: response.status, text: await response.text(), replayed: response.headers.get('idempotent-replayed') === 'true' };
  } catch {
    return 'network-error';
  }
}

/** Sends until the answer is definite (2xx or 4xx other than 409 in-progress / 429). */
async function untilDefinite(
  server: ServerProcess,
  method: string,
  urlPath: string,
  options: { token: string; body?: unknown; key?: string },
): Promise<{ status: number; text: string; replayed: boolean; attempts: number }> {
  let last: Awaited<ReturnType<typeof call>> | undefined;
  for (let attempt = 0; attempt < 400; attempt++) {
    const result = await call(server.baseUrl, method, urlPath, options);
    if (result !== 'network-error' && result.status < 500 && result.status !== 409 && result.status !== 429) {
      return { ...result, attempts: attempt + 1 };
    }
    last = result;
    await sleep(50 + Math.random() * 150);
  }
  throw new Error(
    `no definite answer for ${method} ${urlPath} ${options.key ?? ''}; last: ${last === 'network-error' ? last : `${last?.status} ${last?.text}`}`,
  );
}

async function runBank(options: {
  env: Record<string, string>;
  transfers: number;
  workers: number;
  kills: number;
  terminateConnections?: (count: number) => Promise<void>;
  verifyDatabase: (check: (db: Parameters<typeof checkLedger>[0]) => Promise<void>) => Promise<void>;
}) {
  const server = new ServerProcess(await freePort(), {
    ...options.env,
    BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
    BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
    RATE_LIMIT_MAX: '100000000',
    LOG_LEVEL: 'warn',
  });
  await server.start();
  try {
    const login = await untilDefinite(server, 'POST', '/api/v1/auth/login', {
      token: '',
      body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
    });
    assert.equal(login.status, 200, login.text);
    const token = (JSON.parse(login.text) as { data: { accessToken: string } }).data.accessToken;

    const accountIds: string[] = [];
    for (let index = 0; index < ACCOUNTS; index++) {
      const created = await untilDefinite(server, 'POST', '/api/v1/accounts', { token, body: { currency: 'USD' } });
      assert.equal(created.status, 201, created.text);
      const id = (JSON.parse(created.text) as { data: { id: string } }).data.id;
      const deposit = await untilDefinite(server, 'POST', `/api/v1/accounts/${id}/deposits`, {
        token,
        key: `seed-${id}`,
        body: { amount: INITIAL_BALANCE },
      });
      assert.equal(deposit.status, 201, deposit.text);
      accountIds.push(id);
    }

    const definite: Definite[] = [];
    const replayMismatches: string[] = [];
    let next = 0;
    let finished = false;
    // `transfers` is a minimum: the load goes on until the chaos has done all its kills too.
    let chaosQuotaMet = false;
    const pickAccount = () => accountIds[Math.floor(Math.random() * ACCOUNTS)] ?? '';
    /** Mostly transfers; one in five a deposit, one in five a withdrawal (keyed, as the contract requires). */
    const nextMovement = (index: number): Movement => {
      const amount = 1 + Math.floor(Math.random() * 20_000);
      const key = `bank-${index}`;
      const draw = Math.random();
      const account = pickAccount();
      if (draw < 0.2) {
        return { kind: 'deposit', path: `/api/v1/accounts/${account}/deposits`, key, body: { amount }, debited: null, credited: account, amount };
      }
      if (draw < 0.4) {
        return { kind: 'withdrawal', path: `/api/v1/accounts/${account}/withdrawals`, key, body: { amount }, debited: account, credited: null, amount };
      }
      let to = account;
      while (to === account) to = pickAccount();
      const body = { fromAccountId: account, toAccountId: to, amount };
      return { kind: 'transfer', path: '/api/v1/transfers', key, body, debited: account, credited: to, amount };
    };
    const worker = async () => {
      while (next < options.transfers || !chaosQuotaMet) {
        const movement = nextMovement(next++);
        const request = { token, body: movement.body, key: movement.key };
        const result = await untilDefinite(server, 'POST', movement.path, request);
        definite.push({ ...movement, status: result.status, text: result.text, attempts: result.attempts });
        if (Math.random() < 0.1) {
          // Replay while the chaos goes on: same answer, byte for byte, flagged as a replay.
          const again = await untilDefinite(server, 'POST', movement.path, request);
          if (again.status !== result.status || again.text !== result.text || !again.replayed) replayMismatches.push(movement.key);
        }
      }
    };
    const chaos = async () => {
      let kills = 0;
      let terminations = 0;
      while (!finished) {
        chaosQuotaMet = kills >= options.kills && (!options.terminateConnections || terminations >= options.kills);
        await sleep(500 + Math.random() * 1_000);
        if (finished) break;
        if (kills < options.kills && (terminations >= kills || !options.terminateConnections)) {
          debug(`chaos: SIGKILL #${kills + 1} after ${definite.length} answers`);
          await server.kill();
          kills++;
          await server.start();
          debug('chaos: restarted');
        } else if (options.terminateConnections) {
          debug(`chaos: terminating database connections #${terminations + 1}`);
          await options.terminateConnections(++terminations);
        }
      }
      return { kills, terminations };
    };
    const chaosDone = chaos();
    await Promise.all(Array.from({ length: options.workers }, worker));
    debug(`workers done: ${definite.length} answers`);
    finished = true;
    const chaosCounts = await chaosDone;
    debug(`chaos done: ${JSON.stringify(chaosCounts)}`);
    assert.ok(chaosCounts.kills >= Math.min(1, options.kills), 'the server was killed at least once during the run');

    // Every answer is final: replaying any key gives the same status and the same bytes.
    for (const result of definite) {
      const again = await untilDefinite(server, 'POST', result.path, { token, body: result.body, key: result.key });
      if (again.status !== result.status || again.text !== result.text || !again.replayed) replayMismatches.push(result.key);
    }
    debug(`replays done: ${replayMismatches.length} mismatches`);
    assert.deepEqual(replayMismatches, [], 'every replay returns the first answer byte for byte');

    const statuses = new Set(definite.map((result) => result.status));
    assert.ok([...statuses].every((status) => status === 201 || status === 422), `only 201 and 422 answers: ${[...statuses]}`);
    const acknowledged = definite.filter((result) => result.status === 201);
    assert.ok(acknowledged.length > options.transfers / 4, `enough transfers went through (${acknowledged.length})`);
    const count = (kind: MovementKind) => acknowledged.filter((result) => result.kind === kind).length;
    assert.ok(count('deposit') > 0 && count('withdrawal') > 0, 'deposits and withdrawals went through too');
    // A withdrawal that cannot be covered is the only 422 a deposit or withdrawal may give.
    for (const result of definite) {
      if (result.kind === 'deposit') assert.equal(result.status, 201, result.text);
    }

    // The model: every acknowledged movement applied once, every failed one not at all.
    const expected = new Map(accountIds.map((id) => [id, INITIAL_BALANCE]));
    let deposited = ACCOUNTS * INITIAL_BALANCE;
    for (const result of acknowledged) {
      if (result.debited) expected.set(result.debited, (expected.get(result.debited) ?? 0) - result.amount);
      if (result.credited) expected.set(result.credited, (expected.get(result.credited) ?? 0) + result.amount);
      if (result.kind === 'deposit') deposited += result.amount;
      if (result.kind === 'withdrawal') deposited -= result.amount;
    }
    let total = 0;
    for (const id of accountIds) {
      const account = await untilDefinite(server, 'GET', `/api/v1/accounts/${id}`, { token });
      const balance = (JSON.parse(account.text) as { data: { balance: number } }).data.balance;
      assert.equal(balance, expected.get(id), `balance of ${id}`);
      assert.ok(balance >= 0);
      total += balance;
    }
    assert.equal(total, deposited, 'money is conserved: user balances are what was deposited minus what was withdrawn');
    const systems = await untilDefinite(server, 'GET', '/api/v1/accounts?system=true', { token });
    const system = (JSON.parse(systems.text) as { data: { currency: string; balance: number }[] }).data.find((account) => account.currency === 'USD');
    assert.equal(system?.balance, -total, 'the USD system account is minus the sum of user balances');

    const acknowledgedIds = acknowledged.map((result) => (JSON.parse(result.text) as { data: { id: string } }).data.id);
    debug('balances verified');
    await server.kill();
    debug('server stopped; verifying the database');
    await options.verifyDatabase(async (db) => {
      const rows = await db.selectFrom('transfers').select(['id', 'kind']).execute();
      const present = new Set(rows.map((row) => row.id));
      const stored = (kind: MovementKind) => rows.filter((row) => row.kind === kind).length;
      assert.equal(stored('transfer'), count('transfer'), 'exactly the acknowledged transfers exist');
      assert.equal(stored('deposit'), ACCOUNTS + count('deposit'), 'exactly the seed and the acknowledged deposits exist');
      assert.equal(stored('withdrawal'), count('withdrawal'), 'exactly the acknowledged withdrawals exist');
      for (const id of acknowledgedIds) assert.ok(present.has(id), `acknowledged movement ${id} is present`);
      const report = await checkLedger(db);
      assert.deepEqual(report.violations, {});
      assert.ok(report.ok);
    });
    return {
      acknowledged: acknowledged.length,
      deposits: count('deposit'),
      withdrawals: count('withdrawal'),
      // Deposits and withdrawals answered only after a retry of their key: the chaos hit them.
      retriedDepositsAndWithdrawals: definite.filter((result) => result.kind !== 'transfer' && result.attempts > 1).length,
      failed: definite.length - acknowledged.length,
      ...chaosCounts,
    };
  } finally {
    await server.kill();
  }
}

describe('bank test under crashes', async () => {
  const skip = await postgresBackend.skipReason();
  let database: TestDatabase | undefined;
  let dataDir: string | undefined;
  after(async () => {
    await database?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('when the server is SIGKILLed and its PostgreSQL connections terminated mid-load (transfers, deposits, withdrawals), then no money is created, lost or moved twice', { skip, timeout: 300_000 }, async () => {
    database = await postgresBackend.createDatabase();
    const databaseUrl = database.databaseUrl ?? '';
    const databaseName = new URL(databaseUrl).pathname.slice(1);
    const terminate = async () => {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        await client.query(
          "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = 'bastion' and pid <> pg_backend_pid()",
          [databaseName],
        );
      } finally {
        await client.end();
      }
    };
    const result = await runBank({
      env: { DATABASE_URL: databaseUrl, DATABASE_POOL_SIZE: '8' },
      transfers: Number(process.env['BANK_TRANSFERS'] ?? 2_000),
      workers: 32,
      kills: 4,
      terminateConnections: terminate,
      verifyDatabase: async (check) => {
        const opened = await openDatabase({ databaseUrl, dataDir: 'memory://', poolSize: 2, logger: createLogger('silent') });
        try {
          await check(opened.db);
        } finally {
          await opened.close();
        }
      },
    });
    process.stdout.write(`# bank (postgres): ${JSON.stringify(result)}\n`);
  });

  it('when the embedded PGlite server is SIGKILLed mid-load, then every acknowledged transfer survives the restart', { timeout: 300_000 }, async () => {
    // The schema already in place (a copy of the run's migrated template): what is tested is the restarts.
    dataDir = (await pgliteBackend.createDatabase({ pgliteTemplate: true })).dataDir;
    const result = await runBank({
      env: { DATA_DIR: dataDir },
      transfers: Number(process.env['BANK_TRANSFERS_PGLITE'] ?? 500),
      workers: 16,
      kills: 3,
      verifyDatabase: async (check) => {
        const opened = await openDatabase({ databaseUrl: undefined, dataDir: dataDir ?? '', poolSize: 1, logger: createLogger('silent') });
        try {
          await check(opened.db);
        } finally {
          await opened.close();
        }
      },
    });
    process.stdout.write(`# bank (pglite on disk): ${JSON.stringify(result)}\n`);
  });
});
