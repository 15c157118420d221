// Closing a user as a saga (issue 12, item 6): freeze, settle, revoke, delete — each step recorded,
// a refusal compensated (accounts unfrozen, nothing lost), and a closure whose process died
// mid-way finished by the service started again.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import pg from 'pg';
import type { Application } from '../../src/app.js';
import type { Principal } from '../../src/components/access/index.js';
import type { Closure } from '../../src/components/closures/index.js';
import { checkLedger, type MoneyOutcome } from '../../src/components/ledger/index.js';
import { loginAdmin, registerAndLogin } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { adminPrincipal, registerUser } from '../helpers/services.js';
import { createClient } from '../helpers/client.js';
import { serviceEnv, startServiceProcess, type ServiceProcess } from '../ops/service-process.js';

const context = () => ({ requestId: `req-${randomUUID()}`, idempotencyKey: randomUUID() });

function ok(outcome: MoneyOutcome): void {
  assert.ok(outcome.ok, outcome.ok ? '' : outcome.error.code);
}

/** Waits until the user's closure has ended (completed or compensated). */
async function ended(app: Application, admin: Principal, userId: string, withinMs = 20_000): Promise<Closure> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const closure = await app.closures.get(admin, userId);
    if (closure.status === 'completed' || closure.status === 'compensated') return closure;
    if (Date.now() > deadline) assert.fail(`closure still ${closure.status} at ${closure.step}`);
    await sleep(50);
  }
}

describeOnBackends('user closure saga', ({ backend, it, before, startApplication, startServer, createDatabase, defer }) => {
  let app: Application;
  let admin: Principal;
  /** Test seam: a closure's runner waits here after recording `holdAfter` until `release`. */
  let holdAfter: string | undefined;
  let release: (() => void) | undefined;
  let held: Promise<void> | undefined;
  let reached: (() => void) | undefined;

  before(async () => {
    ({ app } = await startApplication(
      { PENDING_SWEEP_INTERVAL_MS: '60000' },
      {
        application: {
          closurePauses: {
            afterStep: async (_closureId, step) => {
              if (step !== holdAfter) return;
              reached?.();
              await held;
            },
          },
        },
      },
    ));
    admin = await adminPrincipal(app);
  });

  const fundedUser = async (amounts: readonly number[]) => {
    const { user, principal } = await registerUser(app, 'closing');
    const accounts = [];
    for (const amount of amounts) {
      const account = await app.ledger.createAccount(principal, { currency: 'USD' });
      if (amount > 0) ok(await app.ledger.move(admin, { kind: 'deposit', accountId: account.id, amount }, context()));
      accounts.push(account);
    }
    return { user, principal, accounts };
  };

  it('when a user with money is closed without withdrawBalances, then the closure is compensated: ACCOUNT_NOT_EMPTY, accounts unfrozen, money and user intact', async () => {
    const { user, principal, accounts } = await fundedUser([500, 0]);
    const [rich, other] = accounts;
    assert.ok(rich && other);
    const started = await app.closures.start(admin, user.id, {});
    assert.equal(started.status, 'running');
    const closure = await ended(app, admin, user.id);
    assert.equal(closure.status, 'compensated');
    assert.equal(closure.error, 'ACCOUNT_NOT_EMPTY');
    assert.deepEqual(
      closure.steps.map((step) => `${step.step}:${step.outcome}`),
      ['freeze:done', 'settle:refused', 'unfreeze:done'],
    );
    // Unfrozen: the owner moves money again; the user still exists.
    ok(await app.ledger.move(principal, { kind: 'transfer', accountId: rich.id, toAccountId: other.id, amount: 100 }, context()));
    assert.equal((await app.ledger.getAccount(principal, rich.id)).balance, 400);
    assert.ok(await app.users.getState(user.id));
  });

  it('when a closure with withdrawBalances runs, then pending transfers are voided, balances paid out, sessions ended, accounts closed and the user deleted, each step recorded, with its events', async () => {
    const { user, principal, accounts } = await fundedUser([700, 300]);
    const [first, second] = accounts;
    assert.ok(first && second);
    const { principal: peer } = await registerUser(app, 'peer');
    const peerAccount = await app.ledger.createAccount(peer, { currency: 'USD' });
    ok(await app.ledger.move(admin, { kind: 'deposit', accountId: peerAccount.id, amount: 1_000 }, context()));
    // One pending out of the closing user's account, one pending into it from a peer.
    ok(await app.ledger.move(principal, { kind: 'transfer', accountId: first.id, toAccountId: peerAccount.id, amount: 200, pending: true }, context()));
    ok(await app.ledger.move(peer, { kind: 'transfer', accountId: peerAccount.id, toAccountId: second.id, amount: 50, pending: true }, context()));

    await app.closures.start(admin, user.id, { withdrawBalances: true });
    const closure = await ended(app, admin, user.id);
    assert.equal(closure.status, 'completed');
    assert.deepEqual(
      closure.steps.map((step) => `${step.step}:${step.outcome}`),
      ['freeze:done', 'settle:done', 'revoke:done', 'delete:done'],
    );
    assert.equal(await app.users.getState(user.id), null);
    const rows = await app.database.db
      .selectFrom('accounts')
      .select(['id', 'balance', 'pending_debits', 'closed_at'])
      .where('owner_id', '=', user.id)
      .execute();
    assert.equal(rows.length, 2);
    for (const row of rows) {
      assert.equal(Number(row.balance), 0);
      assert.equal(Number(row.pending_debits), 0);
      assert.notEqual(row.closed_at, null);
    }
    // The peer's reservation was released by the void; its money is whole again.
    assert.equal((await app.ledger.getAccount(peer, peerAccount.id)).availableBalance, 1_000);
    const types = (
      await sql<{ type: string }>`select type from outbox_events where subject in (${sql.join(
        [`users/${user.id}`, ...rows.map((row) => `accounts/${row.id}`)],
      )}) order by seq`.execute(app.database.db)
    ).rows.map((row) => row.type);
    assert.deepEqual(types.slice(-3).sort(), ['account.closed', 'account.closed', 'user.deleted']);
    const payouts = await sql<{ count: string }>`
      select count(*)::text as count from transfers where kind = 'withdrawal' and description = 'closure payout'
        and from_account_id in (${sql.join(rows.map((row) => row.id))})`.execute(app.database.db);
    assert.equal(payouts.rows[0]?.count, '2');
    assert.equal((await checkLedger(app.database.db)).ok, true);
  });

  it('when a closure has frozen the accounts, then the owner can neither send, receive nor post from them until it ends', async () => {
    const { user, principal, accounts } = await fundedUser([400]);
    const [account] = accounts;
    assert.ok(account);
    const { principal: peer } = await registerUser(app, 'peer');
    const peerAccount = await app.ledger.createAccount(peer, { currency: 'USD' });
    ok(await app.ledger.move(admin, { kind: 'deposit', accountId: peerAccount.id, amount: 100 }, context()));
    const pendingOut = await app.ledger.move(principal, { kind: 'transfer', accountId: account.id, toAccountId: peerAccount.id, amount: 10, pending: true }, context());
    assert.ok(pendingOut.ok);

    holdAfter = 'freeze';
    const reachedFreeze = new Promise<void>((resolve) => (reached = resolve));
    held = new Promise<void>((resolve) => (release = resolve));
    await app.closures.start(admin, user.id, {});
    await reachedFreeze;
    try {
      const send = await app.ledger.move(principal, { kind: 'transfer', accountId: account.id, toAccountId: peerAccount.id, amount: 1 }, context());
      assert.equal(send.ok ? 'OK' : send.error.code, 'NOT_FOUND');
      const receive = await app.ledger.move(peer, { kind: 'transfer', accountId: peerAccount.id, toAccountId: account.id, amount: 1 }, context());
      assert.equal(receive.ok ? 'OK' : receive.error.code, 'NOT_FOUND');
      const post = await app.ledger.resolvePending(principal, pendingOut.transfer.id, { kind: 'post' }, context());
      assert.equal(post.ok ? 'OK' : post.error.code, 'NOT_FOUND');
      const withdraw = await app.ledger.move(principal, { kind: 'withdrawal', accountId: account.id, amount: 1 }, context());
      assert.equal(withdraw.ok ? 'OK' : withdraw.error.code, 'NOT_FOUND');
    } finally {
      holdAfter = undefined;
      release?.();
    }
    // Refused for the money left: compensated, and the account works again.
    assert.equal((await ended(app, admin, user.id)).status, 'compensated');
    ok(await app.ledger.move(principal, { kind: 'transfer', accountId: account.id, toAccountId: peerAccount.id, amount: 1 }, context()));
  });

  it('when a closure is started twice, then the second joins the first: one saga, one record', async () => {
    const { user } = await fundedUser([0]);
    const [a, b] = await Promise.all([app.closures.start(admin, user.id, {}), app.closures.start(admin, user.id, {})]);
    assert.equal(a.id, b.id);
    const closure = await ended(app, admin, user.id);
    assert.equal(closure.status, 'completed');
    assert.equal(closure.steps.filter((step) => step.step === 'delete').length, 1);
  });

  it('over REST: POST /users/:id/closure is 202 for an admin, 403 for a user, 404 for nobody, 400 for unknown fields; GET shows the steps', async () => {
    const server = await startServer();
    const adminSession = await loginAdmin(server.client);
    const target = await registerAndLogin(server.client);
    const forbidden = await server.client.post(`/api/v1/users/${target.user.id}/closure`, {}, { token: target.accessToken });
    assert.equal(forbidden.status, 403);
    const unknown = await server.client.post(`/api/v1/users/${randomUUID()}/closure`, {}, { token: adminSession.accessToken });
    assert.equal(unknown.status, 404);
    const strict = await server.client.post(`/api/v1/users/${target.user.id}/closure`, { drain: true }, { token: adminSession.accessToken });
    assert.equal(strict.status, 400);
    const started = await server.client.post<{ data: Closure }>(`/api/v1/users/${target.user.id}/closure`, { withdrawBalances: true }, { token: adminSession.accessToken });
    assert.equal(started.status, 202);
    assert.equal(started.body.data.userId, target.user.id);
    let closure: Closure | undefined;
    for (let attempt = 0; attempt < 200; attempt++) {
      const read = await server.client.get<{ data: Closure }>(`/api/v1/users/${target.user.id}/closure`, { token: adminSession.accessToken });
      assert.equal(read.status, 200);
      closure = read.body.data;
      if (closure.status === 'completed') break;
      await sleep(50);
    }
    assert.equal(closure?.status, 'completed');
    // The closed user's token no longer works.
    assert.equal((await server.client.get('/api/v1/users/me', { token: target.accessToken })).status, 401);
  });

  it(
    'when the service is SIGKILLed in the middle of a closure, then the service started again finishes it: each payout made once, the ledger balanced',
    { skip: backend.name === 'pglite' ? 'a second process cannot open a PGlite directory while the test reads it; the resume logic is the same' : undefined },
    async () => {
      const database = await createDatabase({ pgliteTemplate: true });
      let service: ServiceProcess = await startServiceProcess(serviceEnv(database, { LOG_LEVEL: 'warn' }));
      defer(() => service.kill());
      const call = async <T>(method: string, path: string, token: string | undefined, body?: unknown, key?: string) => {
        const response = await createClient(service.baseUrl).request<T>(method, path, body, {
          ...(token ? { token } : {}),
          ...(key ? { headers: { 'idempotency-key': key } } : {}),
        });
        return { status: response.status, body: response.body };
      };
      const adminToken = (await call<{ data: { accessToken: string } }>('POST', '/api/v1/auth/login', undefined, { email: 'admin@bastion.test', password: 'admin-password-1' })).body.data.accessToken;
      // Many accounts, each with a balance and a pending transfer: settle takes a while.
      const email = `crash-${randomUUID()}@example.com`;
      const registered = await call<{ data: { id: string } }>('POST', '/api/v1/auth/register', undefined, { email, name: 'Crash', password: 'password-123' });
      const userId = registered.body.data.id;
      const userToken = (await call<{ data: { accessToken: string } }>('POST', '/api/v1/auth/login', undefined, { email, password: 'password-123' })).body.data.accessToken;
      const accountIds: string[] = [];
      for (let index = 0; index < 40; index++) {
        const account = await call<{ data: { id: string } }>('POST', '/api/v1/accounts', userToken, { currency: 'USD' });
        accountIds.push(account.body.data.id);
        await call('POST', `/api/v1/accounts/${account.body.data.id}/deposits`, adminToken, { amount: 1_000 + index }, randomUUID());
      }
      const observer = new pg.Client({ connectionString: database.databaseUrl });
      await observer.connect();
      defer(() => observer.end());
      const started = await call<{ data: Closure }>('POST', `/api/v1/users/${userId}/closure`, adminToken, { withdrawBalances: true });
      assert.equal(started.status, 202);
      // Kill as soon as the first step is recorded: settle (40 payouts) is then under way.
      for (let attempt = 0; ; attempt++) {
        const steps = await observer.query('select step from saga_steps where saga_id = $1', [started.body.data.id]);
        if (steps.rowCount && steps.rowCount > 0) break;
        if (attempt > 2_000) assert.fail('the closure never recorded its first step');
        await sleep(2);
      }
      await service.kill();
      const atKill = await observer.query<{ status: string; step: string }>('select status, step from sagas where id = $1', [started.body.data.id]);
      assert.equal(atKill.rows[0]?.status, 'running', 'killed after the closure finished: the test proves nothing');

      service = await startServiceProcess(serviceEnv(database, { LOG_LEVEL: 'warn' }));
      const deadline = Date.now() + 60_000;
      for (;;) {
        const state = await observer.query<{ status: string }>('select status from sagas where id = $1', [started.body.data.id]);
        if (state.rows[0]?.status === 'completed') break;
        assert.ok(Date.now() < deadline, `closure still ${state.rows[0]?.status} a minute after the restart (the crashed runner's lease is 10 s)`);
        await sleep(100);
      }
      const payouts = await observer.query<{ from_account_id: string; count: string }>(
        `select from_account_id, count(*)::text as count from transfers where kind = 'withdrawal' and description = 'closure payout'
         and from_account_id = any($1::uuid[]) group by from_account_id`,
        [accountIds],
      );
      assert.equal(payouts.rowCount, 40);
      assert.ok(payouts.rows.every((row) => row.count === '1'), 'an account was paid out twice');
      const balances = await observer.query<{ total: string }>('select sum(balance)::text as total from accounts where id = any($1::uuid[])', [accountIds]);
      assert.equal(balances.rows[0]?.total, '0');
      const check = await observer.query<{ total: string }>('select sum(amount)::text as total from entries');
      assert.equal(check.rows[0]?.total, '0', 'entries do not balance');
    },
  );
});
