// GraphQL subscriptions over WebSocket with a standard client (graphql-ws, the graphql-transport-ws
// protocol): transferPosted(accountId) delivers what the ledger posts, to callers who may read the
// account, with the same limits and error codes as HTTP; and, with Redis, across instances.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { createClient, type Client as WsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { redisSkipReason, TEST_REDIS_URL } from '../helpers/backends.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { createLoopbackClient, randomLoopbackAddress } from '../helpers/loopback.js';
import type { TestServer } from '../helpers/server.js';
import { dataOf, gql, TRANSFER_FIELDS } from './gql.js';

interface Transfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: number;
  status: string;
  fromAccount: { id: string; balance: string } | null;
  toAccount: { id: string; balance: string } | null;
}
interface SocketError {
  message: string;
  extensions?: { code?: string; status?: number; requestId?: string };
}

const TRANSFER_POSTED = `subscription ($accountId: ID!) {
  transferPosted(accountId: $accountId) { ${TRANSFER_FIELDS} fromAccount { id balance } toAccount { id balance } } }`;
const WAIT_MS = 5_000;

/** What one subscription received: events, and how it ended. */
class Received {
  readonly transfers: Transfer[] = [];
  errors: SocketError[] | undefined;
  completed = false;
  private waiters: Array<() => void> = [];

  push(transfer: Transfer) {
    this.transfers.push(transfer);
    this.wake();
  }
  fail(errors: SocketError[]) {
    this.errors = errors;
    this.wake();
  }
  complete() {
    this.completed = true;
    this.wake();
  }
  private wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
  /** Resolves when `done` holds, or fails after WAIT_MS saying what arrived. */
  async until(what: string, done: () => boolean): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out waiting for ${what}; got ${JSON.stringify({ transfers: this.transfers, errors: this.errors, completed: this.completed })}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

const socketOf = (server: TestServer) => `${server.baseUrl.replace(/^http/, 'ws')}/graphql`;

/** A WebSocket that connects from `localAddress` (a fresh loopback address has fresh rate limits in Redis). */
const boundWebSocket = (localAddress: string) =>
  class extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { localAddress });
    }
  };

/**
 * A graphql-ws client; `closed` resolves when the socket closes, saying whether the server had
 * acknowledged the connection (connection_ack) first.
 */
function connect(server: TestServer, connectionParams: Record<string, unknown> | undefined, localAddress?: string) {
  let acknowledged = false;
  let closedWith: (outcome: { code: number; acknowledged: boolean }) => void = () => undefined;
  const closed = new Promise<{ code: number; acknowledged: boolean }>((resolve) => {
    closedWith = resolve;
  });
  const client: WsClient = createClient({
    url: socketOf(server),
    webSocketImpl: localAddress ? boundWebSocket(localAddress) : WebSocket,
    ...(connectionParams ? { connectionParams } : {}),
    retryAttempts: 0,
    lazy: false,
    on: {
      connected: () => {
        acknowledged = true;
      },
      closed: (event) => closedWith({ code: (event as { code: number }).code, acknowledged }),
    },
    onNonLazyError: () => undefined,
  });
  return { client, closed };
}

function subscribe(client: WsClient, query: string, variables: Record<string, unknown>): { received: Received; stop: () => void } {
  const received = new Received();
  const stop = client.subscribe<{ transferPosted: Transfer }>(
    { query, variables },
    {
      next: (result) => {
        if (result.errors) received.fail(result.errors as unknown as SocketError[]);
        else if (result.data) received.push(result.data.transferPosted);
      },
      error: (error) => received.fail(Array.isArray(error) ? (error as SocketError[]) : [{ message: String((error as { code?: number }).code ?? error) }]),
      complete: () => received.complete(),
    },
  );
  return { received, stop };
}

/** Writes raw bytes to the server; resolves with what came back and whether the server closed the connection. */
const exchange = (server: TestServer, wire: string) =>
  new Promise<{ text: string; closedByServer: boolean }>((resolve) => {
    const socket = net.connect(Number(new URL(server.baseUrl).port), '127.0.0.1', () => socket.write(wire));
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    socket.on('error', () => undefined);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closedByServer: false });
    }, WAIT_MS);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closedByServer: true });
    });
  });

const bearer = (session: Session) => ({ authorization: `Bearer ${session.accessToken}` });

describeOnBackends('graphql subscriptions', ({ it, before, startServer, backend, defer }) => {
  let server: TestServer;
  let admin: Session;
  let alice: Session;
  let bob: Session;

  const openAccount = async (as: Session): Promise<string> => {
    const response = await gql<{ createAccount: { id: string } }>(server.client, 'mutation { createAccount(input: { currency: "USD" }) { id } }', {}, { token: as.accessToken });
    return dataOf(response).createAccount.id;
  };
  const money = async (as: Session, query: string, variables: Record<string, unknown>) =>
    dataOf(await gql<Record<string, { transfer: { id: string; status: string } }>>(server.client, query, { ...variables, key: `k-${randomUUID()}` }, { token: as.accessToken }));
  const deposit = async (accountId: string, amount: number, on = server) =>
    (await gql<{ deposit: { transfer: { id: string } } }>(on.client, 'mutation ($a: ID!, $n: SafeInt!, $key: String!) { deposit(accountId: $a, amount: $n, idempotencyKey: $key) { transfer { id } } }', { a: accountId, n: amount, key: `k-${randomUUID()}` }, { token: admin.accessToken })).body.data?.deposit.transfer.id;
  const transfer = async (as: Session, from: string, to: string, amount: number, pending = false) =>
    (await money(as, 'mutation ($i: TransferInput!, $key: String!) { transfer(input: $i, idempotencyKey: $key) { transfer { id status } } }', { i: { fromAccountId: from, toAccountId: to, amount, pending } }))['transfer']!.transfer;
  /** Waits until the server holds `count` live listeners (a subscription is active only once it does). */
  const listeners = async (count: number, on = server) => {
    const deadline = Date.now() + WAIT_MS;
    while (on.app.live.listenerCount() !== count) {
      if (Date.now() > deadline) assert.fail(`expected ${count} live listeners, have ${on.app.live.listenerCount()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  const opened: WsClient[] = [];
  const open = (params: Record<string, unknown> | undefined, on = server, localAddress?: string) => {
    const connection = connect(on, params, localAddress);
    opened.push(connection.client);
    return connection;
  };

  before(async () => {
    server = await startServer({ GRAPHQL_MAX_DEPTH: '3' });
    defer(async () => {
      await Promise.all(opened.map((client) => client.dispose()));
    });
    admin = await loginAdmin(server.client);
    alice = await registerAndLogin(server.client);
    bob = await registerAndLogin(server.client);
  });

  it('when the owner subscribes and money moves, then each posted transfer arrives once, in order, a pending one only when posted, with its links read afresh', async () => {
    const mine = await openAccount(alice);
    const theirs = await openAccount(bob);
    const { client } = open(bearer(alice));
    const { received, stop } = subscribe(client, TRANSFER_POSTED, { accountId: mine });
    await listeners(1);

    const deposited = await deposit(mine, 1_000);
    const out = await transfer(alice, mine, theirs, 300);
    const pending = await transfer(alice, mine, theirs, 200, true);
    assert.equal(pending.status, 'pending');
    const voidable = await transfer(alice, mine, theirs, 100, true);
    await money(alice, 'mutation ($id: ID!, $key: String) { voidTransfer(id: $id, idempotencyKey: $key) { transfer { id } } }', { id: voidable.id });
    const posted = (await money(alice, 'mutation ($id: ID!, $key: String) { postTransfer(id: $id, idempotencyKey: $key) { transfer { id status } } }', { id: pending.id }))['postTransfer']!.transfer;
    const back = await transfer(bob, theirs, mine, 50);

    await received.until('four posted transfers', () => received.transfers.length >= 4);
    assert.deepEqual(
      received.transfers.map((t) => [t.id, t.status, t.amount]),
      [
        [deposited, 'posted', 1_000],
        [out.id, 'posted', 300],
        [posted.id, 'posted', 200],
        [back.id, 'posted', 50],
      ],
    );
    // The links are read when the event is delivered, not from a cache of the first event.
    assert.equal(received.transfers[0]!.toAccount?.balance, '1000');
    assert.equal(received.transfers[3]!.toAccount?.balance, '550');
    // The other party's account is someone else's: null, as in queries.
    assert.equal(received.transfers[1]!.toAccount, null);
    assert.equal(received.errors, undefined);
    stop();
    await listeners(0);
  });

  it('when a user subscribes to another user\'s account (or an absent or malformed id), then the subscription is refused with the codes REST gives; an admin may watch any account', async () => {
    const bobs = await openAccount(bob);
    const { client } = open(bearer(alice));
    for (const [accountId, code, status] of [
      [bobs, 'NOT_FOUND', 404],
      [randomUUID(), 'NOT_FOUND', 404],
      ['not-a-uuid', 'VALIDATION_FAILED', 400],
    ] as const) {
      const { received } = subscribe(client, TRANSFER_POSTED, { accountId });
      await received.until(`the refusal of ${accountId}`, () => received.errors !== undefined);
      assert.equal(received.errors?.[0]?.extensions?.code, code, JSON.stringify(received.errors));
      assert.equal(received.errors?.[0]?.extensions?.status, status);
      assert.equal(typeof received.errors?.[0]?.extensions?.requestId, 'string');
    }
    await deposit(bobs, 10);
    assert.equal(server.app.live.listenerCount(), 0);

    const { client: adminClient } = open(bearer(admin));
    const { received, stop } = subscribe(adminClient, TRANSFER_POSTED, { accountId: bobs });
    await listeners(1);
    const id = await deposit(bobs, 20);
    await received.until('the admin\'s event', () => received.transfers.length === 1);
    assert.equal(received.transfers[0]!.id, id);
    stop();
    await listeners(0);
  });

  it('when connection_init carries no token or a bad one, then the connection is closed unacknowledged and nothing is subscribed', async () => {
    for (const params of [undefined, { authorization: 'Bearer not-a-jwt' }, { authorization: alice.accessToken }]) {
      const { client, closed } = open(params);
      const { received } = subscribe(client, TRANSFER_POSTED, { accountId: randomUUID() });
      // Mercurius answers connection_error "Forbidden" and closes (not graphql-transport-ws' 4403).
      const outcome = await closed;
      assert.equal(outcome.acknowledged, false, JSON.stringify(params));
      assert.notEqual(outcome.code, 1000);
      assert.deepEqual(received.transfers, []);
    }
    assert.equal(server.app.live.listenerCount(), 0);
  });

  it('when the caller\'s tokens are revoked while subscribed, then the next event ends the subscription with UNAUTHENTICATED instead of being delivered', async () => {
    const carol = await registerAndLogin(server.client);
    const account = await openAccount(carol);
    const { client } = open(bearer(carol));
    const { received } = subscribe(client, TRANSFER_POSTED, { accountId: account });
    await listeners(1);
    await deposit(account, 5);
    await received.until('the first event', () => received.transfers.length === 1);

    dataOf(await gql(server.client, 'mutation { logoutAll }', {}, { token: carol.accessToken }));
    await deposit(account, 6);
    await received.until('the end', () => received.errors !== undefined);
    assert.equal(received.transfers.length, 1);
    assert.equal(received.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED');
    await listeners(0);
  });

  it('when a subscription document is too deep, has too many aliases, asks for introspection or is invalid, then it is refused before it starts, as over HTTP', async () => {
    const { client } = open(bearer(alice));
    const account = await openAccount(alice);
    const aliases = Array.from({ length: 11 }, (_, i) => `a${i}: id`).join(' ');
    for (const [query, code] of [
      // GRAPHQL_MAX_DEPTH is 3 on this server: transferPosted > fromAccount > owner > id is 4 deep.
      ['subscription ($accountId: ID!) { transferPosted(accountId: $accountId) { fromAccount { owner { id } } } }', 'QUERY_TOO_COMPLEX'],
      [`subscription ($accountId: ID!) { transferPosted(accountId: $accountId) { ${aliases} } }`, 'QUERY_TOO_COMPLEX'],
      // The spec's own rule: no introspection at a subscription's top level.
      ['subscription { __schema { queryType { name } } }', 'VALIDATION_FAILED'],
      ['subscription ($accountId: ID!) { transferPosted(accountId: $accountId) { nope } }', 'VALIDATION_FAILED'],
      ['subscription ($accountId: ID!) { transferPosted(accountId: $accountId) { id } transferPosted2: transferPosted(accountId: $accountId) { id } }', 'VALIDATION_FAILED'],
    ] as const) {
      const { received } = subscribe(client, query, { accountId: account });
      await received.until(`the refusal of ${query}`, () => received.errors !== undefined);
      assert.equal(received.errors?.[0]?.extensions?.code, code, `${query}: ${JSON.stringify(received.errors)}`);
      assert.equal(received.errors?.[0]?.extensions?.status, 400);
    }
    assert.equal(server.app.live.listenerCount(), 0);
  });

  it('when one connection asks for more subscriptions than allowed, then the one over the limit is refused TOO_MANY_SUBSCRIPTIONS (429); closing the socket releases them all', async () => {
    const account = await openAccount(alice);
    const { client } = open(bearer(alice));
    const stops: Array<() => void> = [];
    for (let i = 0; i < 100; i++) stops.push(subscribe(client, TRANSFER_POSTED, { accountId: account }).stop);
    await listeners(100);
    const { received } = subscribe(client, TRANSFER_POSTED, { accountId: account });
    await received.until('the refusal', () => received.errors !== undefined);
    assert.equal(received.errors?.[0]?.extensions?.code, 'TOO_MANY_SUBSCRIPTIONS');
    assert.equal(received.errors?.[0]?.extensions?.status, 429);
    await client.dispose();
    await listeners(0);
  });

  it('when another route is asked to upgrade, with a body or without, then it is refused 400 in the contract\'s shape and the connection closed (a closing server waits for neither)', async () => {
    const plain = await exchange(server, 'GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    assert.match(plain.text, /^HTTP\/1\.1 400 /);
    assert.match(plain.text, /"code":"VALIDATION_FAILED"/);
    assert.equal(plain.closedByServer, true);
    const body = '{"email":"a@b.test","password":"x"}';
    const withBody = await exchange(
      server,
      `POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    assert.match(withBody.text, /^HTTP\/1\.1 400 /);
    assert.match(withBody.text, /"code":"VALIDATION_FAILED"/);
    assert.equal(withBody.closedByServer, true);
  });

  it('when a WebSocket upgrade to /graphql is refused by the rate limit, then it is answered 429 and the server closes the connection', async () => {
    const limited = await startServer({ RATE_LIMIT_MAX: '1' });
    const handshake =
      'GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n';
    const socket = net.connect(Number(new URL(limited.baseUrl).port), '127.0.0.1', () => socket.write(handshake));
    const upgraded = await new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8'))));
    assert.match(upgraded, /^HTTP\/1\.1 101 /);
    socket.destroy();
    const refused = await exchange(limited, handshake);
    assert.match(refused.text, /^HTTP\/1\.1 429 /);
    assert.equal(refused.closedByServer, true);
  });

  it('when two instances share PostgreSQL and Redis, then a transfer posted on one reaches a subscriber on the other, once', { skip: backend.name === 'postgres' ? undefined : 'needs PostgreSQL shared by two instances' }, async (t) => {
    const redisSkip = await redisSkipReason();
    if (redisSkip) return t.skip(redisSkip);
    const first = await startServer({ REDIS_URL: TEST_REDIS_URL });
    const second = await startServer({ REDIS_URL: TEST_REDIS_URL }, { database: first.database });
    // Rate limits live in Redis, by client address, across runs: this test's clients use a fresh one.
    const address = randomLoopbackAddress();
    const firstClient = createLoopbackClient(first.baseUrl, address);
    const secondClient = createLoopbackClient(second.baseUrl, address);
    defer(() => {
      firstClient.close();
      secondClient.close();
    });
    const owner = await registerAndLogin(firstClient);
    const account = dataOf(await gql<{ createAccount: { id: string } }>(firstClient, 'mutation { createAccount(input: { currency: "USD" }) { id } }', {}, { token: owner.accessToken })).createAccount.id;
    const { client } = open(bearer(owner), first, address);
    const { received, stop } = subscribe(client, TRANSFER_POSTED, { accountId: account });
    await listeners(1, first);
    const adminOnSecond = await loginAdmin(secondClient);
    // The second instance's Redis subscription may still be starting: deposit until one arrives.
    const sent: string[] = [];
    const deadline = Date.now() + WAIT_MS;
    while (received.transfers.length === 0 && Date.now() < deadline) {
      const response = await gql<{ deposit: { transfer: { id: string } } }>(secondClient, 'mutation ($a: ID!, $key: String!) { deposit(accountId: $a, amount: 1, idempotencyKey: $key) { transfer { id } } }', { a: account, key: `k-${randomUUID()}` }, { token: adminOnSecond.accessToken });
      sent.push(dataOf(response).deposit.transfer.id);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const last = sent.at(-1);
    await received.until('the deposits made on the other instance', () => received.transfers.some((t) => t.id === last));
    const ids = received.transfers.map((t) => t.id);
    assert.equal(new Set(ids).size, ids.length, 'an event arrived twice');
    assert.ok(ids.every((id) => sent.includes(id)));
    stop();
    await listeners(0, first);
  });
});
