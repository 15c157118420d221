// The links of a GraphQL answer (Transfer.fromAccount/toAccount, Account.owner) go through per-request
// DataLoaders: counted at the database driver, a 50-row query reads each linked row once, not once
// per row. The count is taken where every SQL statement passes (pg's Client#query, PGlite#query), so
// a resolver that reads per row makes it fail.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { dataOf, gql } from './gql.js';

/** Statements on the tables these queries read (background jobs touch others, and are switched off). */
const COUNTED = /\b(accounts|users|transfers)\b/i;

let counting = false;
const statements: string[] = [];

function wrapQuery(prototype: object): void {
  const original = Reflect.get(prototype, 'query') as (...args: unknown[]) => unknown;
  Reflect.set(prototype, 'query', function query(this: unknown, ...args: unknown[]): unknown {
    const [text] = args;
    const sqlText = typeof text === 'string' ? text : typeof text === 'object' && text !== null && 'text' in text ? String(text.text) : '';
    if (counting && COUNTED.test(sqlText)) statements.push(sqlText);
    return Reflect.apply(original, this, args);
  });
}
wrapQuery(pg.Client.prototype);
wrapQuery(PGlite.prototype);

async function countStatements(work: () => Promise<void>): Promise<string[]> {
  statements.length = 0;
  counting = true;
  try {
    await work();
  } finally {
    counting = false;
  }
  return [...statements];
}

const key = (): string => `key-${randomUUID()}`;

describeOnBackends('graphql n+1', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;
  let alice: Session;

  before(async () => {
    server = await startServer({ PENDING_SWEEP_INTERVAL_MS: '3600000' });
    admin = await loginAdmin(server.client);
    alice = await registerAndLogin(server.client);
  });

  const openAccount = async (as: Session, ownerId?: string): Promise<string> =>
    dataOf(
      await gql<{ createAccount: { id: string } }>(
        server.client,
        'mutation ($input: CreateAccountInput!) { createAccount(input: $input) { id } }',
        { input: { currency: 'USD', ...(ownerId ? { ownerId } : {}) } },
        { token: as.accessToken },
      ),
    ).createAccount.id;

  it('when 50 transfers are listed with fromAccount and toAccount, then each account is read once, not once per edge', async () => {
    const from = await openAccount(alice);
    const to = await openAccount(admin);
    for (let index = 0; index < 25; index++) {
      dataOf(await gql(server.client, 'mutation ($id: ID!, $k: String!) { deposit(accountId: $id, amount: 10, idempotencyKey: $k) { replayed } }', { id: from, k: key() }, { token: admin.accessToken }));
      dataOf(await gql(server.client, 'mutation ($input: TransferInput!, $k: String!) { transfer(input: $input, idempotencyKey: $k) { replayed } }',
        { input: { fromAccountId: from, toAccountId: to, amount: 1 }, k: key() }, { token: alice.accessToken }));
    }
    const query = `query ($id: ID!) { accountTransfers(accountId: $id, first: 50) { edges { node {
      id fromAccount { id currency owner { id } } toAccount { id balance } } } } }`;
    let edges = 0;
    const counted = await countStatements(async () => {
      const data = dataOf(await gql<{ accountTransfers: { edges: Array<{ node: { fromAccount: { id: string } | null; toAccount: { id: string } | null } }> } }>(
        server.client, query, { id: from }, { token: alice.accessToken }));
      edges = data.accountTransfers.edges.length;
      // alice sees her account on each edge; the system account and the admin's are not hers to see.
      assert.ok(data.accountTransfers.edges.every((edge) => edge.node.fromAccount?.id === from || edge.node.toAccount?.id === from));
    });
    assert.equal(edges, 50);
    // The history (its account check and its page) plus one read per distinct account (system, from,
    // to) and the one owner: per-edge reads would be over 100.
    assert.ok(counted.length <= 8, `${counted.length} statements for 50 edges:\n${counted.join('\n')}`);
  });

  it(
    'when 50 accounts of 50 different owners are listed with their owner, then the owners are read in a constant number of statements',
    async () => {
      const owners = await Promise.all(
        Array.from({ length: 50 }, async (_, index) =>
          dataOf(await gql<{ register: { id: string } }>(server.client, 'mutation ($input: RegisterInput!) { register(input: $input) { id } }', {
            input: { email: `owner-${index}-${randomUUID()}@example.com`, name: `Owner ${index}`, password: 'password-123' },
          })).register.id,
        ),
      );
      for (const ownerId of owners) await openAccount(admin, ownerId);
      const query = '{ accounts(limit: 50) { nodes { id owner { id name } } } }';
      const counted = await countStatements(async () => {
        const data = dataOf(await gql<{ accounts: { nodes: Array<{ owner: { id: string } | null }> } }>(server.client, query, {}, { token: admin.accessToken }));
        assert.equal(data.accounts.nodes.length, 50);
        assert.ok(data.accounts.nodes.every((node) => node.owner !== null));
      });
      assert.ok(counted.length <= 5, `${counted.length} statements for 50 owners`);
    },
  );
});
