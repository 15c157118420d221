// Webhook deliveries end to end: REST calls cause events, the relay fans them out, the worker POSTs
// them to real receivers that verify each signature with the Standard Webhooks reference code. Also
// the per-endpoint circuit breaker, dead-lettering and redelivery. Each test deletes its endpoints.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import type { CloudEvent } from '../../src/components/events/index.js';
import { createWebhookFanout } from '../../src/components/webhooks/index.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';
import { startReceiver, waitFor, type Receiver } from './receiver.js';

interface Delivery {
  id: string;
  eventId: string;
  eventType: string;
  status: string;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  lastDurationMs: number | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
}
interface DeliveryPage {
  data: Delivery[];
  meta: { total: number };
}

const BREAKER_RESET_MS = 1_000;
const MAX_ATTEMPTS = 6;

describeOnBackends('webhooks delivery', ({ backend, it, before, startServer, startApplication, defer }) => {
  let server: TestServer;
  let admin: Session;
  let env: Record<string, string>;

  before(async () => {
    env = {
      WEBHOOK_ALLOW_HTTP: 'true',
      WEBHOOK_ALLOW_PRIVATE: 'true',
      WEBHOOK_POLL_INTERVAL_MS: '50',
      WEBHOOK_RETRY_BASE_MS: '20',
      WEBHOOK_RETRY_MAX_MS: '100',
      WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
      WEBHOOK_TIMEOUT_MS: '2000',
      WEBHOOK_BREAKER_VOLUME_THRESHOLD: '3',
      WEBHOOK_BREAKER_ERROR_PERCENTAGE: '50',
      WEBHOOK_BREAKER_RESET_MS: String(BREAKER_RESET_MS),
      WEBHOOK_BREAKER_WINDOW_MS: '30000',
      // Endpoint secrets are stored sealed under it; every signature below is made with an opened one.
      KEY_ENCRYPTION_SECRET: 'webhooks-test-key-encryption-secret-0123456789',
    };
    server = await startServer(env);
    admin = await loginAdmin(server.client);
  });

  async function receiverFor(eventTypes: string[]): Promise<{ receiver: Receiver; endpointId: string }> {
    const receiver = await startReceiver();
    defer(() => receiver.close());
    const created = await server.client.post<{ data: { id: string; secret: string } }>(
      '/api/v1/webhooks',
      { url: `${receiver.url}/hook`, eventTypes },
      { token: admin.accessToken },
    );
    assert.equal(created.status, 201, created.text);
    receiver.secret = created.body.data.secret;
    return { receiver, endpointId: created.body.data.id };
  }
  const removeEndpoint = async (endpointId: string) =>
    assert.equal((await server.client.delete(`/api/v1/webhooks/${endpointId}`, { token: admin.accessToken })).status, 204);
  const deliveries = async (endpointId: string, query = '') => {
    const response = await server.client.get<DeliveryPage>(`/api/v1/webhooks/${endpointId}/deliveries?limit=100${query}`, { token: admin.accessToken });
    assert.equal(response.status, 200, response.text);
    return response.body;
  };
  /** Registers users through the API; their ids. */
  const registerUsers = async (count: number) => {
    const ids: string[] = [];
    for (let n = 0; n < count; n++) ids.push((await registerAndLogin(server.client)).user.id);
    return ids;
  };
  const subjectsOf = (receiver: Receiver, type: string) =>
    receiver.requests.filter((request) => request.status < 300 && request.event?.type === type).map((request) => request.event?.subject);

  it('when REST calls cause events, then each subscribed receiver gets each of its types once per event id, signed and verified', async () => {
    const created = await receiverFor(['user.created']);
    const updated = await receiverFor(['user.updated']);
    const everything = await receiverFor(['*']);

    const userIds = await registerUsers(4);
    const renamed = await server.client.patch(`/api/v1/users/${userIds[0]}`, { name: 'Renamed' }, { token: admin.accessToken });
    assert.equal(renamed.status, 200);

    await waitFor(() => subjectsOf(created.receiver, 'user.created').length >= 4, 'user.created at the first receiver');
    await waitFor(() => subjectsOf(updated.receiver, 'user.updated').length >= 1, 'user.updated at the second receiver');
    await waitFor(() => everything.receiver.deliveredIds().length >= 5, 'everything at the third receiver');
    await sleep(300); // anything sent twice would arrive by now

    for (const { receiver } of [created, updated, everything]) {
      for (const request of receiver.requests) {
        assert.equal(request.verifyError, undefined, 'every request verifies with Webhook.verify');
        assert.equal(request.contentType, 'application/json');
        assert.equal(request.webhookId, request.event?.id, 'webhook-id is the event id');
      }
      const ids = receiver.deliveredIds();
      assert.equal(new Set(ids).size, ids.length, 'each event id exactly once');
    }
    assert.deepEqual(subjectsOf(created.receiver, 'user.created').sort(), userIds.map((id) => `users/${id}`).sort());
    assert.deepEqual(created.receiver.requests.map((request) => request.event?.type).filter((type) => type !== 'user.created'), [], 'only its type');
    assert.deepEqual(subjectsOf(updated.receiver, 'user.updated'), [`users/${userIds[0]}`]);
    assert.deepEqual(updated.receiver.requests.map((request) => request.event?.type).filter((type) => type !== 'user.updated'), []);
    const all = everything.receiver.requests.map((request) => `${request.event?.type} ${request.event?.subject}`);
    for (const id of userIds) assert.ok(all.includes(`user.created users/${id}`));
    assert.ok(all.includes(`user.updated users/${userIds[0]}`));

    const event = created.receiver.requests[0]?.event as unknown as CloudEvent;
    assert.equal(event.specversion, '1.0');
    assert.equal(event.datacontenttype, 'application/json');

    const listed = await deliveries(created.endpointId, '&status=delivered');
    assert.equal(listed.meta.total, 4);
    for (const delivery of listed.data) {
      assert.equal(delivery.attempts, 1);
      assert.equal(delivery.lastStatusCode, 200);
      assert.equal(delivery.lastError, null);
      assert.equal(typeof delivery.lastDurationMs, 'number');
      assert.equal(delivery.nextAttemptAt, null);
      assert.ok(delivery.deliveredAt);
    }

    // The relay publishing the same batch again (a crash before its cursor moved) adds no delivery.
    const fanout = createWebhookFanout({ database: server.app.database });
    const events = created.receiver.requests.map((request) => JSON.parse(request.body) as CloudEvent);
    await fanout.publish(events);
    await fanout.publish(events);
    const { rows } = await sql<{ count: number }>`select count(*)::int as count from webhook_deliveries where endpoint_id = ${created.endpointId}`.execute(
      server.app.database.db,
    );
    assert.equal(rows[0]?.count, 4);

    // The secret is stored sealed (KEY_ENCRYPTION_SECRET), never as it is.
    const stored = await sql<{ secret: string }>`select secret from webhook_endpoints where id = ${created.endpointId}`.execute(server.app.database.db);
    assert.match(stored.rows[0]?.secret ?? '', /^sealed:/);
    assert.ok(!(stored.rows[0]?.secret ?? '').includes((created.receiver.secret ?? '-').slice('whsec_'.length)));

    for (const { endpointId } of [created, updated, everything]) await removeEndpoint(endpointId);
  });

  it(
    'when two instances share the database, then their workers never send one delivery twice',
    { skip: backend.name === 'pglite' ? 'PGlite belongs to one process' : undefined },
    async () => {
      const second = await startApplication(env, { database: server.database });
      const userIds = await registerUsers(1);
      const [userId] = userIds;
      const { receiver, endpointId } = await receiverFor(['user.updated']);
      const renames = 30;
      for (let n = 0; n < renames; n++) {
        assert.equal((await server.client.patch(`/api/v1/users/${userId}`, { name: `Name ${n}` }, { token: admin.accessToken })).status, 200);
      }
      await waitFor(() => receiver.deliveredIds().length >= renames, 'every rename');
      await sleep(500);
      assert.equal(receiver.requests.length, renames, 'one request per event: no delivery was claimed by both workers');
      assert.equal(new Set(receiver.deliveredIds()).size, renames);
      await second.stop();
      await removeEndpoint(endpointId);
    },
  );

  it('when an endpoint is disabled, then events meanwhile are not sent to it; once re-enabled, new events are', async () => {
    const { receiver, endpointId } = await receiverFor(['user.created']);
    assert.equal((await server.client.patch(`/api/v1/webhooks/${endpointId}`, { enabled: false }, { token: admin.accessToken })).status, 200);
    const [whileOff] = await registerUsers(1);
    await sleep(300);
    assert.equal(receiver.requests.length, 0, 'a disabled endpoint gets nothing');
    assert.equal((await server.client.patch(`/api/v1/webhooks/${endpointId}`, { enabled: true }, { token: admin.accessToken })).status, 200);
    const [afterOn] = await registerUsers(1);
    await waitFor(() => receiver.deliveredIds().length >= 1, 'the event after re-enabling');
    await sleep(200);
    assert.deepEqual(subjectsOf(receiver, 'user.created'), [`users/${afterOn}`]);
    assert.ok(whileOff);
    await removeEndpoint(endpointId);
  });

  it('when a receiver fails, then the breaker opens (fewer requests than deliveries), and on recovery the whole backlog arrives', async () => {
    // Users first (registering is slow: password hashing), then ten quick updates: ten events at once.
    const userIds = await registerUsers(10);
    const { receiver, endpointId } = await receiverFor(['user.updated']);
    receiver.status = 500;
    for (const id of userIds) {
      assert.equal((await server.client.patch(`/api/v1/users/${id}`, { name: 'Renamed' }, { token: admin.accessToken })).status, 200);
    }
    await waitFor(async () => (await deliveries(endpointId)).meta.total === 10, 'ten deliveries');
    await waitFor(() => receiver.requests.length >= 3, 'the first failures');
    // Open: the endpoint costs nothing for a while, though all ten deliveries are due or soon due.
    await sleep(BREAKER_RESET_MS * 1.5);
    const whileFailing = receiver.requests.length;
    assert.ok(whileFailing < 10, `fewer requests (${whileFailing}) than deliveries (10) while the breaker is open`);
    const open = await deliveries(endpointId);
    assert.ok(open.data.some((delivery) => delivery.attempts === 0), 'some deliveries were postponed without an attempt');
    assert.equal(open.data.filter((delivery) => delivery.status === 'delivered').length, 0);
    assert.equal(open.data.filter((delivery) => delivery.status === 'dead').length, 0);

    receiver.status = 200;
    await waitFor(() => receiver.deliveredIds().length >= 10, 'the backlog after recovery', 20_000);
    await sleep(300);
    const ids = receiver.deliveredIds();
    assert.equal(ids.length, 10, 'each event once');
    assert.deepEqual(subjectsOf(receiver, 'user.updated').sort(), userIds.map((id) => `users/${id}`).sort());
    assert.equal((await deliveries(endpointId, '&status=delivered')).meta.total, 10);
    const failedRequests = receiver.requests.filter((request) => request.status >= 500).length;
    assert.ok(failedRequests < 10, `the failing phase cost ${failedRequests} requests for 10 deliveries`);
    await removeEndpoint(endpointId);
  });

  it('when a receiver keeps failing, then after WEBHOOK_MAX_ATTEMPTS the delivery is dead, listed by status, and redelivery sends it', async () => {
    const { receiver, endpointId } = await receiverFor(['user.created']);
    receiver.status = 503;
    const [userId] = await registerUsers(1);
    await waitFor(async () => (await deliveries(endpointId, '&status=dead')).meta.total === 1, 'the dead letter', 20_000);
    const [dead] = (await deliveries(endpointId, '&status=dead')).data;
    assert.ok(dead);
    assert.equal(dead.attempts, MAX_ATTEMPTS);
    assert.equal(dead.lastStatusCode, 503);
    assert.match(dead.lastError ?? '', /503/);
    assert.equal(dead.nextAttemptAt, null);
    assert.equal(dead.eventType, 'user.created');
    assert.equal(receiver.requests.length, MAX_ATTEMPTS, 'one request per attempt');
    assert.equal((await deliveries(endpointId, '&status=delivered')).meta.total, 0);

    receiver.status = 200;
    const redelivered = await server.client.post<{ data: Delivery }>(
      `/api/v1/webhooks/${endpointId}/deliveries/${dead.id}/redeliver`,
      undefined,
      { token: admin.accessToken },
    );
    assert.equal(redelivered.status, 202, redelivered.text);
    assert.equal(redelivered.body.data.id, dead.id);
    assert.equal(redelivered.body.data.status, 'pending');
    assert.equal(redelivered.body.data.attempts, 0);
    await waitFor(() => receiver.deliveredIds().length === 1, 'the redelivered event', 10_000);
    assert.deepEqual(subjectsOf(receiver, 'user.created'), [`users/${userId}`]);
    assert.equal(receiver.deliveredIds()[0], dead.eventId);
    await waitFor(async () => (await deliveries(endpointId, '&status=delivered')).meta.total === 1, 'recorded as delivered');
    assert.equal((await deliveries(endpointId, '&status=dead')).meta.total, 0);
    expectError(await server.client.get(`/api/v1/webhooks/${endpointId}/deliveries?status=lost`, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
    await removeEndpoint(endpointId);
  });
});
