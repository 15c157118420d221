// The ledger writes its transfer events without their data (ledger.sql, ledger_apply step 7); the
// relay builds the data from the immutable transfer when it reads the event (ledger_event_data,
// ledger.sql). What consumers receive must not change: each published transfer event's data is
// byte for byte what the ledger used to store (its former expression, kept here verbatim), is the
// transfer as the API answered it, and the events keep outbox order.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { serializeEvent } from '../../src/components/events/cloud-event.js';
import { startRelay, type Relay } from '../../src/components/events/index.js';
import { loginAdmin, login, uniqueEmail, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { lastSeq, recordingPublisher, waitUntil, type Delivery } from './outbox-helpers.js';

interface Transfer {
  id: string;
  status: string;
  pendingId?: string;
  [key: string]: unknown;
}

const dataOf = <T>(response: ApiResponse<unknown>, status: number): T => {
  assert.equal(response.status, status, response.text);
  return (response.body as { data: T }).data;
};

/** What ledger_apply stored as a transfer event's data before the row went lean (commit 68dfb63). */
const storedBefore = sql<string>`(jsonb_strip_nulls(jsonb_build_object(
    'id', t.id, 'fromAccountId', t.from_account_id, 'toAccountId', t.to_account_id, 'amount', t.amount,
    'currency', t.currency,
    'status', case t.kind when 'void' then 'voided' when 'expire' then 'expired'
                          else case when t.pending then 'pending' else 'posted' end end,
    'createdAt', to_char(t.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'expiresAt', to_char(t.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'pendingId', t.pending_id)) || jsonb_build_object('description', t.description))::text`;

describeOnBackends('transfer events', ({ it, before, startServer, defer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;

  before(async () => {
    server = await startServer({ PENDING_SWEEP_INTERVAL_MS: '50' });
    client = server.client;
    admin = await loginAdmin(client);
  });

  it('when transfers are made, posted, voided and expired, then the relay publishes their events from lean rows, with the data byte for byte as the ledger stored it before, as the API shows it, in outbox order', async () => {
    const start = await lastSeq(server.app);
    const email = uniqueEmail('envelope');
    const password = `pw-${randomUUID()}`;
    dataOf(await client.post('/api/v1/auth/register', { email, name: 'Envelope', password }), 201);
    const { accessToken: token } = await login(client, email, password);
    const openAccount = async () => dataOf<{ id: string }>(await client.post('/api/v1/accounts', { currency: 'USD' }, { token }), 201);
    const transfer = async (body: Record<string, unknown>) =>
      dataOf<Transfer>(await client.post('/api/v1/transfers', body, { token, headers: { 'idempotency-key': randomUUID() } }), 201);
    const [a1, a2] = [await openAccount(), await openAccount()];
    assert.ok(a1 && a2);

    const answers: Transfer[] = [];
    answers.push(
      dataOf<Transfer>(
        await client.post(`/api/v1/accounts/${a1.id}/deposits`, { amount: 1_000 }, { token: admin.accessToken, headers: { 'idempotency-key': randomUUID() } }),
        201,
      ),
    );
    answers.push(await transfer({ fromAccountId: a1.id, toAccountId: a2.id, amount: 100, description: 'rent "März" \\ ✓' }));
    answers.push(await transfer({ fromAccountId: a1.id, toAccountId: a2.id, amount: 7 }));
    const toPost = await transfer({ fromAccountId: a1.id, toAccountId: a2.id, amount: 50, pending: true, timeoutSeconds: 3_600 });
    answers.push(toPost, dataOf<Transfer>(await client.post(`/api/v1/transfers/${toPost.id}/post`, { amount: 30 }, { token }), 201));
    const toVoid = await transfer({ fromAccountId: a1.id, toAccountId: a2.id, amount: 20, pending: true });
    answers.push(toVoid, dataOf<Transfer>(await client.post(`/api/v1/transfers/${toVoid.id}/void`, {}, { token }), 201));
    const toExpire = await transfer({ fromAccountId: a1.id, toAccountId: a2.id, amount: 10, pending: true, timeoutSeconds: 1 });
    answers.push(toExpire);
    const expiredRow = async () =>
      (await sql<{ id: string }>`select id from transfers where pending_id = ${toExpire.id}`.execute(server.app.database.db)).rows[0];
    await waitUntil(async () => (await expiredRow()) !== undefined, 'the sweep to expire the pending transfer', 10_000);
    const end = await lastSeq(server.app);

    const log: Delivery[] = [];
    const name = `envelope-${randomUUID()}`;
    await sql`insert into outbox_cursors (publisher, position) values (${name}, ${start})`.execute(server.app.database.db);
    const relay: Relay = startRelay({
      database: server.app.database,
      publishers: [recordingPublisher(name, log)],
      source: '/bastion-test',
      batchSize: 3,
      pollIntervalMs: 10,
      leaseMs: 1_000,
      logger: server.app.logger,
    });
    defer(() => relay.stop());
    await waitUntil(() => log.some((delivery) => Number(delivery.event.sequence) === end), 'the relay to publish up to the last event');

    const mine = new Set([toPost.id, toVoid.id, toExpire.id, ...answers.map((answer) => answer.id)]);
    const published = log
      .map((delivery) => delivery.event)
      .filter((event) => event.type.startsWith('transfer.') && mine.has(event.subject.slice('transfers/'.length)));
    assert.deepEqual(
      published.map((event) => [event.type, event.subject]),
      [
        ['transfer.created', `transfers/${answers[0]?.id}`],
        ['transfer.created', `transfers/${answers[1]?.id}`],
        ['transfer.created', `transfers/${answers[2]?.id}`],
        ['transfer.pending', `transfers/${toPost.id}`],
        ['transfer.posted', `transfers/${toPost.id}`],
        ['transfer.pending', `transfers/${toVoid.id}`],
        ['transfer.voided', `transfers/${toVoid.id}`],
        ['transfer.pending', `transfers/${toExpire.id}`],
        ['transfer.expired', `transfers/${toExpire.id}`],
      ],
    );
    for (let n = 1; n < published.length; n++) {
      assert.ok((published[n - 1]?.sequence ?? '') < (published[n]?.sequence ?? ''), 'outbox order');
    }

    const db = server.app.database.db;
    for (const event of published) {
      const transferId = String(event.data['id']);
      const { rows: stored } = await sql<{ lean: boolean }>`select data is null as lean from outbox_events where id = ${event.id}`.execute(db);
      assert.deepEqual(stored, [{ lean: true }], `${event.type}: the row stores no data`);
      const { rows: before } = await sql<{ data: string }>`select ${storedBefore} as data from transfers t where t.id = ${transferId}`.execute(db);
      const formerly = before[0]?.data;
      assert.ok(formerly, `${event.type}: its transfer`);
      // The former stored data as the relay read it (parsed from the jsonb text), then put on the wire.
      assert.equal(JSON.stringify(event.data), JSON.stringify(JSON.parse(formerly)), `${event.type}: data byte for byte`);
      assert.equal(serializeEvent(event), serializeEvent({ ...event, data: JSON.parse(formerly) }), `${event.type}: envelope`);
      const answer = answers.find((candidate) => candidate.id === transferId);
      if (answer) assert.deepEqual(event.data, answer, `${event.type}: the transfer as the API answered`);
    }
    const expired = published.at(-1);
    assert.equal(expired?.data['id'], (await expiredRow())?.id);
    assert.equal(expired?.data['status'], 'expired');

    // Events appended through outbox_append (users, accounts, sessions) still store their data.
    const { rows: others } = await sql<{ stored: boolean }>`
      select bool_and(data is not null) as stored from outbox_events where seq > ${start} and type not like 'transfer.%'`.execute(db);
    assert.deepEqual(others, [{ stored: true }]);
  });
});
