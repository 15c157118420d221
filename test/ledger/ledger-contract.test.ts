// Contract: "Accounts and transfers" — accounts, deposits and withdrawals against the system account,
// transfers, idempotency, history, user deletion and two-phase transfers, on every backend; each suite
// ends with the ledger check (the books balance).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe } from 'node:test';
import { checkLedger } from '../../src/components/ledger/index.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { expectError, ISO_UTC, UUID, type ErrorDetails } from '../helpers/errors.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const ACCOUNTS = '/api/v1/accounts';
const TRANSFERS = '/api/v1/transfers';
const ACCOUNT_KEYS = ['availableBalance', 'balance', 'createdAt', 'currency', 'id', 'name', 'ownerId', 'updatedAt'];
const TRANSFER_KEYS = ['amount', 'createdAt', 'currency', 'description', 'fromAccountId', 'id', 'status', 'toAccountId'];
const MAX_AMOUNT = 9007199254740991;

interface Account {
  id: string;
  ownerId: string | null;
  currency: string;
  name: string | null;
  balance: number;
  availableBalance: number;
  createdAt: string;
  updatedAt: string;
}
interface Transfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: number;
  currency: string;
  status: 'posted' | 'pending' | 'voided' | 'expired';
  description: string | null;
  createdAt: string;
  expiresAt?: string;
  pendingId?: string;
}
interface AccountPage {
  data: Account[];
  meta: { page: number; limit: number; total: number; totalPages: number };
}
interface History {
  data: Transfer[];
  meta: { nextCursor: string | null };
}

function expectAccount(response: ApiResponse<unknown>, status: number): Account {
  assert.equal(response.status, status, response.text);
  const body = response.body as { data: Account };
  assert.deepEqual(Object.keys(body), ['data']);
  const account = body.data;
  assert.deepEqual(Object.keys(account).sort(), ACCOUNT_KEYS);
  assert.match(account.id, UUID);
  assert.ok(Number.isInteger(account.balance) && Number.isInteger(account.availableBalance));
  assert.match(account.createdAt, ISO_UTC);
  assert.match(account.updatedAt, ISO_UTC);
  return account;
}

function expectTransfer(response: ApiResponse<unknown>, status = 201): Transfer {
  assert.equal(response.status, status, response.text);
  const body = response.body as { data: Transfer };
  assert.deepEqual(Object.keys(body), ['data']);
  const transfer = body.data;
  const optional = ['expiresAt', 'pendingId'];
  assert.deepEqual(
    Object.keys(transfer)
      .filter((key) => !optional.includes(key))
      .sort(),
    TRANSFER_KEYS,
  );
  assert.match(transfer.id, UUID);
  assert.match(transfer.createdAt, ISO_UTC);
  return transfer;
}

const key = (): string => `key-${randomUUID()}`;

describeOnBackends('ledger contract', ({ it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;
  let alice: Session;
  let bob: Session;
  let carol: Session;

  before(async () => {
    // A fast sweep so that the timeout test sees its pending transfer expire within ~1 s.
    server = await startServer({ PENDING_SWEEP_INTERVAL_MS: '100' });
    client = server.client;
    admin = await loginAdmin(client);
    [alice, bob, carol] = await Promise.all([
      registerAndLogin(client, { name: 'Alice' }),
      registerAndLogin(client, { name: 'Bob' }),
      registerAndLogin(client, { name: 'Carol' }),
    ]);
  });

  // ---- small, asserting helpers ----
  const openAccount = async (owner: Session, currency = 'USD', name?: string): Promise<Account> =>
    expectAccount(await client.post(ACCOUNTS, { currency, ...(name ? { name } : {}) }, { token: owner.accessToken }), 201);
  const getAccount = async (id: string, as: Session = admin): Promise<Account> =>
    expectAccount(await client.get(`${ACCOUNTS}/${id}`, { token: as.accessToken }), 200);
  /** A deposit or withdrawal: the contract requires an Idempotency-Key on both. */
  const moneyPost = (path: string, body: Record<string, unknown>, as: Session, idempotencyKey: string = key()) =>
    client.post(path, body, { token: as.accessToken, headers: { 'idempotency-key': idempotencyKey } });
  const deposit = async (accountId: string, amount: number): Promise<Transfer> =>
    expectTransfer(await moneyPost(`${ACCOUNTS}/${accountId}/deposits`, { amount }, admin));
  const transfer = (as: Session, body: Record<string, unknown>, idempotencyKey: string = key()) =>
    client.post(TRANSFERS, body, { token: as.accessToken, headers: { 'idempotency-key': idempotencyKey } });
  const fundedAccount = async (owner: Session, amount: number, currency = 'USD'): Promise<Account> => {
    const account = await openAccount(owner, currency);
    await deposit(account.id, amount);
    return account;
  };
  const systemAccount = async (currency: string): Promise<Account> => {
    const response = await client.get<AccountPage>(`${ACCOUNTS}?system=true&limit=100`, { token: admin.accessToken });
    assert.equal(response.status, 200, response.text);
    const found = response.body.data.find((account) => account.currency === currency);
    assert.ok(found, `no system account for ${currency}`);
    return found;
  };

  describe('POST /accounts', () => {
    it('when a user opens an account, then it is 201, theirs, with balance 0', async () => {
      const response = await client.post(ACCOUNTS, { currency: 'EUR', name: 'Savings' }, { token: alice.accessToken });
      const account = expectAccount(response, 201);
      assert.equal(account.ownerId, alice.user.id);
      assert.equal(account.currency, 'EUR');
      assert.equal(account.name, 'Savings');
      assert.equal(account.balance, 0);
      assert.equal(account.availableBalance, 0);
      assert.deepEqual(await getAccount(account.id, alice), account);
    });

    it('when an admin passes ownerId, then the account belongs to that user', async () => {
      const response = await client.post(ACCOUNTS, { currency: 'USD', ownerId: bob.user.id }, { token: admin.accessToken });
      const account = expectAccount(response, 201);
      assert.equal(account.ownerId, bob.user.id);
      assert.equal((await getAccount(account.id, bob)).id, account.id);
    });

    it("when a non-admin passes someone else's ownerId, then it is 403 and no account is opened", async () => {
      const before = await client.get<AccountPage>(`${ACCOUNTS}?ownerId=${bob.user.id}&limit=100`, { token: admin.accessToken });
      const response = await client.post(ACCOUNTS, { currency: 'USD', ownerId: bob.user.id }, { token: alice.accessToken });
      expectError(response, 403, 'FORBIDDEN');
      const afterwards = await client.get<AccountPage>(`${ACCOUNTS}?ownerId=${bob.user.id}&limit=100`, { token: admin.accessToken });
      assert.equal(afterwards.body.meta.total, before.body.meta.total);
    });

    it('when a non-admin passes ownerId at all (even their own id), then it is 403 (contract: "a non-admin sending ownerId")', async () => {
      const response = await client.post(ACCOUNTS, { currency: 'USD', ownerId: alice.user.id }, { token: alice.accessToken });
      expectError(response, 403, 'FORBIDDEN');
    });

    it('when the currency is lower case, unknown or not a string, then it is 400', async () => {
      for (const currency of ['usd', 'QQQ', 'US', 'USDD', 840, null]) {
        const response = await client.post(ACCOUNTS, { currency }, { token: alice.accessToken });
        const error = expectError(response, 400, 'VALIDATION_FAILED');
        assert.equal(error.errors?.[0]?.path, 'currency', `${String(currency)}: ${response.text}`);
      }
      expectError(await client.post(ACCOUNTS, {}, { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
    });

    it('when the body has unknown fields, then it is 400', async () => {
      const response = await client.post(ACCOUNTS, { currency: 'USD', balance: 1_000_000 }, { token: alice.accessToken });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.equal(error.errors?.[0]?.path, 'balance');
    });

    it('when no token is sent, then it is 401', async () => {
      expectError(await client.post(ACCOUNTS, { currency: 'USD' }), 401, 'UNAUTHENTICATED');
    });
  });

  describe('GET /accounts and /accounts/:id', () => {
    it('when a user lists accounts, then only their own come back, paginated', async () => {
      const mine = [await openAccount(alice, 'USD'), await openAccount(alice, 'EUR')];
      await openAccount(bob, 'USD');
      const response = await client.get<AccountPage>(`${ACCOUNTS}?limit=100`, { token: alice.accessToken });
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(Object.keys(response.body).sort(), ['data', 'meta']);
      assert.deepEqual(Object.keys(response.body.meta).sort(), ['limit', 'page', 'total', 'totalPages']);
      assert.ok(response.body.data.every((account) => account.ownerId === alice.user.id));
      const ids = response.body.data.map((account) => account.id);
      for (const account of mine) assert.ok(ids.includes(account.id));
      assert.equal(response.body.meta.total, response.body.data.length);
      // Newest first.
      assert.ok(ids.indexOf(mine[1]!.id) < ids.indexOf(mine[0]!.id));
      const small = await client.get<AccountPage>(`${ACCOUNTS}?limit=1&page=2`, { token: alice.accessToken });
      assert.equal(small.status, 200);
      assert.deepEqual(small.body.data.map((account) => account.id), [ids[1]]);
      assert.deepEqual(small.body.meta, { page: 2, limit: 1, total: ids.length, totalPages: ids.length });
      const pastTheEnd = await client.get<AccountPage>(`${ACCOUNTS}?limit=10&page=999`, { token: alice.accessToken });
      assert.equal(pastTheEnd.status, 200);
      assert.deepEqual(pastTheEnd.body.data, []);
      assert.deepEqual(pastTheEnd.body.meta, { page: 999, limit: 10, total: ids.length, totalPages: Math.ceil(ids.length / 10) });
      for (const bad of ['limit=0', 'limit=101', 'page=0', 'limit=abc']) {
        expectError(await client.get(`${ACCOUNTS}?${bad}`, { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
      }
    });

    it('when an admin lists accounts, then all user accounts come back, and ?ownerId= filters', async () => {
      const aliceAccount = await openAccount(alice);
      const bobAccount = await openAccount(bob);
      const all = await client.get<AccountPage>(`${ACCOUNTS}?limit=100`, { token: admin.accessToken });
      assert.equal(all.status, 200, all.text);
      const allIds = all.body.data.map((account) => account.id);
      assert.ok(allIds.includes(aliceAccount.id) && allIds.includes(bobAccount.id));
      assert.ok(all.body.data.every((account) => account.ownerId !== null), 'system accounts are listed only with ?system=true');
      const bobs = await client.get<AccountPage>(`${ACCOUNTS}?limit=100&ownerId=${bob.user.id}`, { token: admin.accessToken });
      assert.equal(bobs.status, 200, bobs.text);
      assert.ok(bobs.body.data.length > 0);
      assert.ok(bobs.body.data.every((account) => account.ownerId === bob.user.id));
      assert.ok(bobs.body.data.some((account) => account.id === bobAccount.id));
    });

    it('when an admin lists ?system=true, then there is exactly one system account per currency in use, ownerId null', async () => {
      await openAccount(carol, 'GBP');
      const response = await client.get<AccountPage>(`${ACCOUNTS}?system=true&limit=100`, { token: admin.accessToken });
      assert.equal(response.status, 200, response.text);
      const currencies = response.body.data.map((account) => account.currency);
      assert.ok(response.body.data.every((account) => account.ownerId === null));
      assert.equal(new Set(currencies).size, currencies.length, `duplicate system accounts: ${currencies.join(',')}`);
      for (const currency of ['USD', 'EUR', 'GBP']) assert.ok(currencies.includes(currency), currency);
    });

    it('when a non-admin asks for ?system=true or ?ownerId=, then it is 403', async () => {
      expectError(await client.get(`${ACCOUNTS}?system=true`, { token: alice.accessToken }), 403, 'FORBIDDEN');
      expectError(await client.get(`${ACCOUNTS}?ownerId=${bob.user.id}`, { token: alice.accessToken }), 403, 'FORBIDDEN');
    });

    it("when a user reads someone else's account, then it is 404 like an unknown one; owner and admin see it", async () => {
      const account = await openAccount(bob);
      expectError(await client.get(`${ACCOUNTS}/${account.id}`, { token: alice.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.get(`${ACCOUNTS}/${randomUUID()}`, { token: alice.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.get(`${ACCOUNTS}/not-a-uuid`, { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
      assert.equal((await getAccount(account.id, bob)).id, account.id);
      assert.equal((await getAccount(account.id, admin)).id, account.id);
    });
  });

  describe('deposits and withdrawals', () => {
    it('when a non-admin deposits, then it is 403 and no money moves', async () => {
      const account = await openAccount(alice);
      const response = await moneyPost(`${ACCOUNTS}/${account.id}/deposits`, { amount: 100 }, alice);
      expectError(response, 403, 'FORBIDDEN');
      assert.equal((await getAccount(account.id)).balance, 0);
    });

    it("when an admin deposits, then it is 201 with a posted Transfer from the currency's system account", async () => {
      const account = await openAccount(alice, 'EUR');
      const system = await systemAccount('EUR');
      const response = await moneyPost(`${ACCOUNTS}/${account.id}/deposits`, { amount: 2_500 }, admin);
      const deposited = expectTransfer(response);
      assert.equal(deposited.fromAccountId, system.id);
      assert.equal(deposited.toAccountId, account.id);
      assert.equal(deposited.amount, 2_500);
      assert.equal(deposited.currency, 'EUR');
      assert.equal(deposited.status, 'posted');
      assert.equal(response.headers.get('idempotent-replayed'), null);
      const credited = await getAccount(account.id);
      assert.equal(credited.balance, 2_500);
      assert.equal(credited.availableBalance, 2_500);
      assert.equal((await systemAccount('EUR')).balance, system.balance - 2_500);
    });

    it('when a deposit targets an unknown account or a system account, then it is 404', async () => {
      const unknown = await moneyPost(`${ACCOUNTS}/${randomUUID()}/deposits`, { amount: 1 }, admin);
      expectError(unknown, 404, 'NOT_FOUND');
      const system = await systemAccount('USD');
      const intoSystem = await moneyPost(`${ACCOUNTS}/${system.id}/deposits`, { amount: 1 }, admin);
      expectError(intoSystem, 404, 'NOT_FOUND');
    });

    it('when a deposit or a withdrawal has no Idempotency-Key (or an empty or 256-character one), then it is 400 VALIDATION_FAILED and nothing moves', async () => {
      const account = await fundedAccount(alice, 1_000);
      const requests = [
        client.post(`${ACCOUNTS}/${account.id}/deposits`, { amount: 10 }, { token: admin.accessToken }),
        client.post(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 10 }, { token: alice.accessToken }),
        client.post(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 10 }, { token: admin.accessToken }),
        moneyPost(`${ACCOUNTS}/${account.id}/deposits`, { amount: 10 }, admin, ''),
        moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 10 }, alice, ''),
        moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 10 }, alice, 'k'.repeat(256)),
      ];
      for (const response of await Promise.all(requests)) {
        const error = expectError(response, 400, 'VALIDATION_FAILED');
        assert.match(error.errors?.[0]?.path ?? '', /idempotency-key/i, response.text);
      }
      assert.equal((await getAccount(account.id)).balance, 1_000);
    });

    it('when the owner or an admin withdraws, then it is 201 to the system account; others get 404', async () => {
      const account = await fundedAccount(alice, 1_000);
      const system = await systemAccount('USD');
      const byOwner = expectTransfer(
        await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 300 }, alice),
      );
      assert.equal(byOwner.fromAccountId, account.id);
      assert.equal(byOwner.toAccountId, system.id);
      assert.equal(byOwner.status, 'posted');
      expectTransfer(await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 200 }, admin));
      const byOther = await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 100 }, bob);
      expectError(byOther, 404, 'NOT_FOUND');
      const tooMuch = await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 501 }, alice);
      expectError(tooMuch, 422, 'INSUFFICIENT_FUNDS');
      assert.equal((await getAccount(account.id)).balance, 500);
    });
  });

  describe('amounts', () => {
    it('when an amount is 0, negative, a float, a string or above 2^53-1, then every money route answers 400 and nothing moves', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const bad: unknown[] = [0, -5, 1.5, '10', 9007199254740992, null];
      for (const amount of bad) {
        const requests = [
          moneyPost(`${ACCOUNTS}/${from.id}/deposits`, { amount }, admin),
          moneyPost(`${ACCOUNTS}/${from.id}/withdrawals`, { amount }, alice),
          transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount }),
        ];
        for (const response of await Promise.all(requests)) {
          const error = expectError(response, 400, 'VALIDATION_FAILED');
          assert.equal(error.errors?.[0]?.path, 'amount', `${String(amount)}: ${response.text}`);
        }
      }
      // 9007199254740992 must not be rounded on the way in: sent as raw JSON text.
      const raw = await client.post(`${ACCOUNTS}/${from.id}/deposits`, undefined, {
        token: admin.accessToken,
        raw: '{"amount": 9007199254740993}',
        headers: { 'content-type': 'application/json', 'idempotency-key': key() },
      });
      expectError(raw, 400, 'VALIDATION_FAILED');
      assert.equal((await getAccount(from.id)).balance, 100);
      assert.equal((await getAccount(to.id)).balance, 0);
    });

    it('when a deposit is 9007199254740991, then it is accepted exactly; one more unit is 422 BALANCE_LIMIT_EXCEEDED', async () => {
      const account = await openAccount(alice, 'CHF');
      const deposited = await deposit(account.id, MAX_AMOUNT);
      assert.equal(deposited.amount, MAX_AMOUNT);
      assert.equal((await getAccount(account.id)).balance, MAX_AMOUNT);
      const over = await moneyPost(`${ACCOUNTS}/${account.id}/deposits`, { amount: 1 }, admin);
      expectError(over, 422, 'BALANCE_LIMIT_EXCEEDED');
      assert.equal((await getAccount(account.id)).balance, MAX_AMOUNT);
      // Leave the CHF books at zero again.
      expectTransfer(await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: MAX_AMOUNT }, alice));
    });
  });

  describe('POST /transfers', () => {
    it('when the caller owns fromAccountId and funds suffice, then it is 201 "posted" and both balances move', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const response = await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 400, description: 'rent' });
      const moved = expectTransfer(response);
      assert.deepEqual(
        { from: moved.fromAccountId, to: moved.toAccountId, amount: moved.amount, currency: moved.currency },
        { from: from.id, to: to.id, amount: 400, currency: 'USD' },
      );
      assert.equal(moved.status, 'posted');
      assert.equal(moved.description, 'rent');
      assert.equal((await getAccount(from.id)).balance, 600);
      assert.equal((await getAccount(to.id)).balance, 400);
      const noDescription = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 1 }));
      assert.equal(noDescription.description, null);
    });

    it('when from and to are the same account, then it is 400 with errors[0].path "toAccountId"', async () => {
      const account = await fundedAccount(alice, 100);
      const response = await transfer(alice, { fromAccountId: account.id, toAccountId: account.id, amount: 10 });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.equal(error.errors?.[0]?.path, 'toAccountId');
      assert.equal((await getAccount(account.id)).balance, 100);
    });

    it('when from and to are the same account spelled in different letter case, then it is still 400 (UUIDs are case-insensitive)', async () => {
      const account = await fundedAccount(alice, 100);
      const response = await transfer(alice, { fromAccountId: account.id.toUpperCase(), toAccountId: account.id.toLowerCase(), amount: 10 });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.equal(error.errors?.[0]?.path, 'toAccountId');
      assert.equal((await getAccount(account.id)).balance, 100);
    });

    it("when fromAccountId is unknown or someone else's, or toAccountId is unknown, then it is 404", async () => {
      const mine = await fundedAccount(alice, 100);
      const bobs = await fundedAccount(bob, 100);
      expectError(await transfer(alice, { fromAccountId: randomUUID(), toAccountId: bobs.id, amount: 1 }), 404, 'NOT_FOUND');
      expectError(await transfer(alice, { fromAccountId: bobs.id, toAccountId: mine.id, amount: 1 }), 404, 'NOT_FOUND');
      expectError(await transfer(alice, { fromAccountId: mine.id, toAccountId: randomUUID(), amount: 1 }), 404, 'NOT_FOUND');
      const system = await systemAccount('USD');
      expectError(await transfer(alice, { fromAccountId: mine.id, toAccountId: system.id, amount: 1 }), 404, 'NOT_FOUND');
      expectError(await transfer(admin, { fromAccountId: system.id, toAccountId: mine.id, amount: 1 }), 404, 'NOT_FOUND');
      assert.equal((await getAccount(mine.id)).balance, 100);
      assert.equal((await getAccount(bobs.id)).balance, 100);
    });

    it("when toAccountId is someone else's, then it is allowed; an admin may move from anyone's account", async () => {
      const mine = await fundedAccount(alice, 100);
      const carols = await openAccount(carol);
      expectTransfer(await transfer(alice, { fromAccountId: mine.id, toAccountId: carols.id, amount: 30 }));
      expectTransfer(await transfer(admin, { fromAccountId: mine.id, toAccountId: carols.id, amount: 20 }));
      assert.equal((await getAccount(mine.id)).balance, 50);
      assert.equal((await getAccount(carols.id)).balance, 50);
    });

    it('when the currencies differ, then it is 422 CURRENCY_MISMATCH and nothing moves', async () => {
      const usd = await fundedAccount(alice, 100, 'USD');
      const eur = await openAccount(bob, 'EUR');
      expectError(await transfer(alice, { fromAccountId: usd.id, toAccountId: eur.id, amount: 10 }), 422, 'CURRENCY_MISMATCH');
      assert.equal((await getAccount(usd.id)).balance, 100);
      assert.equal((await getAccount(eur.id)).balance, 0);
    });

    it('when funds do not cover the amount, then it is 422 INSUFFICIENT_FUNDS and nothing moves; the exact balance is fine', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      expectError(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 101 }), 422, 'INSUFFICIENT_FUNDS');
      assert.equal((await getAccount(from.id)).balance, 100);
      expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 100 }));
      assert.equal((await getAccount(from.id)).balance, 0);
      assert.equal((await getAccount(to.id)).balance, 100);
    });

    it('when Idempotency-Key is missing, empty or longer than 255 characters, then it is 400; 255 is accepted', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const body = { fromAccountId: from.id, toAccountId: to.id, amount: 1 };
      expectError(await client.post(TRANSFERS, body, { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
      expectError(await transfer(alice, body, ''), 400, 'VALIDATION_FAILED');
      expectError(await transfer(alice, body, 'k'.repeat(256)), 400, 'VALIDATION_FAILED');
      assert.equal((await getAccount(from.id)).balance, 100);
      expectTransfer(await transfer(alice, body, `${randomUUID()}`.padEnd(255, 'k')));
      assert.equal((await getAccount(from.id)).balance, 99);
    });

    it('when the body has unknown fields or timeoutSeconds without pending, then it is 400', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const base = { fromAccountId: from.id, toAccountId: to.id, amount: 1 };
      expectError(await transfer(alice, { ...base, currency: 'USD' }), 400, 'VALIDATION_FAILED');
      expectError(await transfer(alice, { ...base, timeoutSeconds: 5 }), 400, 'VALIDATION_FAILED');
      expectError(await transfer(alice, { ...base, pending: 'true' }), 400, 'VALIDATION_FAILED');
      expectError(await transfer(alice, { ...base, fromAccountId: 'not-a-uuid' }), 400, 'VALIDATION_FAILED');
      assert.equal((await getAccount(from.id)).balance, 100);
    });
  });

  describe('idempotency', () => {
    it('when the same key and body are sent again, then the first response is replayed byte for byte and no money moves', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const idempotencyKey = key();
      const body = { fromAccountId: from.id, toAccountId: to.id, amount: 250 };
      const first = await transfer(alice, body, idempotencyKey);
      expectTransfer(first);
      assert.equal(first.headers.get('idempotent-replayed'), null);
      // Key order in the body does not make it a different request.
      const again = await transfer(alice, { amount: 250, toAccountId: to.id, fromAccountId: from.id }, idempotencyKey);
      assert.equal(again.status, 201);
      assert.equal(again.text, first.text);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal((await getAccount(from.id)).balance, 750);
      assert.equal((await getAccount(to.id)).balance, 250);
    });

    it('when a deposit is repeated with its Idempotency-Key, then it is replayed and credited once; a 256-character key is 400', async () => {
      const account = await openAccount(alice);
      const tooLong = await client.post(`${ACCOUNTS}/${account.id}/deposits`, { amount: 70 }, {
        token: admin.accessToken,
        headers: { 'idempotency-key': 'k'.repeat(256) },
      });
      expectError(tooLong, 400, 'VALIDATION_FAILED');
      const options = { token: admin.accessToken, headers: { 'idempotency-key': key() } };
      const first = await client.post(`${ACCOUNTS}/${account.id}/deposits`, { amount: 70 }, options);
      expectTransfer(first);
      const again = await client.post(`${ACCOUNTS}/${account.id}/deposits`, { amount: 70 }, options);
      assert.equal(again.status, 201);
      assert.equal(again.text, first.text);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal((await getAccount(account.id)).balance, 70);
    });

    it('when the same key comes with a different body or on another endpoint, then it is 422 IDEMPOTENCY_KEY_REUSED', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const idempotencyKey = key();
      expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 100 }, idempotencyKey));
      const differentBody = await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 101 }, idempotencyKey);
      expectError(differentBody, 422, 'IDEMPOTENCY_KEY_REUSED');
      const withDescription = await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 100, description: 'x' }, idempotencyKey);
      expectError(withDescription, 422, 'IDEMPOTENCY_KEY_REUSED');
      const otherEndpoint = await client.post(
        `${ACCOUNTS}/${from.id}/withdrawals`,
        { amount: 100 },
        { token: alice.accessToken, headers: { 'idempotency-key': idempotencyKey } },
      );
      expectError(otherEndpoint, 422, 'IDEMPOTENCY_KEY_REUSED');
      assert.equal((await getAccount(from.id)).balance, 900);
      assert.equal((await getAccount(to.id)).balance, 100);
    });

    it("when another user sends the same key, then it is their own request (keys are per caller)", async () => {
      const alices = await fundedAccount(alice, 100);
      const bobs = await fundedAccount(bob, 100);
      const idempotencyKey = key();
      const first = expectTransfer(await transfer(alice, { fromAccountId: alices.id, toAccountId: bobs.id, amount: 10 }, idempotencyKey));
      const response = await transfer(bob, { fromAccountId: bobs.id, toAccountId: alices.id, amount: 25 }, idempotencyKey);
      const second = expectTransfer(response);
      assert.equal(response.headers.get('idempotent-replayed'), null);
      assert.notEqual(second.id, first.id);
      assert.equal((await getAccount(alices.id)).balance, 115);
      assert.equal((await getAccount(bobs.id)).balance, 85);
    });

    it('when a stored answer was INSUFFICIENT_FUNDS, then it stays the answer after funds arrive', async () => {
      const from = await openAccount(alice);
      const to = await openAccount(bob);
      const idempotencyKey = key();
      const body = { fromAccountId: from.id, toAccountId: to.id, amount: 50 };
      const first = await transfer(alice, body, idempotencyKey);
      expectError(first, 422, 'INSUFFICIENT_FUNDS');
      await deposit(from.id, 500);
      const again = await transfer(alice, body, idempotencyKey);
      expectError(again, 422, 'INSUFFICIENT_FUNDS', { replayed: true });
      assert.equal(again.text, first.text);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal((await getAccount(from.id)).balance, 500);
      assert.equal((await getAccount(to.id)).balance, 0);
    });

    it('when a pending transfer was posted since, then replaying its creation and its post answers both as first sent', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const createKey = key();
      const body = { fromAccountId: from.id, toAccountId: to.id, amount: 40, pending: true, timeoutSeconds: 3_600 };
      const created = await transfer(alice, body, createKey);
      assert.equal(expectTransfer(created).status, 'pending');
      const postOptions = { token: alice.accessToken, headers: { 'idempotency-key': key() } };
      const posted = await client.post(`/api/v1/transfers/${expectTransfer(created).id}/post`, { amount: 30 }, postOptions);
      assert.equal(expectTransfer(posted).status, 'posted');

      const createdAgain = await transfer(alice, body, createKey);
      assert.equal(createdAgain.text, created.text, 'the creation still answers "pending", as it did');
      assert.equal(createdAgain.headers.get('idempotent-replayed'), 'true');
      const postedAgain = await client.post(`/api/v1/transfers/${expectTransfer(created).id}/post`, { amount: 30 }, postOptions);
      assert.equal(postedAgain.text, posted.text);
      assert.equal(postedAgain.headers.get('idempotent-replayed'), 'true');
      assert.equal((await getAccount(from.id)).balance, 70);
      assert.equal((await getAccount(to.id)).balance, 30);
    });

    it('when a stored answer was 404, then it is replayed', async () => {
      const from = await fundedAccount(alice, 100);
      const idempotencyKey = key();
      const body = { fromAccountId: from.id, toAccountId: randomUUID(), amount: 5 };
      const first = await transfer(alice, body, idempotencyKey);
      expectError(first, 404, 'NOT_FOUND');
      const again = await transfer(alice, body, idempotencyKey);
      expectError(again, 404, 'NOT_FOUND', { replayed: true });
      assert.equal(again.text, first.text);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
    });

    it('when the first answer was 400 (or 403), then nothing is stored and the key may be used again', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const badAmountKey = key();
      expectError(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: '10' }, badAmountKey), 400, 'VALIDATION_FAILED');
      const retried = await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 10 }, badAmountKey);
      expectTransfer(retried);
      assert.equal(retried.headers.get('idempotent-replayed'), null);
      const sameAccountKey = key();
      expectError(await transfer(alice, { fromAccountId: from.id, toAccountId: from.id, amount: 10 }, sameAccountKey), 400, 'VALIDATION_FAILED');
      expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 10 }, sameAccountKey));
      const forbiddenKey = key();
      const forbidden = await client.post(`${ACCOUNTS}/${from.id}/deposits`, { amount: 10 }, {
        token: alice.accessToken,
        headers: { 'idempotency-key': forbiddenKey },
      });
      expectError(forbidden, 403, 'FORBIDDEN');
      expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 10 }, forbiddenKey));
      assert.equal((await getAccount(from.id)).balance, 70);
      assert.equal((await getAccount(to.id)).balance, 30);
    });
  });

  describe('GET /transfers/:id', () => {
    it("when either party's owner or an admin reads a transfer, then it is 200; anyone else gets 404", async () => {
      const from = await fundedAccount(alice, 100);
      const to = await openAccount(bob);
      const moved = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 10 }));
      for (const reader of [alice, bob, admin]) {
        const response = await client.get(`${TRANSFERS}/${moved.id}`, { token: reader.accessToken });
        assert.deepEqual(expectTransfer(response, 200), moved);
      }
      expectError(await client.get(`${TRANSFERS}/${moved.id}`, { token: carol.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.get(`${TRANSFERS}/${randomUUID()}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.get(`${TRANSFERS}/nope`, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
      // A deposit's only user party is the account's owner.
      const deposited = await deposit(from.id, 5);
      assert.deepEqual(expectTransfer(await client.get(`${TRANSFERS}/${deposited.id}`, { token: alice.accessToken }), 200), deposited);
      expectError(await client.get(`${TRANSFERS}/${deposited.id}`, { token: bob.accessToken }), 404, 'NOT_FOUND');
    });
  });

  describe('GET /accounts/:id/transfers', () => {
    it('when history is paged with a cursor, then it is newest first, pages neither overlap nor skip, and ends with nextCursor null', async () => {
      const account = await openAccount(alice);
      const bobs = await fundedAccount(bob, 1_000);
      const created: string[] = [];
      for (let index = 0; index < 4; index++) created.push((await deposit(account.id, 100 + index)).id);
      created.push(expectTransfer(await transfer(alice, { fromAccountId: account.id, toAccountId: bobs.id, amount: 7 })).id);
      created.push(expectTransfer(await transfer(bob, { fromAccountId: bobs.id, toAccountId: account.id, amount: 9 })).id);
      created.push(
        expectTransfer(await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 3 }, alice)).id,
      );
      created.push(expectTransfer(await transfer(alice, { fromAccountId: account.id, toAccountId: bobs.id, amount: 11 })).id);
      const newestFirst = [...created].reverse();

      const full = await client.get<History>(`${ACCOUNTS}/${account.id}/transfers?limit=100`, { token: alice.accessToken });
      assert.equal(full.status, 200, full.text);
      assert.deepEqual(full.body.data.map((item) => item.id), newestFirst);
      assert.equal(full.body.meta.nextCursor, null);
      const defaultLimit = await client.get<History>(`${ACCOUNTS}/${account.id}/transfers`, { token: alice.accessToken });
      assert.equal(defaultLimit.body.data.length, 8);

      const paged: string[] = [];
      const pageSizes: number[] = [];
      let cursor: string | null = null;
      do {
        const query: string = cursor === null ? 'limit=3' : `limit=3&cursor=${encodeURIComponent(cursor)}`;
        const page = await client.get<History>(`${ACCOUNTS}/${account.id}/transfers?${query}`, { token: alice.accessToken });
        assert.equal(page.status, 200, page.text);
        assert.deepEqual(Object.keys(page.body.meta), ['nextCursor']);
        page.body.data.forEach((item) => paged.push(item.id));
        pageSizes.push(page.body.data.length);
        cursor = page.body.meta.nextCursor;
        assert.ok(pageSizes.length <= 5, 'pagination does not end');
      } while (cursor !== null);
      assert.deepEqual(pageSizes, [3, 3, 2]);
      assert.deepEqual(paged, newestFirst);
    });

    it('when the cursor is malformed or the limit is out of bounds, then it is 400; a stranger gets 404', async () => {
      const account = await fundedAccount(alice, 10);
      const path = `${ACCOUNTS}/${account.id}/transfers`;
      const forged = Buffer.from('yesterday|not-an-id').toString('base64url');
      for (const query of ['cursor=%21%21%21', `cursor=${forged}`, 'cursor=', 'limit=0', 'limit=101', 'limit=ten']) {
        expectError(await client.get(`${path}?${query}`, { token: alice.accessToken }), 400, 'VALIDATION_FAILED');
      }
      const maximal = await client.get<History>(`${path}?limit=100`, { token: alice.accessToken });
      assert.equal(maximal.status, 200, maximal.text);
      assert.equal(maximal.body.data.length, 1);
      expectError(await client.get(path, { token: bob.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.get(`${ACCOUNTS}/${randomUUID()}/transfers`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      assert.equal((await client.get(path, { token: admin.accessToken })).status, 200);
    });

    it('when a cursor is forged in the shape the API issues but with a malformed id or an out-of-range time, then it is 400, never 500', async () => {
      const account = await fundedAccount(alice, 10);
      const forge = (text: string) => Buffer.from(text).toString('base64url');
      const statusOf = async (text: string) =>
        (await client.get(`${ACCOUNTS}/${account.id}/transfers?cursor=${forge(text)}`, { token: alice.accessToken })).status;
      const problems: string[] = [];
      // A malformed id is the contract's "malformed cursor": 400.
      for (const text of [`2026-01-01T00:00:00.000Z|${'-'.repeat(36)}`, `2026-01-01T00:00:00.000Z|${'a'.repeat(36)}`]) {
        const status = await statusOf(text);
        if (status !== 400) problems.push(`${text} -> ${status}, expected 400`);
      }
      // A time no database can store: 400 preferred, an (empty) page tolerated, never 5xx.
      for (const text of [`+275760-09-13T00:00:00.000Z|${randomUUID()}`, `-000001-01-01T00:00:00.000Z|${randomUUID()}`]) {
        const status = await statusOf(text);
        if (status !== 400 && status !== 200) problems.push(`${text} -> ${status}, expected 400 (or 200)`);
      }
      assert.deepEqual(problems, []);
    });
  });

  describe('DELETE /users/:id and accounts', () => {
    it('when the user still has money, then delete is 409 ACCOUNT_NOT_EMPTY; at zero it is 204 and the account is gone', async () => {
      const victim = await registerAndLogin(client, { name: 'Leaving' });
      const account = await fundedAccount(victim, 300);
      const aliceAccount = await fundedAccount(alice, 100);
      const blocked = await client.delete(`/api/v1/users/${victim.user.id}`, { token: admin.accessToken });
      expectError(blocked, 409, 'ACCOUNT_NOT_EMPTY');
      assert.equal((await getAccount(account.id)).balance, 300);

      expectTransfer(await moneyPost(`${ACCOUNTS}/${account.id}/withdrawals`, { amount: 300 }, victim));
      const deleted = await client.delete(`/api/v1/users/${victim.user.id}`, { token: admin.accessToken });
      assert.equal(deleted.status, 204, deleted.text);

      expectError(await client.get(`${ACCOUNTS}/${account.id}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      const listed = await client.get<AccountPage>(`${ACCOUNTS}?ownerId=${victim.user.id}`, { token: admin.accessToken });
      assert.equal(listed.status, 200);
      assert.deepEqual(listed.body.data, []);
      expectError(await transfer(alice, { fromAccountId: aliceAccount.id, toAccountId: account.id, amount: 10 }), 404, 'NOT_FOUND');
      const depositToClosed = await moneyPost(`${ACCOUNTS}/${account.id}/deposits`, { amount: 10 }, admin);
      expectError(depositToClosed, 404, 'NOT_FOUND');
      assert.equal((await getAccount(aliceAccount.id)).balance, 100);
    });
  });

  describe('two-phase transfers', () => {
    const post = (as: Session, id: string, body?: Record<string, unknown>) =>
      client.post(`${TRANSFERS}/${id}/post`, body, { token: as.accessToken });
    const voidIt = (as: Session, id: string) => client.post(`${TRANSFERS}/${id}/void`, undefined, { token: as.accessToken });
    const readTransfer = async (id: string): Promise<Transfer> =>
      expectTransfer(await client.get(`${TRANSFERS}/${id}`, { token: admin.accessToken }), 200);

    it('when a pending transfer is made, then availableBalance drops by the reservation but balance does not', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const pending = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 300, pending: true }));
      assert.equal(pending.status, 'pending');
      assert.equal(pending.expiresAt, undefined);
      const reserved = await getAccount(from.id);
      assert.equal(reserved.balance, 1_000);
      assert.equal(reserved.availableBalance, 700);
      const target = await getAccount(to.id);
      assert.equal(target.balance, 0);
      assert.equal(target.availableBalance, 0);
      // The reservation is not spendable.
      expectError(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 701 }), 422, 'INSUFFICIENT_FUNDS');
      expectError(
        await moneyPost(`${ACCOUNTS}/${from.id}/withdrawals`, { amount: 701 }, alice),
        422,
        'INSUFFICIENT_FUNDS',
      );
      expectError(
        await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 701, pending: true }),
        422,
        'INSUFFICIENT_FUNDS',
      );
      assert.equal((await readTransfer(pending.id)).status, 'pending');
    });

    it('when a pending transfer is posted in full, then the money moves and a second post or a void is 409 PENDING_ALREADY_POSTED', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const pending = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 300, pending: true }));
      const posted = expectTransfer(await post(alice, pending.id));
      assert.equal(posted.status, 'posted');
      assert.equal(posted.pendingId, pending.id);
      assert.equal(posted.amount, 300);
      assert.deepEqual([posted.fromAccountId, posted.toAccountId], [from.id, to.id]);
      const debited = await getAccount(from.id);
      assert.deepEqual([debited.balance, debited.availableBalance], [700, 700]);
      const credited = await getAccount(to.id);
      assert.deepEqual([credited.balance, credited.availableBalance], [300, 300]);
      assert.equal((await readTransfer(pending.id)).status, 'posted');
      expectError(await post(alice, pending.id, {}), 409, 'PENDING_ALREADY_POSTED');
      expectError(await voidIt(alice, pending.id), 409, 'PENDING_ALREADY_POSTED');
      assert.equal((await getAccount(from.id)).balance, 700);
      assert.equal((await getAccount(to.id)).balance, 300);
    });

    it('when a pending transfer is posted for less, then only that amount moves and the rest is released', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const pending = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 200, pending: true }));
      expectError(await post(alice, pending.id, { amount: 201 }), 422, 'AMOUNT_EXCEEDS_PENDING');
      expectError(await post(alice, pending.id, { amount: 0 }), 400, 'VALIDATION_FAILED');
      expectError(await post(alice, pending.id, { amount: 10, extra: true }), 400, 'VALIDATION_FAILED');
      assert.equal((await getAccount(from.id)).availableBalance, 800);
      const posted = expectTransfer(await post(alice, pending.id, { amount: 150 }));
      assert.equal(posted.amount, 150);
      const debited = await getAccount(from.id);
      assert.deepEqual([debited.balance, debited.availableBalance], [850, 850]);
      assert.equal((await getAccount(to.id)).balance, 150);
    });

    it('when a pending transfer is voided, then the reservation is released and a second void or a post is 409 PENDING_ALREADY_VOIDED', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const pending = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 400, pending: true }));
      expectError(await voidIt(carol, pending.id), 404, 'NOT_FOUND');
      expectError(await post(carol, pending.id), 404, 'NOT_FOUND');
      const voided = expectTransfer(await voidIt(alice, pending.id));
      assert.equal(voided.status, 'voided');
      assert.equal(voided.pendingId, pending.id);
      const released = await getAccount(from.id);
      assert.deepEqual([released.balance, released.availableBalance], [1_000, 1_000]);
      assert.equal((await getAccount(to.id)).balance, 0);
      assert.equal((await readTransfer(pending.id)).status, 'voided');
      expectError(await voidIt(alice, pending.id), 409, 'PENDING_ALREADY_VOIDED');
      expectError(await post(alice, pending.id), 409, 'PENDING_ALREADY_VOIDED');
      expectError(await post(alice, randomUUID()), 404, 'NOT_FOUND');
      const plain = expectTransfer(await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 1 }));
      expectError(await post(alice, plain.id), 404, 'NOT_FOUND');
    });

    it('when a pending transfer times out, then the sweep expires it, releases the money, and a post is 409', async () => {
      const from = await fundedAccount(alice, 1_000);
      const to = await openAccount(bob);
      const response = await transfer(alice, { fromAccountId: from.id, toAccountId: to.id, amount: 600, pending: true, timeoutSeconds: 1 });
      const pending = expectTransfer(response);
      assert.ok(pending.expiresAt, 'expiresAt is set');
      const delayMs = Date.parse(pending.expiresAt) - Date.parse(pending.createdAt);
      assert.ok(Math.abs(delayMs - 1_000) < 50, `expiresAt is createdAt + 1 s, got ${delayMs} ms`);
      assert.equal((await getAccount(from.id)).availableBalance, 400);

      let status = pending.status;
      const deadline = Date.now() + 5_000;
      while (status !== 'expired' && Date.now() < deadline) {
        await sleep(200);
        status = (await readTransfer(pending.id)).status;
      }
      assert.equal(status, 'expired');
      const released = await getAccount(from.id);
      assert.deepEqual([released.balance, released.availableBalance], [1_000, 1_000]);
      const late = await post(alice, pending.id);
      assert.equal(late.status, 409, late.text);
      const code = (late.body as { error: ErrorDetails }).error.code;
      assert.ok(['PENDING_EXPIRED', 'PENDING_ALREADY_VOIDED'].includes(code), code);
      assert.equal((await getAccount(to.id)).balance, 0);
    });
  });

  describe('the books', () => {
    it('when the suite is done, then checkLedger finds no violation', async () => {
      const report = await checkLedger(server.app.database.db);
      assert.deepEqual(report.violations, {});
      assert.equal(report.ok, true);
      assert.ok(report.counts.transfers > 0);
    });
  });
});
