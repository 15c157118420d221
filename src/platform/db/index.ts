// The database: PostgreSQL through `pg` when DATABASE_URL is set, embedded PGlite otherwise. Both
// are driven through one Kysely instance, so every query and migration runs unchanged on either.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import type { Logger } from '../logger.js';
import { lockDataDir } from './data-dir-lock.js';
import { Mutex, PGliteDialect } from './pglite-dialect.js';
import type { Tables } from './tables.js';

/** What repos run queries on: the database itself or an open transaction. */
export type Executor = Kysely<Tables>;
export type Tx = Transaction<Tables>;

export interface ExclusiveSession {
  /** Runs a multi-statement SQL script (no parameters). */
  execScript(script: string): Promise<void>;
  query<Row>(text: string, params?: readonly unknown[]): Promise<Row[]>;
}

export interface Database {
  readonly db: Kysely<Tables>;
  /** Runs `work` in one transaction; it commits when `work` resolves and rolls back when it throws. */
  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs `work` holding a cluster-wide advisory lock on one session (migrations, key bootstrap). */
  withAdvisoryLock<T>(lockKey: number, work: (session: ExclusiveSession) => Promise<T>): Promise<T>;
  ping(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

interface DatabaseOptions {
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly poolSize: number;
  readonly logger: Logger;
}

// int8 (count(*), sums) arrives as a string from pg; parse to number where safe, else keep exact.
pg.types.setTypeParser(20, (value: string) => {
  const parsed = Number(value);
  return Number.isSafeInteger(parsed) ? parsed : BigInt(value);
});

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  return options.databaseUrl ? openPostgres(options.databaseUrl, options) : openPglite(options.dataDir);
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function openPostgres(connectionString: string, options: DatabaseOptions): Database {
  const pool = new pg.Pool({
    connectionString,
    max: options.poolSize,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 5_000,
    application_name: 'bastion',
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', (error) => options.logger.warn({ err: error }, 'database: idle connection error'));
  // pg-pool removes its error listener from a checked-out client, and a connection that dies
  // between two statements of a transaction then emits an unhandled 'error' that would crash the
  // process. Keep a listener on every client for its whole life; the failed query still rejects
  // and the pool discards the broken client on release.
  pool.on('connect', (client) => {
    client.on('error', (error) => options.logger.warn({ err: error }, 'database: connection lost'));
  });
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    transaction: (work) => db.transaction().execute(work),
    async withAdvisoryLock(lockKey, work) {
      const client = await pool.connect();
      try {
        await client.query('select pg_advisory_lock($1)', [lockKey]);
        try {
          return await work({
            execScript: async (script) => {
              await client.query(script);
            },
            query: async <Row>(text: string, params: readonly unknown[] = []) =>
              (await client.query(text, [...params])).rows as Row[],
          });
        } finally {
          await client.query('select pg_advisory_unlock($1)', [lockKey]);
        }
      } finally {
        client.release();
      }
    },
    ping: (timeoutMs) => withTimeout(sql`select 1`.execute(db).then(() => undefined), timeoutMs, 'database ping'),
    // Kysely's destroy() is a no-op when Kysely itself never ran a query (e.g. only migrations
    // did, on a pooled client): end the pool in any case.
    async close() {
      await db.destroy();
      if (!pool.ended) await pool.end();
    },
  };
}

/**
 * PGlite's own start parameters with a 16 MB buffer pool instead of PostgreSQL's 128 MB: WebAssembly
 * memory never shrinks, so every buffer page once touched stays resident. The embedded database is
 * for one machine's worth of data; reads past the pool come from the OS page cache.
 */
const PGLITE_START_PARAMS: readonly string[] = [...PGlite.defaultStartParams, '-c', 'shared_buffers=16MB'];

// Run by a short-lived child process: creates the data directory (initdb) and exits.
const INITDB_SCRIPT = `
const [pglitePath, dataDir, startParams] = process.argv.slice(1);
const { PGlite } = require(pglitePath);
PGlite.create(dataDir, { startParams: JSON.parse(startParams) }).then((db) => db.close());`;

/**
 * initdb runs two more PostgreSQL instances (a bootstrap one and initdb itself), each with its own
 * WebAssembly memory, which stayed resident after a first start (~830 MB idle, against ~400 MB
 * after a restart on the same directory). A child process gives all of it back when it exits;
 * this process then opens the directory as on any restart.
 */
async function initDataDirInChildProcess(dataDir: string): Promise<void> {
  const pglitePath = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const child = spawn(process.execPath, ['-e', INITDB_SCRIPT, pglitePath, dataDir, JSON.stringify(PGLITE_START_PARAMS)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [exitCode] = (await once(child, 'exit')) as [number | null];
  if (exitCode !== 0) {
    throw new Error(`database: creating the PGlite data directory ${dataDir} failed: ${stderr.trim().split('\n').at(-1) ?? exitCode}`);
  }
}

async function openPglite(dataDir: string): Promise<Database> {
  const inMemory = dataDir === 'memory://' || dataDir.startsWith('memory://');
  let unlock: () => Promise<void> = async () => {};
  if (!inMemory) {
    await mkdir(dataDir, { recursive: true });
    unlock = await lockDataDir(dataDir);
  }
  let pglite: PGlite;
  try {
    if (!inMemory && !existsSync(path.join(dataDir, 'PG_VERSION'))) await initDataDirInChildProcess(dataDir);
    pglite = await PGlite.create(inMemory ? undefined : dataDir, { startParams: [...PGLITE_START_PARAMS] });
  } catch (error) {
    await unlock();
    throw error;
  }
  const dialect = new PGliteDialect(pglite);
  const db = new Kysely<Tables>({ dialect });
  const advisoryLock = new Mutex();
  return {
    db,
    transaction: (work) => db.transaction().execute(work),
    // One process owns a PGlite data directory, so a process-wide mutex is the advisory lock. It
    // is not the connection mutex: work under the lock may still query through `db`.
    async withAdvisoryLock(_lockKey, work) {
      const release = await advisoryLock.lock();
      try {
        return await work({
          execScript: (script) => dialect.driver.exclusive(async (instance) => void (await instance.exec(script))),
          query: <Row>(text: string, params: readonly unknown[] = []) =>
            dialect.driver.exclusive(async (instance) => (await instance.query<Row>(text, [...params])).rows),
        });
      } finally {
        release();
      }
    },
    ping: (timeoutMs) => withTimeout(sql`select 1`.execute(db).then(() => undefined), timeoutMs, 'database ping'),
    async close() {
      try {
        await db.destroy();
        if (!pglite.closed) await pglite.close();
      } finally {
        await unlock();
      }
    },
  };
}

/** Postgres SQLSTATE of a driver error, if it is one. */
export function sqlState(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return undefined;
}
export const UNIQUE_VIOLATION = '23505';

const CONNECTION_STATES = new Set(['57P01', '57P02', '57P03']);
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/**
 * True when the database connection failed (server gone, connection terminated, pool timeout),
 * as opposed to the statement being rejected. Whether a COMMIT in flight took effect is unknown
 * after such an error, so only idempotent work may be retried on it.
 */
export function isConnectionError(error: unknown): boolean {
  const state = sqlState(error);
  if (state !== undefined && (state.startsWith('08') || CONNECTION_STATES.has(state) || CONNECTION_CODES.has(state))) {
    return true;
  }
  return (
    error instanceof Error &&
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
      error.message,
    )
  );
}
