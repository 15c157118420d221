// The ledger service called directly, as any transport calls it: plain data, a Principal and the
// request's context in; an Account, a Transfer, or a money outcome out. A money outcome is a domain
// value (the transfer, or the rule that refused it, with the id of the request that first produced
// it), the same the first time and on an idempotent replay; errors outside the rules are thrown.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe } from 'node:test';
import type { Application } from '../../src/app.js';
import type { Principal } from '../../src/components/access/index.js';
import type { MoneyOutcome, Transfer } from '../../src/components/ledger/index.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { adminPrincipal, expectDomainError, registerUser } from '../helpers/services.js';

const context = (idempotencyKey?: string) => ({ requestId: `req-${randomUUID()}`, ...(idempotencyKey ? { idempotencyKey } : {}) });

function transferOf(outcome: MoneyOutcome): Transfer {
  assert.ok(outcome.ok, `expected a transfer, got ${outcome.ok ? '' : outcome.error.code}`);
  return outcome.transfer;
}

describeOnBackends('ledger service', ({ it, before, startApplication }) => {
  let app: Application;
  let admin: Principal;
  let alice: Principal;
  let bob: Principal;

  before(async () => {
    ({ app } = await startApplication());
    admin = await adminPrincipal(app);
    [alice, bob] = (await Promise.all([registerUser(app, 'alice'), registerUser(app, 'bob')])).map((user) => user.principal) as [
      Principal,
      Principal,
    ];
  });

  const fundedAccount = async (owner: Principal, amount: number) => {
    const account = await app.ledger.createAccount(owner, { currency: 'USD' });
    if (amount > 0) transferOf(await app.ledger.move(admin, { kind: 'deposit', accountId: account.id, amount }, context(randomUUID())));
    return account;
  };

  describe('accounts', () => {
    it('when a user opens an account, then it is theirs with balance 0; another user reads it as NOT_FOUND', async () => {
      const account = await app.ledger.createAccount(alice, { currency: 'EUR', name: 'Travel' });
      assert.deepEqual(
        { ownerId: account.ownerId, currency: account.currency, name: account.name, balance: account.balance, available: account.availableBalance },
        { ownerId: alice.userId, currency: 'EUR', name: 'Travel', balance: 0, available: 0 },
      );
      assert.deepEqual(await app.ledger.getAccount(alice, account.id.toUpperCase()), account);
      await expectDomainError(app.ledger.getAccount(bob, account.id), 'NOT_FOUND');
      assert.equal((await app.ledger.getAccount(admin, account.id)).id, account.id);
    });

    it('when a user names an owner, then it is FORBIDDEN; the admin may open one for them', async () => {
      await expectDomainError(app.ledger.createAccount(alice, { currency: 'USD', ownerId: alice.userId }), 'FORBIDDEN');
      const opened = await app.ledger.createAccount(admin, { currency: 'USD', ownerId: bob.userId });
      assert.equal(opened.ownerId, bob.userId);
    });
  });

  describe('moves', () => {
    it('when the admin deposits, then the outcome is the posted transfer from the system account, answered to this request', async () => {
      const account = await fundedAccount(alice, 0);
      const request = context(randomUUID());
      const outcome = await app.ledger.move(admin, { kind: 'deposit', accountId: account.id, amount: 500 }, request);
      assert.equal(outcome.replayed, false);
      assert.equal(outcome.requestId, request.requestId);
      const transfer = transferOf(outcome);
      assert.deepEqual(
        { to: transfer.toAccountId, amount: transfer.amount, currency: transfer.currency, status: transfer.status },
        { to: account.id, amount: 500, currency: 'USD', status: 'posted' },
      );
      assert.notEqual(transfer.fromAccountId, account.id);
      assert.equal((await app.ledger.getAccount(alice, account.id)).balance, 500);
      await expectDomainError(app.ledger.move(alice, { kind: 'deposit', accountId: account.id, amount: 1 }, context(randomUUID())), 'FORBIDDEN');
    });

    it('when a rule refuses a transfer, then the outcome carries the domain error and the request id; nothing moves', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 0);
      const request = context();
      const outcome = await app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 101 }, request);
      assert.ok(!outcome.ok);
      assert.equal(outcome.error.code, 'INSUFFICIENT_FUNDS');
      assert.equal(outcome.error.requestId, request.requestId);
      const foreign = await app.ledger.move(bob, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 1 }, context());
      assert.ok(!foreign.ok && foreign.error.code === 'NOT_FOUND', "another user's account is not found");
      assert.equal((await app.ledger.getAccount(alice, from.id)).balance, 100);
    });

    it('when a request is malformed for the domain, then it throws VALIDATION_FAILED before anything is kept', async () => {
      const from = await fundedAccount(alice, 100);
      const key = randomUUID();
      await expectDomainError(
        app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: from.id, amount: 1 }, context(key)),
        'VALIDATION_FAILED',
      );
      const to = await fundedAccount(bob, 0);
      await expectDomainError(
        app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 1, timeoutSeconds: 60 }, context(key)),
        'VALIDATION_FAILED',
      );
      // The key was not used up.
      assert.ok((await app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 1 }, context(key))).ok);
    });
  });

  describe('idempotency', () => {
    it('when a keyed move is repeated from another request, then the first outcome comes back, replayed, with the first request id', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 0);
      const key = randomUUID();
      const command = { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 60 } as const;
      const first = await app.ledger.move(alice, command, context(key));
      const again = await app.ledger.move(alice, { ...command, accountId: from.id.toUpperCase() }, context(key));
      assert.equal(again.replayed, true);
      assert.equal(again.requestId, first.requestId);
      assert.deepEqual(transferOf(again), transferOf(first));
      // A refusal is kept too, and stays the answer when the balance would now allow it.
      const refused = await app.ledger.move(alice, { ...command, amount: 41 }, context(`${key}-2`));
      assert.ok(!refused.ok && refused.error.code === 'INSUFFICIENT_FUNDS');
      transferOf(await app.ledger.move(admin, { kind: 'deposit', accountId: from.id, amount: 100 }, context(randomUUID())));
      const refusedAgain = await app.ledger.move(alice, { ...command, amount: 41 }, context(`${key}-2`));
      assert.ok(!refusedAgain.ok && refusedAgain.replayed && refusedAgain.error.requestId === refused.requestId);
      assert.equal((await app.ledger.getAccount(alice, from.id)).balance, 140);
    });

    it('when a key comes back with the defaults spelt out (pending: false, description: null), then it is the same request: replayed', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 0);
      const key = randomUUID();
      const first = await app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 10 }, context(key));
      const spelt = await app.ledger.move(
        alice,
        { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 10, pending: false, description: null },
        context(key),
      );
      assert.equal(spelt.replayed, true);
      assert.deepEqual(transferOf(spelt), transferOf(first));
      assert.equal((await app.ledger.getAccount(alice, from.id)).balance, 90);
    });

    it('when a key comes back with another operation, then IDEMPOTENCY_KEY_REUSED is thrown; another caller may use the same key', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 100);
      const key = randomUUID();
      transferOf(await app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 10 }, context(key)));
      await expectDomainError(
        app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 11 }, context(key)),
        'IDEMPOTENCY_KEY_REUSED',
      );
      await expectDomainError(app.ledger.move(alice, { kind: 'withdrawal', accountId: from.id, amount: 10 }, context(key)), 'IDEMPOTENCY_KEY_REUSED');
      await expectDomainError(app.ledger.resolvePending(alice, randomUUID(), { kind: 'void' }, context(key)), 'IDEMPOTENCY_KEY_REUSED');
      const bobs = await app.ledger.move(bob, { kind: 'transfer', accountId: to.id, toAccountId: from.id, amount: 5 }, context(key));
      assert.equal(bobs.replayed, false);
      transferOf(bobs);
    });

    it('when the same key runs twice at once, then one moves the money and the other is IDEMPOTENCY_IN_PROGRESS or its replay', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 0);
      const key = randomUUID();
      const command = { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 30 } as const;
      const settled = await Promise.allSettled([app.ledger.move(alice, command, context(key)), app.ledger.move(alice, command, context(key))]);
      const fresh = settled.filter((result) => result.status === 'fulfilled' && !result.value.replayed);
      assert.equal(fresh.length, 1, 'exactly one executed');
      for (const result of settled) {
        if (result.status === 'rejected') assert.equal((result.reason as { code?: string }).code, 'IDEMPOTENCY_IN_PROGRESS');
      }
      assert.equal((await app.ledger.getAccount(alice, from.id)).balance, 70);
    });
  });

  describe('two-phase', () => {
    it('when a pending transfer is posted in part, then the rest is released; a second post is PENDING_ALREADY_POSTED', async () => {
      const from = await fundedAccount(alice, 100);
      const to = await fundedAccount(bob, 0);
      const pending = transferOf(
        await app.ledger.move(alice, { kind: 'transfer', accountId: from.id, toAccountId: to.id, amount: 80, pending: true }, context()),
      );
      assert.equal(pending.status, 'pending');
      const reserved = await app.ledger.getAccount(alice, from.id);
      assert.deepEqual([reserved.balance, reserved.availableBalance], [100, 20]);
      const tooMuch = await app.ledger.resolvePending(alice, pending.id, { kind: 'post', amount: 81 }, context());
      assert.ok(!tooMuch.ok && tooMuch.error.code === 'AMOUNT_EXCEEDS_PENDING');
      await expectDomainError(app.ledger.resolvePending(bob, pending.id, { kind: 'void' }, context()).then((outcome) => {
        if (!outcome.ok) throw outcome.error;
      }), 'NOT_FOUND');
      const posted = transferOf(await app.ledger.resolvePending(alice, pending.id, { kind: 'post', amount: 50 }, context()));
      assert.deepEqual({ status: posted.status, amount: posted.amount, pendingId: posted.pendingId }, { status: 'posted', amount: 50, pendingId: pending.id });
      const again = await app.ledger.resolvePending(alice, pending.id, { kind: 'void' }, context());
      assert.ok(!again.ok && again.error.code === 'PENDING_ALREADY_POSTED');
      const after = await app.ledger.getAccount(alice, from.id);
      assert.deepEqual([after.balance, after.availableBalance], [50, 50]);
      assert.equal((await app.ledger.getTransfer(bob, pending.id)).status, 'posted');
      assert.equal((await app.ledger.getAccount(bob, to.id)).balance, 50);
    });
  });
});
