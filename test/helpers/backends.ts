// The databases a suite runs against: PGlite always; PostgreSQL when reachable. In CI (CI=true or
// BASTION_REQUIRE_SERVICES=1) an unreachable PostgreSQL (or Redis, for the suites that need it) fails
// the suite instead of skipping it.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';

export interface TestDatabase {
  /** DATABASE_URL for the server under test (undefined: PGlite). */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  drop(): Promise<void>;
}

export interface Backend {
  readonly name: 'pglite' | 'postgres';
  /** undefined when usable, else why the suite is skipped. */
  skipReason(): Promise<string | undefined>;
  createDatabase(): Promise<TestDatabase>;
}

export const servicesRequired = (): boolean =>
  ['1', 'true'].includes((process.env['CI'] ?? '').toLowerCase()) || process.env['BASTION_REQUIRE_SERVICES'] === '1';

export const ADMIN_POSTGRES_URL = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

let postgresProbe: Promise<string | undefined> | undefined;

/** undefined if PostgreSQL answers; throws in CI when it does not; else the reason to skip. */
export function postgresSkipReason(): Promise<string | undefined> {
  postgresProbe ??= (async () => {
    const client = new pg.Client({ connectionString: ADMIN_POSTGRES_URL, connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
      await client.query('select 1');
      return undefined;
    } catch (error) {
      const reason = `PostgreSQL unreachable at ${ADMIN_POSTGRES_URL} (${(error as Error).message})`;
      if (servicesRequired()) throw new Error(`${reason}; CI requires it`);
      process.stdout.write(`# SKIP postgres suites: ${reason}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);
      return reason;
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return postgresProbe;
}

export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

let redisProbe: Promise<string | undefined> | undefined;

/** undefined if Redis answers PING; throws in CI when it does not; else the reason to skip. */
export function redisSkipReason(): Promise<string | undefined> {
  redisProbe ??= (async () => {
    const client = new Redis(TEST_REDIS_URL, {
      lazyConnect: true,
      connectTimeout: 3_000,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    let lastError: Error | undefined;
    client.on('error', (error: Error) => (lastError = error));
    try {
      await client.connect();
      const answer = await client.ping();
      if (answer !== 'PONG') throw new Error(`PING answered ${answer}`);
      return undefined;
    } catch (error) {
      const reason = `Redis unreachable at ${TEST_REDIS_URL} (${(lastError ?? (error as Error)).message})`;
      if (servicesRequired()) throw new Error(`${reason}; CI requires it`);
      process.stdout.write(`# SKIP redis suites: ${reason}. Set BASTION_REQUIRE_SERVICES=1 to fail instead.\n`);
      return reason;
    } finally {
      client.disconnect();
    }
  })();
  return redisProbe;
}

export const pgliteBackend: Backend = {
  name: 'pglite',
  skipReason: async () => undefined,
  // A data directory on disk, as the service's default: memory:// keeps the database in the JS heap,
  // where garbage collection slows every request (and timing-sensitive suites) by a fifth or more.
  createDatabase: async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bastion-test-'));
    return { databaseUrl: undefined, dataDir, drop: () => rm(dataDir, { recursive: true, force: true }) };
  },
};

export const postgresBackend: Backend = {
  name: 'postgres',
  skipReason: postgresSkipReason,
  async createDatabase() {
    const name = `bastion_test_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: ADMIN_POSTGRES_URL });
    await admin.connect();
    try {
      await admin.query(`create database ${name}`);
    } finally {
      await admin.end();
    }
    const url = new URL(ADMIN_POSTGRES_URL);
    url.pathname = `/${name}`;
    return {
      databaseUrl: url.toString(),
      dataDir: 'memory://',
      async drop() {
        const client = new pg.Client({ connectionString: ADMIN_POSTGRES_URL });
        await client.connect();
        try {
          await client.query(`drop database if exists ${name} with (force)`);
        } finally {
          await client.end();
        }
      },
    };
  },
};

export const backends: readonly Backend[] = [pgliteBackend, postgresBackend];
