// Concurrency: contention on one account, a key raced by many requests, transfers in both directions
// between two accounts, and deposits and withdrawals into many accounts against the sharded system
// account. Contention must never surface (no 409, no 5xx) and the books must balance afterwards.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { checkLedger } from '../../src/components/ledger/index.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { histogramTotals } from '../helpers/metrics.js';
import type { TestServer } from '../helpers/server.js';

const ACCOUNTS = '/api/v1/accounts';
const TRANSFERS = '/api/v1/transfers';

interface Account {
  id: string;
  ownerId: string | null;
  currency: string;
  balance: number;
  availableBalance: number;
}
interface Transfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: number;
  status: string;
}

/** "201", "422 INSUFFICIENT_FUNDS", ... -> how many responses had it. */
function tally(responses: readonly ApiResponse<unknown>[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const response of responses) {
    const code = (response.body as { error?: { code?: string } } | undefined)?.error?.code;
    const label = code ? `${response.status} ${code}` : String(response.status);
    counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
}

const sum = (values: readonly number[]): number => values.reduce((total, value) => total + value, 0);

describeOnBackends('ledger concurrency', ({ backend, it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;
  let alice: Session;
  let bob: Session;

  before(async () => {
    server = await startServer();
    client = server.client;
    admin = await loginAdmin(client);
    [alice, bob] = await Promise.all([registerAndLogin(client, { name: 'Alice' }), registerAndLogin(client, { name: 'Bob' })]);
  });

  const openAccount = async (owner: Session, currency = 'USD'): Promise<Account> => {
    const response = await client.post<{ data: Account }>(ACCOUNTS, { currency }, { token: owner.accessToken });
    assert.equal(response.status, 201, response.text);
    return response.body.data;
  };
  const getAccount = async (id: string): Promise<Account> => {
    const response = await client.get<{ data: Account }>(`${ACCOUNTS}/${id}`, { token: admin.accessToken });
    assert.equal(response.status, 200, response.text);
    return response.body.data;
  };
  const deposit = (accountId: string, amount: number) =>
    client.post<{ data: Transfer }>(`${ACCOUNTS}/${accountId}/deposits`, { amount }, {
      token: admin.accessToken,
      headers: { 'idempotency-key': randomUUID() },
    });
  const fundedAccount = async (owner: Session, amount: number): Promise<Account> => {
    const account = await openAccount(owner);
    const response = await deposit(account.id, amount);
    assert.equal(response.status, 201, response.text);
    return account;
  };
  const transfer = (as: Session, body: Record<string, unknown>, idempotencyKey: string = randomUUID()) =>
    client.post<{ data: Transfer }>(TRANSFERS, body, { token: as.accessToken, headers: { 'idempotency-key': idempotencyKey } });
  /** Every transfer id in an account's history, walking all pages. */
  const historyIds = async (accountId: string, pageSize = 100): Promise<string[]> => {
    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? `limit=${pageSize}` : `limit=${pageSize}&cursor=${encodeURIComponent(cursor)}`;
      const page: ApiResponse<{ data: Transfer[]; meta: { nextCursor: string | null } }> = await client.get(
        `${ACCOUNTS}/${accountId}/transfers?${query}`,
        { token: admin.accessToken },
      );
      assert.equal(page.status, 200, page.text);
      ids.push(...page.body.data.map((item) => item.id));
      cursor = page.body.meta.nextCursor;
    } while (cursor !== null);
    return ids;
  };

  it('when 200 transfers race out of an account that covers exactly 100, then exactly 100 succeed and 100 are INSUFFICIENT_FUNDS', async () => {
    const from = await fundedAccount(alice, 100 * 10);
    const to = await openAccount(bob);
    const batchesBefore = await histogramTotals(server.baseUrl, 'bastion_ledger_batch_size');
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 10 })),
    );
    assert.deepEqual(tally(responses), { '201': 100, '422 INSUFFICIENT_FUNDS': 100 });
    // They went through the batcher, several to a commit: 200 requests in fewer batches.
    const batchesAfter = await histogramTotals(server.baseUrl, 'bastion_ledger_batch_size');
    assert.equal(batchesAfter.sum - batchesBefore.sum, 200);
    assert.ok(batchesAfter.count - batchesBefore.count < 200, `${batchesAfter.count - batchesBefore.count} batches for 200 requests`);
    assert.equal((await getAccount(from.id)).balance, 0);
    assert.equal((await getAccount(to.id)).balance, 1_000);
    // Every 201 is a transfer that exists exactly once.
    const created = responses.filter((response) => response.status === 201).map((response) => response.body.data.id);
    assert.equal(new Set(created).size, 100);
    assert.deepEqual((await historyIds(to.id)).sort(), [...created].sort());
  });

  it('when 50 requests race with the same key and body, then each gets the one 201 body or 409 IDEMPOTENCY_IN_PROGRESS, and money moves once', async () => {
    const from = await fundedAccount(alice, 1_000);
    const to = await openAccount(bob);
    const idempotencyKey = `race-${randomUUID()}`;
    const body = { fromAccountId: from.id, toAccountId: to.id, amount: 7 };
    const responses = await Promise.all(Array.from({ length: 50 }, () => transfer(alice, body, idempotencyKey)));
    const counts = tally(responses);
    assert.deepEqual(
      Object.keys(counts).filter((label) => label !== '201' && label !== '409 IDEMPOTENCY_IN_PROGRESS'),
      [],
      JSON.stringify(counts),
    );
    const successes = responses.filter((response) => response.status === 201);
    assert.ok(successes.length >= 1, JSON.stringify(counts));
    assert.equal(new Set(successes.map((response) => response.text)).size, 1, 'every 201 is the same body');
    assert.equal(successes.filter((response) => response.headers.get('idempotent-replayed') !== 'true').length, 1);
    const retried = await transfer(alice, body, idempotencyKey);
    assert.equal(retried.status, 201);
    assert.equal(retried.text, successes[0]!.text);
    assert.equal(retried.headers.get('idempotent-replayed'), 'true');
    assert.equal((await getAccount(from.id)).balance, 993);
    assert.equal((await getAccount(to.id)).balance, 7);
  });

  it('when 200 transfers run both ways between two accounts at once, then none deadlocks or conflicts and totals are conserved', async () => {
    const a = await fundedAccount(alice, 10_000);
    const b = await fundedAccount(bob, 10_000);
    const amounts = Array.from({ length: 100 }, (_, position) => (position % 13) + 1);
    const requests = amounts.flatMap((amount) => [
      transfer(alice, { fromAccountId: a.id, toAccountId: b.id, amount }),
      transfer(bob, { fromAccountId: b.id, toAccountId: a.id, amount }),
    ]);
    const responses = await Promise.all(requests);
    assert.deepEqual(tally(responses), { '201': 200 });
    // Each direction moved the same amounts: both end where they started.
    assert.equal((await getAccount(a.id)).balance, 10_000);
    assert.equal((await getAccount(b.id)).balance, 10_000);
    // Many of these share a millisecond: small history pages still neither skip nor repeat one.
    const created = responses.map((response) => response.body.data.id);
    const history = await historyIds(a.id, 7);
    assert.equal(history.length, 201);
    assert.equal(new Set(history).size, 201);
    for (const id of created) assert.ok(history.includes(id), `transfer ${id} is missing from the history`);
  });

  it(
    'when two instances share the database and 40 requests race with one key across both, then money moves once',
    { skip: backend.name === 'postgres' ? undefined : 'needs a database that two instances can share' },
    async () => {
      const second = await startServer({}, { database: server.database });
      try {
        const from = await fundedAccount(alice, 1_000);
        const to = await openAccount(bob);
        const idempotencyKey = `instances-${randomUUID()}`;
        const body = { fromAccountId: from.id, toAccountId: to.id, amount: 11 };
        const responses = await Promise.all(
          Array.from({ length: 40 }, (_, position) =>
            (position % 2 ? server.client : second.client).post(TRANSFERS, body, {
              token: alice.accessToken,
              headers: { 'idempotency-key': idempotencyKey },
            }),
          ),
        );
        const counts = tally(responses);
        assert.deepEqual(
          Object.keys(counts).filter((label) => label !== '201' && label !== '409 IDEMPOTENCY_IN_PROGRESS'),
          [],
          JSON.stringify(counts),
        );
        const successes = responses.filter((response) => response.status === 201);
        assert.equal(new Set(successes.map((response) => response.text)).size, 1, 'every 201 is the same body');
        const replay = await second.client.post(TRANSFERS, body, { token: alice.accessToken, headers: { 'idempotency-key': idempotencyKey } });
        assert.equal(replay.status, 201, replay.text);
        assert.equal(replay.headers.get('idempotent-replayed'), 'true');
        if (successes[0]) assert.equal(replay.text, successes[0].text);
        assert.equal((await getAccount(from.id)).balance, 989);
        assert.equal((await getAccount(to.id)).balance, 11);
      } finally {
        await second.stop();
      }
    },
  );

  it(
    'when posts and voids of one pending transfer race across two instances, then exactly one resolves it and the others are refused',
    { skip: backend.name === 'postgres' ? undefined : 'needs a database that two instances can share' },
    async () => {
      const second = await startServer({}, { database: server.database });
      try {
        const from = await fundedAccount(alice, 1_000);
        const to = await openAccount(bob);
        const created = await server.client.post<{ data: Transfer }>(
          TRANSFERS,
          { fromAccountId: from.id, toAccountId: to.id, amount: 300, pending: true },
          { token: alice.accessToken, headers: { 'idempotency-key': randomUUID() } },
        );
        assert.equal(created.status, 201, created.text);
        const pendingId = created.body.data.id;
        const responses = await Promise.all(
          Array.from({ length: 40 }, (_, position) =>
            (position % 2 ? server.client : second.client).post(`${TRANSFERS}/${pendingId}/${position % 4 < 2 ? 'post' : 'void'}`, {}, {
              token: alice.accessToken,
              headers: { 'idempotency-key': randomUUID() },
            }),
          ),
        );
        const counts = tally(responses);
        assert.equal(responses.filter((response) => response.status === 201).length, 1, JSON.stringify(counts));
        assert.deepEqual(
          Object.keys(counts).filter((label) => !['201', '409 PENDING_ALREADY_POSTED', '409 PENDING_ALREADY_VOIDED'].includes(label)),
          [],
          JSON.stringify(counts),
        );
        const winner = responses.find((response) => response.status === 201);
        const posted = (winner?.body as { data?: Transfer } | undefined)?.data?.status === 'posted';
        const source = await getAccount(from.id);
        assert.deepEqual([source.balance, source.availableBalance], posted ? [700, 700] : [1_000, 1_000]);
        assert.equal((await getAccount(to.id)).balance, posted ? 300 : 0);
      } finally {
        await second.stop();
      }
    },
  );

  it('when deposits and withdrawals hit many accounts at once, then the system account is minus the sum of user balances', async () => {
    // A currency of its own, so the system account holds exactly this test's money.
    const currency = 'JPY';
    const accounts = await Promise.all(Array.from({ length: 20 }, (_, position) => openAccount(position % 2 ? alice : bob, currency)));
    const systems = await client.get<{ data: Account[] }>(`${ACCOUNTS}?system=true&limit=100`, { token: admin.accessToken });
    const jpySystems = systems.body.data.filter((account) => account.currency === currency);
    assert.equal(jpySystems.length, 1, 'concurrent first accounts open one system account');
    const system = jpySystems[0]!;

    const deposits = accounts.flatMap((account, position) =>
      Array.from({ length: 10 }, (_, round) => ({ account, amount: 100 + position * 10 + round })),
    );
    const depositResponses = await Promise.all(deposits.map(({ account, amount }) => deposit(account.id, amount)));
    assert.deepEqual(tally(depositResponses), { '201': 200 });

    // A second wave: deposits and withdrawals (by owner, each well covered) at the same time.
    const wave = await Promise.all(
      accounts.flatMap((account, position) => [
        deposit(account.id, 50 + position),
        client.post(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 30 + position }, {
          token: (position % 2 ? alice : bob).accessToken,
          headers: { 'idempotency-key': randomUUID() },
        }),
        client.post(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 20 }, {
          token: admin.accessToken,
          headers: { 'idempotency-key': randomUUID() },
        }),
      ]),
    );
    assert.deepEqual(tally(wave), { '201': 60 });

    const expected = accounts.map(
      (account, position) =>
        sum(deposits.filter((item) => item.account === account).map((item) => item.amount)) + (50 + position) - (30 + position) - 20,
    );
    const balances = (await Promise.all(accounts.map((account) => getAccount(account.id)))).map((account) => account.balance);
    assert.deepEqual(balances, expected);
    const systemAfter = await getAccount(system.id);
    assert.equal(systemAfter.ownerId, null);
    assert.equal(systemAfter.balance, -sum(balances));
  });

  it('when the races are over, then checkLedger finds no violation', async () => {
    const report = await checkLedger(server.app.database.db);
    assert.deepEqual(report.violations, {});
    assert.equal(report.ok, true);
  });
});
