// The set-based batch (ledger_apply, src/components/ledger/ledger.sql) against a sequential model of
// the rules: random batches of transfers, deposits, withdrawals, pending reservations, posts and
// voids, keyed and not, by owners and by an admin, must give every item the outcome the rules give it
// when the batch's moves run one by one in item order and then its resolutions, and leave every
// balance, reservation and system total where the model does. A batch in which a rule refuses a move
// half-way makes ledger_apply write the moves before it, refuse it, and check the rest again: the
// property finds a wrong running sum or a lost refusal there.
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { sql } from 'kysely';
import { checkLedger } from '../../src/components/ledger/index.js';
import * as ledgerRepo from '../../src/components/ledger/ledger.repo.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const ACCOUNTS = '/api/v1/accounts';
const SHARDS = 32;

interface ModelAccount {
  readonly id: string;
  readonly owner: string;
  readonly currency: string;
  balance: number;
  reserved: number;
}

interface ModelPending {
  readonly id: string;
  readonly from: ModelAccount;
  readonly to: ModelAccount;
  readonly amount: number;
  resolution: 'post' | 'void' | null;
}

/** One generated request; indexes pick among the run's accounts, users, pending transfers and keys. */
interface Spec {
  readonly kind: 'transfer' | 'deposit' | 'withdrawal' | 'post' | 'void';
  readonly account: number;
  readonly counterparty: number;
  readonly amount: number;
  readonly partial: boolean;
  readonly pending: boolean;
  readonly byOwner: boolean;
  readonly key: { readonly kind: 'none' | 'fresh' } | { readonly kind: 'reuse'; readonly index: number; readonly same: boolean };
  readonly shard: number;
}

const specArb: fc.Arbitrary<Spec> = fc.record({
  kind: fc.constantFrom('transfer', 'transfer', 'transfer', 'deposit', 'withdrawal', 'post', 'void'),
  // 0..4: the run's accounts (4: EUR); 5: an id no account has.
  account: fc.integer({ min: 0, max: 5 }),
  counterparty: fc.integer({ min: 0, max: 5 }),
  amount: fc.integer({ min: 1, max: 70 }),
  partial: fc.boolean(),
  pending: fc.boolean(),
  byOwner: fc.boolean(),
  key: fc.oneof(
    fc.constant({ kind: 'none' as const }),
    fc.constant({ kind: 'fresh' as const }),
    fc.record({ kind: fc.constant('reuse' as const), index: fc.nat(), same: fc.boolean() }),
  ),
  shard: fc.integer({ min: 0, max: SHARDS - 1 }),
});

describeOnBackends('ledger batch against the sequential model', ({ it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;
  let owners: Session[];

  before(async () => {
    server = await startServer();
    client = server.client;
    admin = await loginAdmin(client);
    owners = await Promise.all([registerAndLogin(client, { name: 'Ann' }), registerAndLogin(client, { name: 'Ben' })]);
  });

  const openAccount = async (owner: Session, currency: string): Promise<string> => {
    const response = await client.post<{ data: { id: string } }>(ACCOUNTS, { currency }, { token: owner.accessToken });
    assert.equal(response.status, 201, response.text);
    return response.body.data.id;
  };
  const systemTotal = async (currency: string): Promise<number> => {
    const row = await sql<{ total: string }>`select coalesce(sum(s.balance), 0)::text as total
      from system_account_shards s join accounts a on a.id = s.account_id
      where a.owner_id is null and a.currency = ${currency}`.execute(server.app.database.db);
    return Number(row.rows[0]?.total ?? 0);
  };

  it('when random batches run through ledger_apply, then each item gets the sequential model\'s outcome and the balances match it', { timeout: 600_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(specArb, { minLength: 1, maxLength: 24 }), { minLength: 1, maxLength: 5 }), async (batches) => {
        // Fresh accounts per run: Ann's USD, Ben's USD, Ann's USD, Ben's USD, Ann's EUR.
        const [ann, ben] = owners as [Session, Session];
        const ids = await Promise.all([
          openAccount(ann, 'USD'),
          openAccount(ben, 'USD'),
          openAccount(ann, 'USD'),
          openAccount(ben, 'USD'),
          openAccount(ann, 'EUR'),
        ]);
        const accounts: ModelAccount[] = ids.map((id, index) => ({
          id,
          owner: (index % 2 === 0 ? ann : ben).user.id,
          currency: index === 4 ? 'EUR' : 'USD',
          balance: 0,
          reserved: 0,
        }));
        const system = new Map([
          ['USD', await systemTotal('USD')],
          ['EUR', await systemTotal('EUR')],
        ]);
        const pendings: ModelPending[] = [];
        const keys: { principal: string; key: string; fingerprint: Buffer; outcome: string; transferId: string | null }[] = [];
        const unknownId = randomUUID();

        for (const batch of batches) {
          const requests: ledgerRepo.LedgerRequest[] = [];
          const expected: { result: string; outcome?: string; transferId?: string | null; spec: Spec }[] = [];
          const keysInBatch = new Set<string>();
          for (const spec of batch) {
            const account = accounts[spec.account];
            const actor = spec.byOwner && account ? account.owner : admin.user.id;
            const pendingTarget = pendings.length > 0 && spec.account < 5 ? pendings[spec.account % pendings.length] : undefined;
            const base = {
              principalId: actor,
              requestId: randomUUID(),
              id: randomUUID(),
              kind: spec.kind,
              actorSeesAll: actor === admin.user.id,
              now: new Date(),
            } as const;
            let request: ledgerRepo.LedgerRequest =
              spec.kind === 'post' || spec.kind === 'void'
                ? {
                    ...base,
                    pendingId: pendingTarget?.id ?? unknownId,
                    amount: spec.kind === 'post' && spec.partial ? spec.amount : null,
                  }
                : {
                    ...base,
                    accountId: account?.id ?? unknownId,
                    ...(spec.kind === 'transfer' ? { counterpartyId: accounts[spec.counterparty]?.id ?? unknownId } : {}),
                    amount: spec.amount,
                    pending: spec.kind === 'transfer' && spec.pending,
                  };
            if (request.kind === 'transfer' && request.counterpartyId === request.accountId) continue; // the service refuses it first
            const fingerprint = createHash('sha256').update(request.id).digest();
            if (spec.key.kind === 'fresh') {
              request = { ...request, idempotency: { key: `k-${randomUUID()}`, fingerprint } };
            } else if (spec.key.kind === 'reuse' && keys.length > 0) {
              const stored = keys[spec.key.index % keys.length];
              if (stored && !keysInBatch.has(stored.key)) {
                keysInBatch.add(stored.key);
                request = {
                  ...request,
                  principalId: stored.principal,
                  actorSeesAll: stored.principal === admin.user.id,
                  idempotency: { key: stored.key, fingerprint: spec.key.same ? stored.fingerprint : fingerprint },
                };
                expected.push(
                  spec.key.same
                    ? { result: 'replayed', outcome: stored.outcome, transferId: stored.transferId, spec }
                    : { result: 'key_reused', spec },
                );
                requests.push(request);
                continue;
              }
            }
            requests.push(request);
            expected.push({ result: 'executed', spec });
          }
          if (requests.length === 0) continue;

          // The model: moves in item order, then resolutions in item order.
          const byId = new Map(accounts.map((account) => [account.id, account]));
          const decide = (request: ledgerRepo.LedgerRequest): { outcome: string; apply?: () => void } => {
            if (request.kind === 'post' || request.kind === 'void') {
              const pending = pendings.find((candidate) => candidate.id === request.pendingId);
              if (!pending || (!request.actorSeesAll && pending.from.owner !== request.principalId)) return { outcome: 'TRANSFER_NOT_FOUND' };
              if (pending.resolution === 'post') return { outcome: 'PENDING_ALREADY_POSTED' };
              if (pending.resolution === 'void') return { outcome: 'PENDING_ALREADY_VOIDED' };
              const amount = request.amount ?? pending.amount;
              if (request.kind === 'post' && amount > pending.amount) return { outcome: 'AMOUNT_EXCEEDS_PENDING' };
              return {
                outcome: 'OK',
                apply: () => {
                  pending.resolution = request.kind === 'post' ? 'post' : 'void';
                  pending.from.reserved -= pending.amount;
                  if (request.kind === 'post') {
                    pending.from.balance -= amount;
                    pending.to.balance += amount;
                  }
                },
              };
            }
            const account = byId.get(request.accountId ?? '');
            if (!account || (request.kind !== 'deposit' && !request.actorSeesAll && account.owner !== request.principalId)) {
              return { outcome: 'ACCOUNT_NOT_FOUND' };
            }
            const other = request.kind === 'transfer' ? byId.get(request.counterpartyId ?? '') : undefined;
            if (request.kind === 'transfer' && !other) return { outcome: 'COUNTERPARTY_NOT_FOUND' };
            if (other && other.currency !== account.currency) return { outcome: 'CURRENCY_MISMATCH' };
            const amount = request.amount ?? 0;
            const from = request.kind === 'deposit' ? undefined : account;
            if (from && from.balance - from.reserved < amount) return { outcome: 'INSUFFICIENT_FUNDS' };
            return {
              outcome: 'OK',
              apply: () => {
                if (request.kind === 'deposit') {
                  account.balance += amount;
                  system.set(account.currency, (system.get(account.currency) ?? 0) - amount);
                } else if (request.kind === 'withdrawal') {
                  account.balance -= amount;
                  system.set(account.currency, (system.get(account.currency) ?? 0) + amount);
                } else if (request.pending && other) {
                  account.reserved += amount;
                  pendings.push({ id: request.id, from: account, to: other, amount, resolution: null });
                } else if (other) {
                  account.balance -= amount;
                  other.balance += amount;
                }
              },
            };
          };
          const order = requests
            .map((request, index) => ({ request, index }))
            .filter(({ index }) => expected[index]?.result === 'executed')
            .sort((a, b) => Number(a.request.kind === 'post' || a.request.kind === 'void') - Number(b.request.kind === 'post' || b.request.kind === 'void') || a.index - b.index);
          for (const { request, index } of order) {
            const decision = decide(request);
            decision.apply?.();
            const slot = expected[index];
            if (slot) {
              slot.outcome = decision.outcome;
              slot.transferId = decision.outcome === 'OK' ? request.id : null;
            }
          }

          const shard = batch[0]?.shard ?? 0;
          const results = await ledgerRepo.applyBatch(server.app.database.db, requests, shard);
          results.forEach((result, index) => {
            const want = expected[index];
            const request = requests[index];
            assert.ok(want && request);
            const got = result.result === 'executed' || result.result === 'replayed' ? `${result.result} ${result.outcome} ${result.transfer?.id ?? null}` : result.result;
            const wanted = want.result === 'executed' || want.result === 'replayed' ? `${want.result} ${want.outcome} ${want.transferId ?? null}` : want.result;
            assert.equal(got, wanted, `item ${index + 1} of ${JSON.stringify(requests.map((r) => [r.kind, r.accountId ?? r.pendingId, r.counterpartyId, r.amount]))}`);
            if (result.result === 'executed' && request.idempotency) {
              keys.push({
                principal: request.principalId ?? '',
                key: request.idempotency.key,
                fingerprint: Buffer.from(request.idempotency.fingerprint),
                outcome: result.outcome,
                transferId: result.transfer?.id ?? null,
              });
            }
          });

          const rows = await server.app.database.db
            .selectFrom('accounts')
            .select(['id', 'balance', 'pending_debits'])
            .where('id', 'in', ids)
            .execute();
          for (const account of accounts) {
            const row = rows.find((candidate) => candidate.id === account.id);
            assert.deepEqual(
              [Number(row?.balance), Number(row?.pending_debits)],
              [account.balance, account.reserved],
              `balance and reservation of account ${ids.indexOf(account.id)}`,
            );
          }
          for (const [currency, total] of system) assert.equal(await systemTotal(currency), total, `${currency} system total`);
        }
      }),
      { numRuns: 25 },
    );
    const report = await checkLedger(server.app.database.db);
    assert.ok(report.ok, JSON.stringify(report.violations));
  });
});
