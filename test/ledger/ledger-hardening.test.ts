// Ledger hardening (issue 9, item 8): mixed-currency batches cannot deadlock on system-account shards,
// no account is opened for a user being deleted, and the system accounts' shards and totals cannot
// overflow. Races are forced with a transaction the test holds on PostgreSQL.
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { checkLedger } from '../../src/components/ledger/index.js';
import * as ledgerRepo from '../../src/components/ledger/ledger.repo.js';
import { untilLockWaiters } from '../helpers/poll.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { expectError } from '../helpers/errors.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const ACCOUNTS = '/api/v1/accounts';
const MAX_AMOUNT = 9007199254740991;
const BIGINT_MIN = -(2n ** 63n);
const SHARDS = 32;

interface Account {
  id: string;
  ownerId: string | null;
  currency: string;
  balance: number;
}

/** The exact integer a JSON body holds for `field` of the account with this id (JSON.parse would round it). */
function exactField(text: string, accountId: string, field: 'balance' | 'availableBalance'): bigint {
  const start = text.indexOf(`"id":"${accountId}"`);
  assert.ok(start >= 0, `account ${accountId} is in ${text}`);
  const match = new RegExp(`"${field}":(-?\\d+)[,}]`).exec(text.slice(start));
  assert.ok(match?.[1], `${field} of ${accountId} is a JSON integer in ${text}`);
  return BigInt(match[1]);
}

const tally = (responses: readonly ApiResponse<unknown>[]): Record<string, number> => {
  const counts: Record<string, number> = {};
  for (const response of responses) {
    const code = (response.body as { error?: { code?: string } } | undefined)?.error?.code;
    const label = code ? `${response.status} ${code}` : String(response.status);
    counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
};

describeOnBackends('ledger hardening', ({ backend, it, before, startServer }) => {
  const postgresOnly = backend.name === 'pglite' ? 'PGlite has one connection: transactions cannot interleave' : undefined;
  let server: TestServer;
  let client: Client;
  let admin: Session;
  let alice: Session;

  before(async () => {
    server = await startServer();
    client = server.client;
    admin = await loginAdmin(client);
    alice = await registerAndLogin(client, { name: 'Alice' });
  });

  const db = () => server.app.database.db;
  const openAccount = async (currency: string, owner: Session = admin): Promise<Account> => {
    const response = await client.post<{ data: Account }>(ACCOUNTS, { currency }, { token: owner.accessToken });
    assert.equal(response.status, 201, response.text);
    return response.body.data;
  };
  const getAccount = async (id: string) => client.get<{ data: Account }>(`${ACCOUNTS}/${id}`, { token: admin.accessToken });
  const money = (kind: 'deposits' | 'withdrawals', accountId: string, amount: number, as: Session = admin) =>
    client.post(`${ACCOUNTS}/${accountId}/${kind}`, { amount }, { token: as.accessToken, headers: { 'idempotency-key': randomUUID() } });
  const systemAccountId = async (currency: string): Promise<string> => {
    const row = await db()
      .selectFrom('accounts')
      .select('id')
      .where('owner_id', 'is', null)
      .where('currency', '=', currency)
      .executeTakeFirstOrThrow();
    return row.id;
  };
  const shardBalances = async (accountId: string): Promise<Map<number, bigint>> => {
    const rows = await db().selectFrom('system_account_shards').select(['shard', 'balance']).where('account_id', '=', accountId).execute();
    return new Map(rows.map((row) => [row.shard, BigInt(row.balance)]));
  };
  /** Every shard row of a system account exists (the service may create them lazily). */
  const allShards = async (accountId: string): Promise<void> => {
    await sql`insert into system_account_shards (account_id, shard, balance)
      select ${accountId}::uuid, g, 0 from generate_series(0, ${SHARDS - 1}) g
      on conflict (account_id, shard) do nothing`.execute(db());
  };
  const setShards = async (accountId: string, balances: ReadonlyMap<number, bigint>): Promise<void> => {
    for (const [shard, balance] of balances) {
      await sql`update system_account_shards set balance = ${balance.toString()}::bigint
        where account_id = ${accountId}::uuid and shard = ${shard}`.execute(db());
    }
  };

  describe('system-account shards under mixed-currency batches', () => {
    it(
      'when two batches take the same shard of the USD and EUR system accounts in opposite orders, then both commit: no 40P01',
      { skip: postgresOnly, timeout: 30_000 },
      async () => {
        const [usd1, usd2, eur1, eur2] = await Promise.all([openAccount('USD'), openAccount('USD'), openAccount('EUR'), openAccount('EUR')]);
        for (const account of [usd1, usd2, eur1, eur2]) assert.equal((await money('deposits', account.id, 1_000)).status, 201);
        const [usdSystem, eurSystem] = [await systemAccountId('USD'), await systemAccountId('EUR')];
        await allShards(usdSystem);
        await allShards(eurSystem);
        const shard = 7;
        const input = (kind: 'deposit' | 'withdrawal', accountId: string): ledgerRepo.LedgerRequest => {
          const key = `batch-${randomUUID()}`;
          return {
            principalId: admin.user.id,
            idempotency: { key, fingerprint: createHash('sha256').update(key).digest() },
            requestId: key,
            id: randomUUID(),
            kind,
            accountId,
            amount: 10,
            actorSeesAll: true,
            now: new Date(),
          };
        };
        const blocker = new pg.Client({ connectionString: server.database.databaseUrl });
        await blocker.connect();
        try {
          // Hold the EUR shard: the EUR-first batch queues on it; the USD-first batch takes the USD
          // shard, then queues on the EUR one behind it. On release the EUR-first batch gets EUR and
          // reaches for USD, which the other holds while it waits for EUR: a lock cycle, unless
          // shards are taken in one global order.
          await blocker.query('begin');
          await blocker.query('select 1 from system_account_shards where account_id = $1 and shard = $2 for update', [eurSystem, shard]);
          const eurFirst = ledgerRepo.applyBatch(db(), [input('withdrawal', eur2.id), input('deposit', usd2.id)], shard);
          await untilLockWaiters(blocker, 1, 'the held shards');
          const usdFirst = ledgerRepo.applyBatch(db(), [input('deposit', usd1.id), input('withdrawal', eur1.id)], shard);
          await untilLockWaiters(blocker, 2, 'the held shards');
          await blocker.query('commit');
          const settled = await Promise.allSettled([eurFirst, usdFirst]);
          const failures = settled.flatMap((result) =>
            result.status === 'rejected' ? [`${(result.reason as { code?: string }).code ?? ''} ${(result.reason as Error).message}`] : [],
          );
          assert.deepEqual(failures, [], 'no batch failed (40P01 is a deadlock)');
          for (const result of settled) {
            if (result.status !== 'fulfilled') continue;
            assert.deepEqual(
              result.value.map((item) => (item.result === 'executed' ? item.outcome : item.result)),
              ['OK', 'OK'],
            );
          }
        } finally {
          await blocker.query('rollback').catch(() => undefined);
          await blocker.end();
        }
        const balances = await Promise.all([usd1, usd2, eur1, eur2].map(async (account) => (await getAccount(account.id)).body.data.balance));
        assert.deepEqual(balances, [1_010, 1_010, 990, 990]);
      },
    );
  });

  describe('accounts of users being deleted', () => {
    it('when an admin passes the ownerId of a deleted user, then it is 404 and no account is opened', async () => {
      const leaving = await registerAndLogin(client, { name: 'Gone' });
      assert.equal((await client.delete(`/api/v1/users/${leaving.user.id}`, { token: admin.accessToken })).status, 204);
      const response = await client.post(ACCOUNTS, { currency: 'USD', ownerId: leaving.user.id }, { token: admin.accessToken });
      expectError(response, 404, 'NOT_FOUND');
      const owned = await db().selectFrom('accounts').select('id').where('owner_id', '=', leaving.user.id).execute();
      assert.deepEqual(owned, []);
    });

    for (const creator of ['an admin (ownerId)', 'the user'] as const) {
      it(
        `when ${creator} opens an account while the user's deletion is in flight, then the delete closes it or the create fails: no live account of a deleted user`,
        { skip: postgresOnly, timeout: 30_000 },
        async () => {
          const leaving = await registerAndLogin(client, { name: 'Leaving' });
          const blocker = new pg.Client({ connectionString: server.database.databaseUrl });
          await blocker.connect();
          const waitingOnLocks = async (count: number, until: Promise<unknown>): Promise<boolean> => {
            let settled = false;
            void until.finally(() => (settled = true));
            for (let attempt = 0; attempt < 500 && !settled; attempt++) {
              const { rows } = await blocker.query<{ waiting: number }>(
                "select count(*)::int as waiting from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
              );
              if ((rows[0]?.waiting ?? 0) >= count) return true;
              await sleep(10);
            }
            return false;
          };
          let deletion: Promise<ApiResponse<unknown>> | undefined;
          let creation: Promise<ApiResponse<unknown>> | undefined;
          try {
            // A held share lock on the user's row makes the deletion stop at its first lock on it
            // while the creation runs: the window in which today's code opens an orphan account.
            await blocker.query('begin');
            await blocker.query('select 1 from users where id = $1 for share', [leaving.user.id]);
            deletion = client.delete(`/api/v1/users/${leaving.user.id}`, { token: admin.accessToken });
            assert.ok(await waitingOnLocks(1, deletion), 'the deletion waits on the held user row');
            creation =
              creator === 'the user'
                ? client.post(ACCOUNTS, { currency: 'USD' }, { token: leaving.accessToken })
                : client.post(ACCOUNTS, { currency: 'USD', ownerId: leaving.user.id }, { token: admin.accessToken });
            // Either the creation answers at once (it did not wait for the deletion) or it queues too.
            await waitingOnLocks(2, creation);
          } finally {
            await blocker.query('commit').catch(() => undefined);
            await blocker.end();
          }
          const [deleted, created] = await Promise.all([deletion, creation]);
          assert.equal(deleted?.status, 204, deleted?.text);
          if (created?.status === 201) {
            const id = (created.body as { data: Account }).data.id;
            expectError(await getAccount(id), 404, 'NOT_FOUND');
          } else {
            assert.ok(created && [401, 404].includes(created.status), `the creation failed with 401 or 404: ${created?.text}`);
          }
          const live = await db()
            .selectFrom('accounts')
            .select('id')
            .where('owner_id', '=', leaving.user.id)
            .where('closed_at', 'is', null)
            .execute();
          assert.deepEqual(live, [], 'no live account is owned by the deleted user');
        },
      );
    }
  });

  describe('system-account shards and totals at the bounds of bigint', () => {
    it('when half the shards are within 500 of bigint min and half within 500 of its max, then deposits and withdrawals of 1,000 use other shards: all 201, never 500', { timeout: 60_000 }, async () => {
      const account = await openAccount('NOK', alice);
      assert.equal((await money('deposits', account.id, 1_000_000)).status, 201);
      const system = await systemAccountId('NOK');
      await allShards(system);
      const before = await shardBalances(system);
      // Shard i (i < 16) goes to min + 500, shard i + 16 takes the difference: the sum, and so every
      // invariant the ledger check verifies, is unchanged (a state many deposits and withdrawals reach).
      const moved = new Map<number, bigint>();
      for (let shard = 0; shard < SHARDS / 2; shard++) {
        const low = before.get(shard) ?? 0n;
        const high = before.get(shard + SHARDS / 2) ?? 0n;
        const target = BIGINT_MIN + 500n;
        moved.set(shard, target);
        moved.set(shard + SHARDS / 2, high + (low - target));
      }
      await setShards(system, moved);

      const responses = await Promise.all([
        ...Array.from({ length: 40 }, () => money('deposits', account.id, 1_000)),
        ...Array.from({ length: 40 }, () => money('withdrawals', account.id, 1_000, alice)),
      ]);
      assert.deepEqual(tally(responses), { '201': 80 });
      assert.equal((await getAccount(account.id)).body.data.balance, 1_000_000);
      const report = await checkLedger(db());
      assert.deepEqual(report.violations, {});
    });

    it('when no shard has room for a deposit, then it is 422 BALANCE_LIMIT_EXCEEDED and nothing moves', async () => {
      const account = await openAccount('DKK', alice);
      assert.equal((await money('deposits', account.id, 5_000)).status, 201);
      const system = await systemAccountId('DKK');
      await allShards(system);
      const before = await shardBalances(system);
      // Not a state the ledger can reach (it would take 2^68 units deposited); set for the test and undone.
      await setShards(system, new Map(Array.from({ length: SHARDS }, (_, shard) => [shard, BIGINT_MIN + 10n])));
      try {
        const response = await money('deposits', account.id, 1_000);
        expectError(response, 422, 'BALANCE_LIMIT_EXCEEDED');
        const after = await shardBalances(system);
        assert.ok([...after.values()].every((balance) => balance === BIGINT_MIN + 10n), 'no shard moved');
        assert.equal((await getAccount(account.id)).body.data.balance, 5_000);
        // A withdrawal still has room, and GET of the system account sums 32 near-min shards exactly.
        assert.equal((await money('withdrawals', account.id, 1_000, alice)).status, 201);
        const systemResponse = await getAccount(system);
        assert.equal(systemResponse.status, 200, systemResponse.text);
        assert.equal(exactField(systemResponse.text, system, 'balance'), 32n * (BIGINT_MIN + 10n) + 1_000n);
      } finally {
        const now = await shardBalances(system);
        // Undo the test's offsets, keeping what the withdrawal added.
        await setShards(system, new Map([...before].map(([shard, balance]) => [shard, balance + ((now.get(shard) ?? 0n) - (BIGINT_MIN + 10n))])));
      }
      assert.deepEqual((await checkLedger(db())).violations, {});
    });

    it(
      'when the sum of user balances in a currency passes 2^63 (1,025 accounts at 2^53 - 1), then GET ?system=true and GET /accounts/:id answer 200 with the exact negative total',
      { timeout: 240_000 },
      async () => {
        const currency = 'SEK';
        const accounts = 1_025;
        for (let index = 0; index < accounts; index += 25) {
          await Promise.all(
            Array.from({ length: Math.min(25, accounts - index) }, async () => {
              const account = await openAccount(currency);
              const deposit = await money('deposits', account.id, MAX_AMOUNT);
              assert.equal(deposit.status, 201, deposit.text);
            }),
          );
        }
        const expected = -BigInt(accounts) * BigInt(MAX_AMOUNT);
        const system = await systemAccountId(currency);
        const listed = await client.get(`${ACCOUNTS}?system=true&limit=100`, { token: admin.accessToken });
        assert.equal(listed.status, 200, listed.text);
        assert.equal(exactField(listed.text, system, 'balance'), expected);
        assert.equal(exactField(listed.text, system, 'availableBalance'), expected);
        const single = await getAccount(system);
        assert.equal(single.status, 200, single.text);
        assert.equal(exactField(single.text, system, 'balance'), expected);
        assert.deepEqual((await checkLedger(db())).violations, {});
      },
    );
  });
});
