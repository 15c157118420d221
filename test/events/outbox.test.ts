// The transactional outbox, read back with SQL: every change other systems care about leaves exactly
// its event, in the transaction that made it, in order, with the resource as the API shows it and
// no secret; a write that fails or is replayed leaves none; the request's traceparent is kept.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { loginAdmin, login, uniqueEmail, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { ISO_UTC, UUID } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';
import { lastSeq, readOutbox, waitUntil, type OutboxRow } from './outbox-helpers.js';

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

interface Account {
  id: string;
  ownerId: string | null;
  currency: string;
  name: string | null;
  createdAt: string;
}
interface Transfer {
  id: string;
  status: string;
  pendingId?: string;
}

const dataOf = <T>(response: ApiResponse<unknown>, status: number): T => {
  assert.equal(response.status, status, response.text);
  return (response.body as { data: T }).data;
};

/** An account in its events: the API's account without the balances and updatedAt. */
const accountEventData = (account: Account) => ({
  id: account.id,
  ownerId: account.ownerId,
  currency: account.currency,
  name: account.name,
  createdAt: account.createdAt,
});

/** Every key of a JSON value, nested ones included. */
function keysOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(keysOf);
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([key, inner]) => [key, ...keysOf(inner)]);
  return [];
}

describeOnBackends('outbox', ({ it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;

  before(async () => {
    server = await startServer({ PENDING_SWEEP_INTERVAL_MS: '50', REFRESH_REUSE_GRACE_SECONDS: '0', LOGIN_MAX_FAILURES: '3' });
    client = server.client;
    admin = await loginAdmin(client);
  });

  const register = async (name: string, password = `pw-${randomUUID()}`) => {
    const email = uniqueEmail(name);
    const user = dataOf<{ id: string; email: string }>(await client.post('/api/v1/auth/register', { email, name, password }), 201);
    return { user, email, password };
  };
  const openAccount = async (token: string, body: Record<string, unknown> = {}) =>
    dataOf<Account>(await client.post('/api/v1/accounts', { currency: 'USD', ...body }, { token }), 201);
  const deposit = async (accountId: string, amount: number) =>
    dataOf<Transfer>(
      await client.post(`/api/v1/accounts/${accountId}/deposits`, { amount }, { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } }),
      201,
    );
  const transfer = (token: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    client.post('/api/v1/transfers', body, { token, headers: { 'idempotency-key': randomUUID(), ...headers } });
  const eventsSince = (seq: number) => readOutbox(server.app, seq);

  it('when users, accounts, transfers and sessions change, then the outbox holds exactly their events, in order, as the API shows them, without secrets', async () => {
    const start = await lastSeq(server.app);
    const secrets: string[] = [];

    const alice = await register('alice');
    const aliceSession = await login(client, alice.email, alice.password);
    const bob = await register('bob');
    secrets.push(alice.password, bob.password, aliceSession.accessToken, aliceSession.refreshToken, admin.accessToken, admin.refreshToken);

    const updatedBob = dataOf<Record<string, unknown>>(
      await client.patch(`/api/v1/users/${bob.user.id}`, { name: 'Robert', role: 'admin' }, { token: admin.accessToken }),
      200,
    );

    const token = aliceSession.accessToken;
    const a1 = await openAccount(token, { name: 'Main' });
    const a2 = await openAccount(token);
    const deposited = await deposit(a1.id, 1_000);
    const moved = dataOf<Transfer>(await transfer(token, { fromAccountId: a1.id, toAccountId: a2.id, amount: 100, description: 'rent' }), 201);

    const toPost = dataOf<Transfer>(await transfer(token, { fromAccountId: a1.id, toAccountId: a2.id, amount: 50, pending: true }), 201);
    const posted = dataOf<Transfer>(await client.post(`/api/v1/transfers/${toPost.id}/post`, {}, { token }), 201);
    const toVoid = dataOf<Transfer>(await transfer(token, { fromAccountId: a1.id, toAccountId: a2.id, amount: 20, pending: true }), 201);
    const voided = dataOf<Transfer>(await client.post(`/api/v1/transfers/${toVoid.id}/void`, {}, { token }), 201);
    const toExpire = dataOf<Transfer>(
      await transfer(token, { fromAccountId: a1.id, toAccountId: a2.id, amount: 10, pending: true, timeoutSeconds: 1 }),
      201,
    );
    await waitUntil(
      async () => (await eventsSince(start)).some((event) => event.type === 'transfer.expired'),
      'the sweep to expire the pending transfer',
    );
    const history = dataOf<Transfer[]>(await client.get(`/api/v1/accounts/${a1.id}/transfers?limit=100`, { token }), 200);
    const expired = history.find((entry) => entry.pendingId === toExpire.id && entry.status === 'expired');

    // Refresh-token reuse: rotate, then present the rotated-away token (no grace).
    const rotated = dataOf<{ refreshToken: string; accessToken: string }>(
      await client.post('/api/v1/auth/refresh', { refreshToken: aliceSession.refreshToken }),
      200,
    );
    secrets.push(rotated.refreshToken, rotated.accessToken);
    const reused = await client.post<{ error: { code: string } }>('/api/v1/auth/refresh', { refreshToken: aliceSession.refreshToken });
    assert.equal(reused.body.error.code, 'TOKEN_REUSED', reused.text);

    // Failed logins up to the throttle (3), and one more refused by it: one lock, told once.
    const wrong = `wrong-${randomUUID()}`;
    secrets.push(wrong);
    for (let attempt = 1; attempt <= 4; attempt++) {
      const failed = await client.post<{ error: { code: string } }>('/api/v1/auth/login', { email: alice.email, password: wrong });
      assert.equal(failed.status, attempt <= 3 ? 401 : 429, `attempt ${attempt}: ${failed.text}`);
    }

    // A user whose accounts are empty is deleted: the accounts close, then the user goes.
    const bobAccount = await openAccount(admin.accessToken, { ownerId: bob.user.id, name: 'Spare' });
    assert.equal((await client.delete(`/api/v1/users/${bob.user.id}`, { token: admin.accessToken })).status, 204);

    const events = await eventsSince(start);
    const users = (id: string) => `users/${id}`;
    const accounts = (id: string) => `accounts/${id}`;
    const transfers = (id: string) => `transfers/${id}`;
    assert.deepEqual(
      events.map((event) => [event.type, event.subject]),
      [
        ['user.created', users(alice.user.id)],
        ['user.created', users(bob.user.id)],
        ['user.updated', users(bob.user.id)],
        ['user.role_changed', users(bob.user.id)],
        ['account.created', accounts(a1.id)],
        ['account.created', accounts(a2.id)],
        ['transfer.created', transfers(deposited.id)],
        ['transfer.created', transfers(moved.id)],
        ['transfer.pending', transfers(toPost.id)],
        ['transfer.posted', transfers(toPost.id)],
        ['transfer.pending', transfers(toVoid.id)],
        ['transfer.voided', transfers(toVoid.id)],
        ['transfer.pending', transfers(toExpire.id)],
        ['transfer.expired', transfers(toExpire.id)],
        ['auth.refresh_reuse_detected', users(alice.user.id)],
        ['auth.login_locked', `logins/${alice.email}`],
        ['account.created', accounts(bobAccount.id)],
        ['account.closed', accounts(bobAccount.id)],
        ['user.deleted', users(bob.user.id)],
      ],
    );

    // The data: the resource as the API showed it in the answer to the change.
    const data = events.map((event) => event.data);
    assert.deepEqual(data[0], { ...alice.user });
    assert.deepEqual(data[1], { ...bob.user });
    assert.deepEqual(data[2], updatedBob);
    assert.deepEqual(data[3], { id: bob.user.id, role: 'admin', previousRole: 'user' });
    assert.deepEqual(data[4], accountEventData(a1));
    assert.deepEqual(data[5], accountEventData(a2));
    assert.deepEqual(data[6], deposited);
    assert.deepEqual(data[7], moved);
    assert.deepEqual(data[8], toPost);
    assert.deepEqual(data[9], posted);
    assert.equal(posted.pendingId, toPost.id);
    assert.deepEqual(data[10], toVoid);
    assert.deepEqual(data[11], voided);
    assert.deepEqual(data[12], toExpire);
    assert.ok(expired, 'the expiry is in the account history');
    assert.deepEqual(data[13], expired);
    assert.deepEqual(Object.keys(data[14] ?? {}).sort(), ['detectedAt', 'sessionId', 'userId']);
    assert.equal(data[14]?.['userId'], alice.user.id);
    assert.deepEqual(Object.keys(data[15] ?? {}).sort(), ['email', 'ip', 'lockedAt', 'lockedUntil']);
    assert.equal(data[15]?.['email'], alice.email);
    assert.deepEqual(data[16], accountEventData(bobAccount));
    const { closedAt, ...closed } = data[17] ?? {};
    const { createdAt: _createdAt, ...opened } = accountEventData(bobAccount);
    assert.deepEqual(closed, opened);
    assert.match(String(closedAt), ISO_UTC);
    const { deletedAt, ...deleted } = data[18] ?? {};
    assert.deepEqual(deleted, { id: bob.user.id });
    assert.match(String(deletedAt), ISO_UTC);

    // Ids: distinct UUIDs. Request-caused events carry the request's trace; the sweep's has none to carry.
    assert.equal(new Set(events.map((event) => event.id)).size, events.length);
    for (const event of events) {
      assert.match(event.id, UUID);
      if (event.type === 'transfer.expired') continue;
      assert.match(event.traceparent ?? '', TRACEPARENT, `${event.type} keeps a traceparent`);
    }

    // No secret anywhere: no key naming one, no password or token value.
    const json = JSON.stringify(data);
    for (const key of keysOf(data)) assert.doesNotMatch(key, /password|hash|token|secret/i, `event data key ${key}`);
    for (const secret of secrets) assert.ok(!json.includes(secret), 'a password or token is in event data');
  });

  it('when a write fails, is replayed or reuses a key with another body, then it leaves no event', async () => {
    const taken = await register('taken');
    const owner = await login(client, taken.email, taken.password);
    const from = await openAccount(owner.accessToken);
    const to = await openAccount(owner.accessToken);
    await deposit(from.id, 100);
    const start = await lastSeq(server.app);

    const again = await client.post<{ error: { code: string } }>('/api/v1/auth/register', { email: taken.email, name: 'Again', password: 'another-password-1' });
    assert.equal(again.body.error.code, 'EMAIL_TAKEN', again.text);
    const tooMuch = await transfer(owner.accessToken, { fromAccountId: from.id, toAccountId: to.id, amount: 101 });
    assert.equal((tooMuch.body as { error: { code: string } }).error.code, 'INSUFFICIENT_FUNDS', tooMuch.text);
    assert.deepEqual(await eventsSince(start), []);

    const key = randomUUID();
    const body = { fromAccountId: from.id, toAccountId: to.id, amount: 30 };
    const first = dataOf<Transfer>(await transfer(owner.accessToken, body, { 'idempotency-key': key }), 201);
    const replay = dataOf<Transfer>(await transfer(owner.accessToken, body, { 'idempotency-key': key }), 201);
    assert.equal(replay.id, first.id);
    const reused = await transfer(owner.accessToken, { ...body, amount: 31 }, { 'idempotency-key': key });
    assert.equal((reused.body as { error: { code: string } }).error.code, 'IDEMPOTENCY_KEY_REUSED', reused.text);

    const events = await eventsSince(start);
    assert.deepEqual(
      events.map((event) => [event.type, event.subject]),
      [['transfer.created', `transfers/${first.id}`]],
    );
  });

  it('when a transfer carries a traceparent, then its event keeps exactly it; an invalid one or none gets a new trace', async () => {
    const owner = await register('traced');
    const session = await login(client, owner.email, owner.password);
    const from = await openAccount(session.accessToken);
    const to = await openAccount(session.accessToken);
    await deposit(from.id, 100);
    const body = { fromAccountId: from.id, toAccountId: to.id, amount: 1 };
    const given = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

    const stored = async (headers: Record<string, string>) => {
      const start = await lastSeq(server.app);
      const made = dataOf<Transfer>(await transfer(session.accessToken, body, headers), 201);
      const [event, ...rest] = await eventsSince(start);
      assert.equal(rest.length, 0);
      assert.equal(event?.subject, `transfers/${made.id}`);
      return event?.traceparent ?? null;
    };

    assert.equal(await stored({ traceparent: given }), given);
    const invalid = await stored({ traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' });
    const garbage = await stored({ traceparent: 'not a trace' });
    const none = await stored({});
    for (const value of [invalid, garbage, none]) assert.match(value ?? '', TRACEPARENT);
    assert.equal(new Set([given, invalid, garbage, none]).size, 4, 'each request without a valid trace starts a new one');
  });

  it('when a GraphQL mutation carries a traceparent, then its events keep it as a REST request\'s do', async () => {
    const owner = await register('traced-gql');
    const session = await login(client, owner.email, owner.password);
    const given = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const start = await lastSeq(server.app);
    const answer = await client.post<{ data: { createAccount: { id: string } } | null }>(
      '/graphql',
      { query: 'mutation { createAccount(input: { currency: "USD" }) { id } }' },
      { token: session.accessToken, headers: { traceparent: given } },
    );
    const accountId = answer.body.data?.createAccount.id;
    assert.ok(accountId, answer.text);
    const [event, ...rest] = await eventsSince(start);
    assert.equal(rest.length, 0);
    assert.equal(event?.type, 'account.created');
    assert.equal(event?.subject, `accounts/${accountId}`);
    assert.equal(event?.traceparent, given);
  });

  it('when 64 transfers run at once, then there is one transfer.created per OK answer, and each account sees its events in the order the money moved', async () => {
    const owner = await register('busy');
    const session = await login(client, owner.email, owner.password);
    const accounts = await Promise.all([0, 1, 2, 3].map(() => openAccount(session.accessToken)));
    for (const account of accounts) await deposit(account.id, 10_000);
    const start = await lastSeq(server.app);

    const answers = await Promise.all(
      Array.from({ length: 64 }, (_, n) => {
        const from = accounts[n % 4] as Account;
        const to = accounts[(n + 1 + ((n >> 2) % 3)) % 4] as Account;
        return transfer(session.accessToken, { fromAccountId: from.id, toAccountId: to.id, amount: n + 1 });
      }),
    );
    const ok = answers.filter((answer) => answer.status === 201).map((answer) => (answer.body as { data: Transfer }).data.id);
    assert.equal(ok.length, 64, answers.find((answer) => answer.status !== 201)?.text);

    const events = await eventsSince(start);
    assert.equal(events.length, ok.length);
    assert.ok(events.every((event) => event.type === 'transfer.created'));
    assert.deepEqual(new Set(events.map((event) => event.subject)), new Set(ok.map((id) => `transfers/${id}`)));

    // The order the money moved, per account: its entries' ids (an identity, handed out as they are
    // written under the account's lock). The outbox's order of the same transfers must match it.
    for (const account of accounts) {
      const { rows } = await sql<{ transfer_id: string }>`
        select transfer_id from entries where account_id = ${account.id} and transfer_id in (${sql.join(ok)})
        order by id`.execute(server.app.database.db);
      const moved = rows.map((row) => `transfers/${row.transfer_id}`);
      const told = events
        .filter((event: OutboxRow) => event.data['fromAccountId'] === account.id || event.data['toAccountId'] === account.id)
        .map((event) => event.subject);
      assert.ok(moved.length > 0);
      assert.deepEqual(told, moved, `account ${account.id}: events in the order its balance changed`);
    }
  });
});

describeOnBackends('outbox off', ({ it, before, startServer }) => {
  let server: TestServer;

  before(async () => {
    server = await startServer({ EVENTS_OUTBOX: 'false' });
  });

  it('when EVENTS_OUTBOX=false, then changes write no event', async () => {
    const admin = await loginAdmin(server.client);
    const email = uniqueEmail('quiet');
    assert.equal((await server.client.post('/api/v1/auth/register', { email, name: 'Quiet', password: 'quiet-password-1' })).status, 201);
    const session = await login(server.client, email, 'quiet-password-1');
    const account = dataOf<Account>(await server.client.post('/api/v1/accounts', { currency: 'USD' }, { token: session.accessToken }), 201);
    const deposit = await server.client.post(
      `/api/v1/accounts/${account.id}/deposits`,
      { amount: 5 },
      { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } },
    );
    assert.equal(deposit.status, 201, deposit.text);
    assert.deepEqual(await readOutbox(server.app), []);
  });
});
