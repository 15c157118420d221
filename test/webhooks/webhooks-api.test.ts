// Webhook endpoint management at /api/v1/webhooks: admin only, strict bodies, the secret shown once.
// Endpoints here listen to an event nobody causes (transfer.voided) at a .invalid host, so no
// delivery is ever attempted.
import assert from 'node:assert/strict';
import { Webhook } from 'standardwebhooks';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, ISO_UTC, pathsOf, UUID } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';

interface Endpoint {
  id: string;
  url: string;
  eventTypes: string[];
  description: string | null;
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
  secret?: string;
}

const URL_A = 'https://hooks.example.invalid/bastion';
const SECRET_FORMAT = /^whsec_[A-Za-z0-9+/]+={0,2}$/;

describeOnBackends('webhooks API', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;
  let user: Session;
  const create = (body: unknown, token = admin.accessToken) => server.client.post<{ data: Endpoint }>('/api/v1/webhooks', body, { token });

  before(async () => {
    server = await startServer();
    admin = await loginAdmin(server.client);
    user = await registerAndLogin(server.client);
  });

  it('when an admin registers an endpoint, then 201 with the endpoint and a whsec_ secret of 24+ bytes, shown only then', async () => {
    const response = await create({ url: URL_A, eventTypes: ['transfer.voided'], description: 'ops' });
    assert.equal(response.status, 201, response.text);
    const endpoint = response.body.data;
    assert.match(endpoint.id, UUID);
    assert.equal(endpoint.url, URL_A);
    assert.deepEqual(endpoint.eventTypes, ['transfer.voided']);
    assert.equal(endpoint.description, 'ops');
    assert.equal(endpoint.enabled, true);
    assert.match(endpoint.createdAt, ISO_UTC);
    assert.match(endpoint.secret ?? '', SECRET_FORMAT);
    assert.ok(Buffer.from((endpoint.secret ?? '').slice('whsec_'.length), 'base64').length >= 24);
    assert.doesNotThrow(() => new Webhook(endpoint.secret ?? ''), 'the reference implementation accepts the secret');
    assert.equal(response.headers.get('cache-control'), 'no-store');

    const got = await server.client.get<{ data: Endpoint }>(`/api/v1/webhooks/${endpoint.id}`, { token: admin.accessToken });
    assert.equal(got.status, 200);
    assert.equal(got.body.data.secret, undefined);
    assert.ok(!got.text.includes(endpoint.secret ?? '-'), 'GET never shows the secret');
    const listed = await server.client.get<{ data: Endpoint[] }>('/api/v1/webhooks?limit=100', { token: admin.accessToken });
    assert.ok(!listed.text.includes(endpoint.secret ?? '-') && !listed.text.includes('whsec_'), 'the list never shows a secret');
    assert.ok(!server.logs.some((line) => line.includes(endpoint.secret ?? '-')), 'no log line holds the secret');
  });

  it('when the secret is rotated, then the answer shows a new one, and only that answer', async () => {
    const endpoint = (await create({ url: URL_A, eventTypes: ['*'], enabled: false })).body.data;
    const rotated = await server.client.post<{ data: Endpoint }>(`/api/v1/webhooks/${endpoint.id}/rotate-secret`, undefined, { token: admin.accessToken });
    assert.equal(rotated.status, 200, rotated.text);
    assert.match(rotated.body.data.secret ?? '', SECRET_FORMAT);
    assert.notEqual(rotated.body.data.secret, endpoint.secret);
    const got = await server.client.get(`/api/v1/webhooks/${endpoint.id}`, { token: admin.accessToken });
    assert.ok(!got.text.includes('whsec_'));
    expectError(await server.client.post(`/api/v1/webhooks/${endpoint.id}/rotate-secret`, { x: 1 }, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
  });

  it('when endpoints are listed, then newest first with page meta like /users', async () => {
    for (const n of [1, 2, 3]) assert.equal((await create({ url: `${URL_A}/${n}`, eventTypes: ['transfer.voided'], enabled: false })).status, 201);
    const page = await server.client.get<{ data: Endpoint[]; meta: { page: number; limit: number; total: number; totalPages: number } }>(
      '/api/v1/webhooks?page=1&limit=2',
      { token: admin.accessToken },
    );
    assert.equal(page.status, 200);
    assert.equal(page.body.data.length, 2);
    assert.equal(page.body.data[0]?.url, `${URL_A}/3`);
    assert.equal(page.body.meta.page, 1);
    assert.equal(page.body.meta.limit, 2);
    assert.ok(page.body.meta.total >= 3);
    assert.equal(page.body.meta.totalPages, Math.ceil(page.body.meta.total / 2));
    const past = await server.client.get<{ data: Endpoint[] }>('/api/v1/webhooks?page=1000', { token: admin.accessToken });
    assert.equal(past.status, 200);
    assert.deepEqual(past.body.data, []);
    for (const query of ['?limit=0', '?limit=101', '?page=0', '?page=x', '?foo=1']) {
      expectError(await server.client.get(`/api/v1/webhooks${query}`, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
    }
  });

  it('when an endpoint is updated, then url, eventTypes, description and enabled change; unknown ids are 404', async () => {
    const endpoint = (await create({ url: URL_A, eventTypes: ['transfer.voided'] })).body.data;
    const patched = await server.client.patch<{ data: Endpoint }>(
      `/api/v1/webhooks/${endpoint.id}`,
      { url: `${URL_A}/v2`, eventTypes: ['transfer.voided', 'transfer.expired'], description: null, enabled: false },
      { token: admin.accessToken },
    );
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.body.data.url, `${URL_A}/v2`);
    assert.deepEqual(patched.body.data.eventTypes, ['transfer.voided', 'transfer.expired']);
    assert.equal(patched.body.data.description, null);
    assert.equal(patched.body.data.enabled, false);
    assert.equal(patched.body.data.secret, undefined);
    const unknown = '0190a000-0000-7000-8000-000000000000';
    expectError(await server.client.patch(`/api/v1/webhooks/${unknown}`, { enabled: true }, { token: admin.accessToken }), 404, 'NOT_FOUND');
    expectError(await server.client.get(`/api/v1/webhooks/${unknown}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
    expectError(await server.client.get(`/api/v1/webhooks/${unknown}/deliveries`, { token: admin.accessToken }), 404, 'NOT_FOUND');
    expectError(await server.client.post(`/api/v1/webhooks/${unknown}/rotate-secret`, undefined, { token: admin.accessToken }), 404, 'NOT_FOUND');
    expectError(
      await server.client.post(`/api/v1/webhooks/${endpoint.id}/deliveries/${unknown}/redeliver`, undefined, { token: admin.accessToken }),
      404,
      'NOT_FOUND',
    );
    expectError(await server.client.get('/api/v1/webhooks/not-a-uuid', { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
  });

  it('when an endpoint is deleted, then 204 and it is 404 from then on', async () => {
    const endpoint = (await create({ url: URL_A, eventTypes: ['transfer.voided'] })).body.data;
    const deleted = await server.client.delete(`/api/v1/webhooks/${endpoint.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204);
    expectError(await server.client.get(`/api/v1/webhooks/${endpoint.id}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
    expectError(await server.client.delete(`/api/v1/webhooks/${endpoint.id}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
  });

  it('when a body is malformed, has unknown fields or bad event types, then 400 VALIDATION_FAILED naming the field', async () => {
    const cases: Array<[unknown, string]> = [
      [{ url: URL_A, eventTypes: ['transfer.voided'], secret: 'whsec_mine' }, 'secret'],
      [{ url: URL_A }, 'eventTypes'],
      [{ url: URL_A, eventTypes: [] }, 'eventTypes'],
      [{ url: URL_A, eventTypes: ['user.exploded'] }, 'eventTypes.0'],
      [{ url: URL_A, eventTypes: ['user.created', 'user.created'] }, 'eventTypes'],
      [{ url: URL_A, eventTypes: ['*', 'user.created'] }, 'eventTypes'],
      [{ url: URL_A, eventTypes: 'user.created' }, 'eventTypes'],
      [{ url: URL_A, eventTypes: ['*'], enabled: 'true' }, 'enabled'],
      [{ url: 'not a url', eventTypes: ['*'] }, 'url'],
      [{ url: 'ftp://hooks.example.invalid/x', eventTypes: ['*'] }, 'url'],
      [{ url: 'https://user:pw@hooks.example.invalid/x', eventTypes: ['*'] }, 'url'],
      [{ eventTypes: ['*'] }, 'url'],
    ];
    for (const [body, path] of cases) {
      const error = expectError(await create(body), 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).some((each) => each.startsWith(path)), `${JSON.stringify(body)}: ${JSON.stringify(error.errors)}`);
    }
    const endpoint = (await create({ url: URL_A, eventTypes: ['transfer.voided'], enabled: false })).body.data;
    const badPatch = await server.client.patch(`/api/v1/webhooks/${endpoint.id}`, { secret: 'x' }, { token: admin.accessToken });
    expectError(badPatch, 400, 'VALIDATION_FAILED');
    expectError(
      await server.client.post('/api/v1/webhooks', undefined, { token: admin.accessToken, raw: 'url=x', headers: { 'content-type': 'text/plain' } }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    );
  });

  it('when WEBHOOK_ALLOW_HTTP is unset, then only https URLs are accepted, and literal private IPs never', async () => {
    const http = expectError(await create({ url: 'http://hooks.example.invalid/x', eventTypes: ['*'] }), 400, 'VALIDATION_FAILED');
    assert.deepEqual(pathsOf(http), ['url']);
    assert.match(http.errors?.[0]?.message ?? '', /https/);
    const loopback = expectError(await create({ url: 'https://127.0.0.1/x', eventTypes: ['*'] }), 400, 'VALIDATION_FAILED');
    assert.match(loopback.errors?.[0]?.message ?? '', /loopback/);
    const patched = await server.client.patch(
      `/api/v1/webhooks/${(await create({ url: URL_A, eventTypes: ['transfer.voided'], enabled: false })).body.data.id}`,
      { url: 'http://hooks.example.invalid/x' },
      { token: admin.accessToken },
    );
    expectError(patched, 400, 'VALIDATION_FAILED');
  });

  it('when a user or nobody calls any webhooks route, then 403 FORBIDDEN or 401 UNAUTHENTICATED', async () => {
    const endpoint = (await create({ url: URL_A, eventTypes: ['transfer.voided'], enabled: false })).body.data;
    const id = endpoint.id;
    const routes: Array<[string, string, unknown]> = [
      ['POST', '/api/v1/webhooks', { url: URL_A, eventTypes: ['*'] }],
      ['GET', '/api/v1/webhooks', undefined],
      ['GET', `/api/v1/webhooks/${id}`, undefined],
      ['PATCH', `/api/v1/webhooks/${id}`, { enabled: true }],
      ['DELETE', `/api/v1/webhooks/${id}`, undefined],
      ['POST', `/api/v1/webhooks/${id}/rotate-secret`, undefined],
      ['GET', `/api/v1/webhooks/${id}/deliveries`, undefined],
      ['POST', `/api/v1/webhooks/${id}/deliveries/${id}/redeliver`, undefined],
    ];
    for (const [method, path, body] of routes) {
      expectError(await server.client.request(method, path, body, { token: user.accessToken }), 403, 'FORBIDDEN');
      expectError(await server.client.request(method, path, body), 401, 'UNAUTHENTICATED');
    }
    const still = await server.client.get<{ data: Endpoint }>(`/api/v1/webhooks/${id}`, { token: admin.accessToken });
    assert.equal(still.body.data.enabled, false, 'nothing a user sent changed it');
  });
});
