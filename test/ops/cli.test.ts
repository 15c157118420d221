// The command line, run as the operator runs it (`node --import tsx src/main.ts <command>`), against
// fresh databases: migrate (idempotent, safe when two run at once), create-admin (password on stdin),
// keys rotate (old tokens keep verifying; new logins use the new key).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { pgliteBackend, postgresBackend, postgresSkipReason, type TestDatabase } from '../helpers/backends.js';
import { login } from '../helpers/auth.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startServer, type TestServer } from '../helpers/server.js';
import { openDatabase } from '../../src/platform/db/index.js';
import { migrateSchema } from '../../src/schema.js';
import { createLogger } from '../../src/platform/logger.js';
import { jwtKid, REPO_ROOT, runCli, type RunResult } from './service-process.js';

const MIGRATIONS = readdirSync(path.join(REPO_ROOT, 'migrations'))
  .filter((file) => /^\d{4}_[a-z0-9_]+\.sql$/.test(file))
  .sort();
/** What migrate applies on a fresh database: every migration, then the components' routine files. */
const FRESH_SCHEMA = [...MIGRATIONS, 'events routines', 'ledger routines'];

const envFor = (database: TestDatabase): Record<string, string> => ({
  DATA_DIR: database.dataDir,
  ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
  LOG_LEVEL: 'warn',
});

/** The files a `migrate` run reports as applied (empty for "up to date"). */
function appliedFiles(stdout: string): string[] {
  const line = stdout.split('\n').find((candidate) => candidate.startsWith('applied: '));
  if (line) return line.slice('applied: '.length).split(', ').map((file) => file.trim());
  assert.match(stdout, /database is up to date/, `unexpected migrate output: ${stdout}`);
  return [];
}

async function schemaVersions(databaseUrl: string): Promise<number[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ version: number }>('select version from schema_migrations order by version');
    return rows.map((row) => row.version);
  } finally {
    await client.end();
  }
}

/**
 * A command that has done its work must also exit. What is bounded is the time from its last line of
 * output (the work is done) to its exit: a database handle that is never closed keeps the event loop
 * alive, and would show up here instead of as a CLI that "hangs" in a deploy pipeline. The bound is
 * far above a clean exit (milliseconds) and below pg's 30 s idle-connection timeout. How long the work
 * itself takes is not bounded here (only by COMMAND_TIMEOUT_MS): a first PGlite boot under a loaded
 * test run took over 25 s on a 2-core box.
 */
const LINGER_BOUND_MS = 10_000;
const COMMAND_TIMEOUT_MS = 60_000;

function assertExited(result: RunResult, what: string): void {
  assert.ok(
    !result.timedOut,
    `${what} printed ${JSON.stringify(result.stdout.trim())} but was still running ${COMMAND_TIMEOUT_MS} ms after it started ` +
      `and had to be killed (something keeps the event loop alive: is the database handle closed?)\n${result.stderr}`,
  );
  assert.ok(
    result.lingeredMs <= LINGER_BOUND_MS,
    `${what} exited ${Math.round(result.lingeredMs)} ms after its last output (bound ${LINGER_BOUND_MS} ms): ` +
      `something kept the event loop alive after the work was done\n${result.stderr}`,
  );
  assert.deepEqual({ code: result.code, signal: result.signal }, { code: 0, signal: null }, `${what}\n${result.stderr}`);
}

const expectedVersions = () => MIGRATIONS.map((file) => Number(file.slice(0, 4)));

// Independent tests (each on its own database), mostly waiting on child processes: run side by side.
describe('CLI on PostgreSQL', { concurrency: 3 }, async () => {
  const skip = await postgresSkipReason();
  const databases: TestDatabase[] = [];
  const servers: TestServer[] = [];
  after(async () => {
    for (const server of servers) await server.stop().catch(() => undefined);
    await Promise.all(databases.map((database) => database.drop()));
  });
  const freshDatabase = async () => {
    const database = await postgresBackend.createDatabase();
    databases.push(database);
    return database;
  };

  it('when migrate runs on a fresh database, then it applies every migration, a second run is up to date, and each run exits 0 promptly', { skip, timeout: 180_000 }, async () => {
    const database = await freshDatabase();
    const first = await runCli(['migrate'], envFor(database), { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.deepEqual(appliedFiles(first.stdout), FRESH_SCHEMA, first.stderr);
    assert.deepEqual(await schemaVersions(database.databaseUrl!), expectedVersions());

    const second = await runCli(['migrate'], envFor(database), { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.equal(second.stdout.trim(), 'database is up to date', second.stderr);
    assert.deepEqual(await schemaVersions(database.databaseUrl!), expectedVersions());

    assertExited(first, 'the first migrate');
    assertExited(second, 'the second migrate');
  });

  // What `migrate` does in-process. main.ts now ends every command with process.exit(), which hides a
  // leak here: Database.close() is Kysely's destroy(), a no-op when Kysely itself never ran a query —
  // and migrations run on a session taken from the pool directly — so the pool is never ended.
  it('when a database is opened only to migrate, then close() releases every connection', { skip, timeout: 60_000 }, async () => {
    const database = await freshDatabase();
    const name = new URL(database.databaseUrl!).pathname.slice(1);
    const opened = await openDatabase({ databaseUrl: database.databaseUrl, dataDir: 'memory://', poolSize: 2, logger: createLogger('silent') });
    await migrateSchema(opened);
    await opened.close();
    const client = new pg.Client({ connectionString: database.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ count: number }>(
        "select count(*)::int as count from pg_stat_activity where datname = $1 and application_name = 'bastion'",
        [name],
      );
      assert.equal(rows[0]?.count, 0, 'connections of the closed database still open (pool never ended)');
    } finally {
      await client.end();
    }
  });

  it('when two migrate runs start at once on a fresh database, then both exit 0 promptly and each migration is applied exactly once', { skip, timeout: 180_000 }, async () => {
    const database = await freshDatabase();
    const run = () => runCli(['migrate'], envFor(database), { timeoutMs: COMMAND_TIMEOUT_MS });
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(a.stderr + b.stderr, '', 'neither run reports an error');
    const appliedA = appliedFiles(a.stdout);
    const appliedB = appliedFiles(b.stdout);
    assert.deepEqual([...appliedA, ...appliedB].sort(), [...FRESH_SCHEMA].sort(), `a: ${a.stdout} b: ${b.stdout}`);
    assert.deepEqual(await schemaVersions(database.databaseUrl!), expectedVersions());
    assertExited(a, 'the first concurrent migrate');
    assertExited(b, 'the second concurrent migrate');
  });

  it('when create-admin gets the password on stdin, then that admin can log in over HTTP with admin rights', { skip, timeout: 180_000 }, async () => {
    const database = await freshDatabase();
    const password = 'stdin-admin-password-1';
    const created = await runCli(['create-admin', '--email', '  Ops.Admin@Example.COM ', '--name', 'Ops'], envFor(database), {
      stdin: `${password}\n`,
    });
    assertExited(created, 'create-admin');
    assert.match(created.stdout, /^created admin [0-9a-f-]{36} <ops\.admin@example\.com>\n$/);
    assert.doesNotMatch(created.stdout + created.stderr, new RegExp(password), 'the password is never echoed');

    const server = await startServer(postgresBackend, {}, { database });
    servers.push(server);
    const session = await login(server.client, 'ops.admin@example.com', password);
    assert.equal(session.user.role, 'admin');
    assert.equal(session.user.email, 'ops.admin@example.com');
    assert.equal(session.user.name, 'Ops');
    const list = await server.client.get('/api/v1/users', { token: session.accessToken });
    assert.equal(list.status, 200, 'an admin-only route accepts the new admin');
    // The bootstrap admin was not created: an admin already existed.
    const bootstrap = await server.client.post('/api/v1/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    assert.equal(bootstrap.status, 401);
    await server.stop();
  });

  it('when create-admin is misused, then it says why and exits non-zero without creating anyone', { skip, timeout: 180_000 }, async () => {
    const database = await freshDatabase();
    const env = envFor(database);
    const noEmail = await runCli(['create-admin'], env, { stdin: 'long-enough-password\n' });
    assert.equal(noEmail.code, 2);
    assert.match(noEmail.stderr, /--email is required/);

    const shortPassword = await runCli(['create-admin', '--email', 'a@example.com'], env, { stdin: 'short\n' });
    assert.equal(shortPassword.code, 2);
    assert.match(shortPassword.stderr, /8-128 characters/);

    const noStdin = await runCli(['create-admin', '--email', 'a@example.com'], env, { stdin: '' });
    assert.equal(noStdin.code, 2, 'an empty stdin is not a password');

    const first = await runCli(['create-admin', '--email', 'dup@example.com'], env, { stdin: 'long-enough-password\n' });
    assertExited(first, 'create-admin');
    const again = await runCli(['create-admin', '--email', 'DUP@example.com'], env, { stdin: 'long-enough-password\n' });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^create-admin: EMAIL_TAKEN: /);
  });

  it('when keys rotate runs, then old tokens still verify on a new instance, JWKS lists both kids, and new logins use the new kid', { skip, timeout: 180_000 }, async () => {
    const database = await freshDatabase();
    const before = await startServer(postgresBackend, {}, { database });
    servers.push(before);
    const oldSession = await login(before.client, ADMIN_EMAIL, ADMIN_PASSWORD);
    const oldKid = jwtKid(oldSession.accessToken);
    assert.ok(oldKid, 'access tokens carry a kid');

    const rotated = await runCli(['keys', 'rotate'], envFor(database));
    assertExited(rotated, 'keys rotate');
    const newKid = /new signing key (\S+);/.exec(rotated.stdout)?.[1];
    assert.ok(newKid, `unexpected output: ${rotated.stdout}`);
    assert.notEqual(newKid, oldKid);

    // A new instance on the same database, started after the rotation.
    const afterRotation = await startServer(postgresBackend, {}, { database });
    servers.push(afterRotation);
    const me = await afterRotation.client.get<{ data: { email: string } }>('/api/v1/users/me', { token: oldSession.accessToken });
    assert.equal(me.status, 200, `a token signed before the rotation is still accepted: ${me.text}`);
    assert.equal(me.body.data.email, ADMIN_EMAIL);

    const jwks = await afterRotation.client.get<{ keys: Array<{ kid: string; d?: unknown }> }>('/.well-known/jwks.json');
    assert.equal(jwks.status, 200);
    const kids = jwks.body.keys.map((key) => key.kid);
    assert.ok(kids.includes(oldKid) && kids.includes(newKid), `JWKS kids: ${kids.join(', ')}`);
    assert.ok(jwks.body.keys.every((key) => key.d === undefined), 'no private component is published');

    const newSession = await login(afterRotation.client, ADMIN_EMAIL, ADMIN_PASSWORD);
    assert.equal(jwtKid(newSession.accessToken), newKid, 'new logins are signed with the new key');

    // The instance that was already running verifies both: its own old key, and (after it meets the
    // unknown kid and reloads) the new one.
    const oldOnOld = await before.client.get('/api/v1/users/me', { token: oldSession.accessToken });
    assert.equal(oldOnOld.status, 200);
    const newOnOld = await before.client.get('/api/v1/users/me', { token: newSession.accessToken });
    assert.equal(newOnOld.status, 200, `the running instance accepts a token of the rotated-in key: ${newOnOld.text}`);

    await afterRotation.stop();
    await before.stop();
  });
});

describe('CLI on embedded PGlite (DATA_DIR)', { concurrency: 2 }, () => {
  const directories: string[] = [];
  after(async () => {
    await Promise.all(directories.map((directory) => rm(directory, { recursive: true, force: true })));
  });
  const freshDirectory = async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), 'bastion-cli-'));
    directories.push(directory);
    return directory;
  };

  it('when migrate runs on a fresh data directory, then it applies every migration, a second run is up to date, and each run exits 0 promptly', { timeout: 180_000 }, async () => {
    const dataDir = path.join(await freshDirectory(), 'data');
    const env = { DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    const first = await runCli(['migrate'], env, { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.deepEqual(appliedFiles(first.stdout), FRESH_SCHEMA, first.stderr);
    const second = await runCli(['migrate'], env, { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.equal(second.stdout.trim(), 'database is up to date', second.stderr);
    assertExited(first, 'the first migrate');
    assertExited(second, 'the second migrate');
  });

  it('when a service holds the data directory, then migrate refuses with one line naming it and exits 1; once the service stops, migrate runs', { timeout: 180_000 }, async () => {
    const dataDir = path.join(await freshDirectory(), 'data');
    const env = { DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    // The service runs in this test's process: a different process from the CLI's.
    const server = await startServer(pgliteBackend, {}, { database: { databaseUrl: undefined, dataDir, drop: async () => undefined } });
    let stopped = false;
    try {
      const refused = await runCli(['migrate'], env, { timeoutMs: COMMAND_TIMEOUT_MS });
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.equal(refused.stdout, '', 'nothing was applied');
      assert.match(refused.stderr, new RegExp(`^bastion: could not open the database: DATA_DIR .* is in use by process ${process.pid};`));
      assert.equal(refused.stderr.trim().split('\n').length, 1, `one line, no stack trace: ${refused.stderr}`);
      const ready = await server.client.get('/health/ready');
      assert.equal(ready.status, 200, 'the owner keeps running');
      await server.stop();
      stopped = true;
      const after = await runCli(['migrate'], env, { timeoutMs: COMMAND_TIMEOUT_MS });
      assert.equal(after.stdout.trim(), 'database is up to date', after.stderr);
      assertExited(after, 'migrate after the service stopped');
    } finally {
      if (!stopped) await server.stop();
    }
  });

  it('when create-admin writes to a data directory, then a service started on it lets that admin log in', { timeout: 180_000 }, async () => {
    const dataDir = path.join(await freshDirectory(), 'data');
    const created = await runCli(['create-admin', '--email', 'local.admin@example.com'], { DATA_DIR: dataDir, LOG_LEVEL: 'warn' }, {
      stdin: 'local-admin-password\n',
    });
    assertExited(created, 'create-admin');
    const server = await startServer(pgliteBackend, {}, {
      database: { databaseUrl: undefined, dataDir, drop: async () => undefined },
    });
    try {
      const session = await login(server.client, 'local.admin@example.com', 'local-admin-password');
      assert.equal(session.user.role, 'admin');
    } finally {
      await server.stop();
    }
  });
});
