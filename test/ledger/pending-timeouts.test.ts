// The expiry sweep's list of pending transfers that can still time out (pending_timeouts,
// migration 0018): an existing ledger upgraded to it lists exactly its unresolved timed reservations,
// and afterwards the trigger on transfers keeps the list exact as transfers are reserved, posted,
// voided and expired through the ledger, so a tick reads only what is still open however much the
// ledger resolved.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { checkLedger } from '../../src/components/ledger/index.js';
import { findExpiredPending } from '../../src/components/ledger/ledger.repo.js';
import { openDatabase, type Database } from '../../src/platform/db/index.js';
import { migrate } from '../../src/platform/db/migrate.js';
import { createLogger } from '../../src/platform/logger.js';
import { migrateSchema } from '../../src/schema.js';
import { loginAdmin } from '../helpers/auth.js';
import { postgresBackend, postgresSkipReason, type TestDatabase } from '../helpers/backends.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';

const MIGRATIONS = path.resolve(import.meta.dirname, '../../migrations');
const TIMEOUTS_MIGRATION = '0018_pending_timeouts.sql';

describe('migration 0018 on a ledger that already has pending transfers (PostgreSQL)', () => {
  let skip: string | undefined;
  let testDatabase: TestDatabase | undefined;
  let database: Database | undefined;
  let before0018: string | undefined;
  before(async () => {
    skip = await postgresSkipReason();
    if (skip) return;
    testDatabase = await postgresBackend.createDatabase();
    database = await openDatabase({ databaseUrl: testDatabase.databaseUrl, dataDir: testDatabase.dataDir, poolSize: 2, logger: createLogger('silent') });
    before0018 = await mkdtemp(path.join(os.tmpdir(), 'bastion-migrations-'));
    for (const file of await readdir(MIGRATIONS)) {
      if (/^\d{4}_.*\.sql$/.test(file) && file < TIMEOUTS_MIGRATION) await cp(path.join(MIGRATIONS, file), path.join(before0018, file));
    }
  });
  after(async () => {
    await database?.close();
    await testDatabase?.drop();
    if (before0018) await rm(before0018, { recursive: true, force: true });
  });

  it('when the schema moves to 0018, then the list holds exactly the unresolved pending transfers with a timeout, with their expiry', async (t) => {
    if (skip) return t.skip(skip);
    const db = database!.db;
    await migrate(database!, { migrationsDir: before0018!, routines: [] });
    // A ledger as the earlier schema left it: pending transfers open and resolved, timed and not.
    const now = Date.now();
    const user = randomUUID();
    const [from, to] = [randomUUID(), randomUUID()];
    await sql`insert into users (id, email, name, role, password_hash, created_at, updated_at)
              values (${user}, 'owner@example.com', 'Owner', 'user', 'x', now(), now())`.execute(db);
    await sql`insert into accounts (id, owner_id, currency, balance, pending_debits, created_at, updated_at)
              values (${from}, ${user}, 'USD', 100, 0, now(), now()), (${to}, ${user}, 'USD', 0, 0, now(), now())`.execute(db);
    const pending = (expiresAt: Date | null) => ({ id: randomUUID(), expiresAt });
    const openTimed = [pending(new Date(now - 60_000)), pending(new Date(now + 3_600_000))];
    const openUntimed = pending(null);
    const resolvedTimed = [pending(new Date(now - 120_000)), pending(new Date(now - 30_000)), pending(new Date(now + 60_000))];
    for (const transfer of [...openTimed, openUntimed, ...resolvedTimed]) {
      await sql`insert into transfers (id, kind, from_account_id, to_account_id, amount, currency, pending, expires_at, created_at)
                values (${transfer.id}, 'transfer', ${from}, ${to}, 1, 'USD', true, ${transfer.expiresAt}, now())`.execute(db);
    }
    for (const [index, transfer] of resolvedTimed.entries()) {
      await sql`insert into transfers (id, kind, from_account_id, to_account_id, amount, currency, pending_id, created_at)
                values (${randomUUID()}, ${['post', 'void', 'expire'][index]!}, ${from}, ${to}, 1, 'USD', ${transfer.id}, now())`.execute(db);
    }

    const applied = await migrateSchema(database!);
    assert.ok(applied.applied.includes(TIMEOUTS_MIGRATION), JSON.stringify(applied));
    const { rows } = await sql<{ transfer_id: string; expires_at: Date }>`
      select transfer_id, expires_at from pending_timeouts order by expires_at`.execute(db);
    assert.deepEqual(
      rows.map((row) => ({ id: row.transfer_id, expiresAt: row.expires_at.getTime() })),
      openTimed.map((transfer) => ({ id: transfer.id, expiresAt: transfer.expiresAt!.getTime() })),
    );
    // The sweep sees the one past its expiry, and nothing it already resolved.
    assert.deepEqual(await findExpiredPending(db, new Date(now), 100), [openTimed[0]!.id]);
  });
});

describeOnBackends('the expiry list as the ledger runs', ({ it, before, startServer }) => {
  let server: Awaited<ReturnType<typeof startServer>>;
  let token: string;
  before(async () => {
    server = await startServer({ PENDING_SWEEP_INTERVAL_MS: '100' });
    token = (await loginAdmin(server.client)).accessToken;
  });

  const post = async (route: string, body: unknown) => {
    const response = await server.client.post<{ data: { id: string; status: string } }>(route, body, {
      token,
      headers: { 'idempotency-key': randomUUID() },
    });
    assert.ok(response.status === 201 || response.status === 200, `${route}: ${response.status} ${response.text}`);
    return response.body.data;
  };
  const listed = async (): Promise<string[]> =>
    (await sql<{ transfer_id: string }>`select transfer_id from pending_timeouts order by transfer_id`.execute(server.app.database.db)).rows.map(
      (row) => row.transfer_id,
    );

  it('when timed reservations are posted, voided, left to expire or left open, then only the open ones stay listed and the ledger check agrees', async () => {
    const [from, to] = [
      await post('/api/v1/accounts', { currency: 'USD' }),
      await post('/api/v1/accounts', { currency: 'USD' }),
    ];
    await post(`/api/v1/accounts/${from.id}/deposits`, { amount: 1_000 });
    const reserve = (timeoutSeconds?: number) =>
      post('/api/v1/transfers', { fromAccountId: from.id, toAccountId: to.id, amount: 10, pending: true, ...(timeoutSeconds ? { timeoutSeconds } : {}) });
    const [toPost, toVoid, toExpire, open] = [await reserve(3_600), await reserve(3_600), await reserve(1), await reserve(3_600)];
    const untimed = await reserve();
    assert.equal(untimed.status, 'pending');
    assert.deepEqual(await listed(), [toPost.id, toVoid.id, toExpire.id, open.id].sort());

    await post(`/api/v1/transfers/${toPost.id}/post`, {});
    await post(`/api/v1/transfers/${toVoid.id}/void`, {});
    // The sweep (every 100 ms here) expires the one whose second ran out.
    const deadline = Date.now() + 10_000;
    while ((await listed()).includes(toExpire.id) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(await listed(), [open.id]);
    const expired = await server.client.get<{ data: { status: string } }>(`/api/v1/transfers/${toExpire.id}`, { token });
    assert.equal(expired.body.data.status, 'expired');
    const report = await checkLedger(server.app.database.db);
    assert.deepEqual(report.violations, {});
  });
});
