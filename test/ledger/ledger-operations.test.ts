// The ledger's operational tools: the `ledger check` command on a live PostgreSQL database (exit 0
// on balanced books, exit 1 naming the offending ids otherwise), and the purge of idempotency keys
// older than their 24 h lifetime.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { postgresBackend } from '../helpers/backends.js';
import { loginAdmin } from '../helpers/auth.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../ops/service-process.js';

describe('ledger operations [postgres]', async () => {
  const skip = await postgresBackend.skipReason();
  let server: TestServer;
  let token: string;
  let accountId: string;
  before(async () => {
    if (skip) return;
    server = await startServer(postgresBackend);
    token = (await loginAdmin(server.client)).accessToken;
    const created = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'EUR' }, { token });
    accountId = created.body.data.id;
    const deposit = await server.client.post(
      `/api/v1/accounts/${accountId}/deposits`,
      { amount: 5_000 },
      { token, headers: { 'idempotency-key': randomUUID() } },
    );
    assert.equal(deposit.status, 201);
  });
  after(async () => server?.stop());

  const check = () =>
    runCli(['ledger', 'check'], { DATABASE_URL: server.database.databaseUrl ?? '', LOG_LEVEL: 'warn' }, { timeoutMs: 60_000 });

  it('when the books balance, then `ledger check` exits 0 and reports ok', { skip, timeout: 90_000 }, async () => {
    const result = await check();
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as { ok: boolean; violations: Record<string, string[]> };
    assert.equal(report.ok, true);
    assert.deepEqual(report.violations, {});
  });

  it('when a balance no longer matches its entries, then `ledger check` exits 1 and names the account', { skip, timeout: 90_000 }, async () => {
    // Corrupt the books behind the service's back (the CHECK allows it: the balance stays >= 0).
    await sql`update accounts set balance = balance + 1 where id = ${accountId}::uuid`.execute(server.app.database.db);
    try {
      const result = await check();
      assert.equal(result.code, 1, result.stdout);
      const report = JSON.parse(result.stdout) as { ok: boolean; violations: Record<string, string[]> };
      assert.equal(report.ok, false);
      assert.deepEqual(report.violations['balance differs from its entries'], [accountId]);
      assert.deepEqual(report.violations['currency does not sum to zero'], ['EUR']);
    } finally {
      await sql`update accounts set balance = balance - 1 where id = ${accountId}::uuid`.execute(server.app.database.db);
    }
  });

  it('when idempotency keys are older than 24 h, then the purge removes them (in statements of 5,000) and keeps the recent ones', { skip }, async () => {
    const db = server.app.database.db;
    const admin = await db.selectFrom('users').select('id').where('role', '=', 'admin').executeTakeFirstOrThrow();
    const fresh = await db.selectFrom('idempotency_keys').select('key').execute();
    assert.ok(fresh.length > 0, 'the deposit stored its key');
    await db
      .insertInto('idempotency_keys')
      .values({
        principal_id: admin.id,
        key: 'old-key',
        fingerprint: Buffer.from('x'),
        outcome: 'INSUFFICIENT_FUNDS',
        transfer_id: null,
        request_id: 'old-request',
        created_at: sql<Date>`now() - interval '25 hours'`,
      })
      .execute();
    // More than one purge statement's worth (5,000 a statement) of old keys, too.
    await sql`
      insert into idempotency_keys (principal_id, key, fingerprint, outcome, request_id, created_at)
      select ${admin.id}::uuid, 'old-key-' || n, '\\x00'::bytea, 'INSUFFICIENT_FUNDS', 'old-request', now() - interval '25 hours' - n * interval '1 ms'
      from generate_series(1, 11000) n`.execute(db);
    const purged = await server.app.ledger.purgeIdempotencyKeys();
    assert.equal(purged, 11_001);
    const left = (await db.selectFrom('idempotency_keys').select('key').execute()).map((row) => row.key);
    assert.ok(!left.includes('old-key'));
    assert.deepEqual(left.sort(), fresh.map((row) => row.key).sort());
  });
});
