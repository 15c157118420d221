// The databases a suite runs against: PGlite always; PostgreSQL when reachable. In CI (CI=true or
// BASTION_REQUIRE_SERVICES=1) an unreachable PostgreSQL (or Redis, for the suites that need it) fails
// the suite instead of skipping it.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
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

export interface CreateDatabaseOptions {
  /**
   * PGlite: a copy of a data directory the schema was migrated into once (per `npm test` run, else
   * per process), instead of an empty one: no initdb and no migrations, which cost ~8 s per database
   * (~20 s with the other test lane busy). PostgreSQL: an empty database as without it (its
   * migrations take well under a second). Either way the caller still migrates, as the service does
   * on start (a no-op on the copy). Leave it off where a first start on an empty directory is tested.
   */
  readonly pgliteTemplate?: boolean;
}

export interface Backend {
  readonly name: 'pglite' | 'postgres';
  /** undefined when usable, else why the suite is skipped. */
  skipReason(): Promise<string | undefined>;
  createDatabase(options?: CreateDatabaseOptions): Promise<TestDatabase>;
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

/**
 * Where the migrated PGlite template lives: the directory scripts/test.mjs makes for its run (and
 * removes after it), shared by every test process of the run; else one of this process's own.
 */
export const PGLITE_TEMPLATE_ENV = 'BASTION_TEST_PGLITE_TEMPLATE_ROOT';
let pgliteTemplate: Promise<string> | undefined;

/** The migrated template's path, made by the first process of the run that needs it. */
function migratedPgliteTemplate(): Promise<string> {
  pgliteTemplate ??= (async () => {
    let root = process.env[PGLITE_TEMPLATE_ENV];
    if (!root) {
      const own = mkdtempSync(path.join(os.tmpdir(), 'bastion-template-'));
      process.once('exit', () => rmSync(own, { recursive: true, force: true }));
      root = own;
    }
    const template = path.join(root, 'schema');
    // Complete once it exists: it is built aside and renamed into place.
    if (existsSync(template)) return template;
    await mkdir(root, { recursive: true });
    const building = await mkdtemp(path.join(root, 'building-'));
    try {
      // Loaded here only: most suites that import this module never build the template.
      const [{ openDatabase }, { migrateSchema }, { createLogger }] = await Promise.all([
        import('../../src/platform/db/index.js'),
        import('../../src/schema.js'),
        import('../../src/platform/logger.js'),
      ]);
      const database = await openDatabase({ databaseUrl: undefined, dataDir: building, poolSize: 1, logger: createLogger('silent') });
      try {
        await migrateSchema(database);
      } finally {
        await database.close();
      }
      try {
        await rename(building, template);
      } catch (error) {
        // Another process of the run renamed its build into place first: use that one.
        if (!existsSync(template)) throw error;
      }
      return template;
    } finally {
      await rm(building, { recursive: true, force: true });
    }
  })();
  return pgliteTemplate;
}

export const pgliteBackend: Backend = {
  name: 'pglite',
  skipReason: async () => undefined,
  // A data directory on disk, as the service's default: memory:// keeps the database in the JS heap,
  // where garbage collection slows every request (and timing-sensitive suites) by a fifth or more.
  createDatabase: async (options = {}) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bastion-test-'));
    const drop = () => rm(dataDir, { recursive: true, force: true });
    if (options.pgliteTemplate) {
      try {
        await cp(await migratedPgliteTemplate(), dataDir, { recursive: true });
      } catch (error) {
        await drop();
        throw error;
      }
    }
    return { databaseUrl: undefined, dataDir, drop };
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
