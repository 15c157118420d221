// The SSRF guard: without WEBHOOK_ALLOW_PRIVATE, loopback, private, link-local and metadata targets
// are refused: at registration when the URL names the address, and at connect time, on the address a
// name resolved to, when it names a host (so a name that resolves, or later re-resolves, to 127.0.0.1
// reaches nothing). A refused attempt is recorded with its reason; the target never sees a request.
import assert from 'node:assert/strict';
import { describe, it as test } from 'node:test';
import { blockedReason, guardedLookup, targetProblem } from '../../src/components/webhooks/index.js';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, pathsOf } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';
import { startReceiver, waitFor } from './receiver.js';

const MAX_ATTEMPTS = 2;

describe('webhooks SSRF guard (addresses)', () => {
  test('when an address is loopback, private, link-local, CGNAT, multicast or metadata, then it is blocked; public ones are not', () => {
    const blocked = [
      '127.0.0.1',
      '127.255.0.9',
      '0.0.0.0',
      '10.1.2.3',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '100.127.255.254',
      '224.0.0.1',
      '255.255.255.255',
      '::1',
      '::',
      'fc00::1',
      'fd00:ec2::254',
      'fe80::1',
      'ff02::1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::ffff:a9fe:a9fe',
    ];
    for (const address of blocked) assert.ok(blockedReason(address), `${address} must be blocked`);
    for (const address of ['93.184.216.34', '8.8.8.8', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
      assert.equal(blockedReason(address), undefined, `${address} must be allowed`);
    }
    assert.match(blockedReason('169.254.169.254') ?? '', /link-local/);
    assert.match(blockedReason('fd00:ec2::254') ?? '', /metadata/);
  });

  test('when a URL is checked at registration, then the scheme rule and literal addresses apply; names wait for connect time', () => {
    const strict = { allowHttp: false, allowPrivate: false };
    const dev = { allowHttp: true, allowPrivate: false };
    assert.match(targetProblem('http://hooks.example.com/x', strict) ?? '', /https/);
    assert.equal(targetProblem('https://hooks.example.com/x', strict), undefined);
    assert.equal(targetProblem('http://hooks.example.com/x', dev), undefined);
    assert.equal(targetProblem('http://localhost:8080/x', dev), undefined, 'a name is checked when connecting');
    assert.match(targetProblem('https://[::ffff:127.0.0.1]/x', strict) ?? '', /loopback/);
    assert.equal(targetProblem('http://127.0.0.1/x', { allowHttp: true, allowPrivate: true }), undefined);
  });

  test('when a name resolves to a blocked address, then the guarded lookup refuses it, unless private targets are allowed', async () => {
    const resolve = (allowPrivate: boolean) =>
      new Promise<unknown>((done) => {
        guardedLookup(allowPrivate)('localhost', { all: true }, (error, addresses) => done(error ?? addresses));
      });
    const refused = (await resolve(false)) as Error & { code?: string };
    assert.equal(refused.code, 'WEBHOOK_TARGET_REFUSED');
    assert.match(refused.message, /localhost resolves to (127\.0\.0\.1|::1) is a loopback address/);
    assert.ok(Array.isArray(await resolve(true)));
  });
});

describeOnBackends('webhooks SSRF guard', ({ it, before, startServer, defer }) => {
  let server: TestServer;
  let admin: Session;

  before(async () => {
    server = await startServer({
      WEBHOOK_ALLOW_HTTP: 'true',
      WEBHOOK_POLL_INTERVAL_MS: '50',
      WEBHOOK_RETRY_BASE_MS: '20',
      WEBHOOK_RETRY_MAX_MS: '50',
      WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    });
    admin = await loginAdmin(server.client);
  });

  it('when a URL names a loopback, private, link-local or metadata address, then registration is 400 on url', async () => {
    const receiver = await startReceiver();
    defer(() => receiver.close());
    const targets = [
      `http://127.0.0.1:${receiver.port}/hook`,
      `http://[::1]:${receiver.port}/hook`,
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/latest/meta-data/',
      'http://[::ffff:127.0.0.1]/hook',
      'http://0.0.0.0/hook',
      'http://10.0.0.1/hook',
      'http://192.168.0.10/hook',
      'http://100.64.0.1/hook',
      'http://[fe80::1]/hook',
      'http://224.0.0.1/hook',
    ];
    for (const url of targets) {
      const error = expectError(await server.client.post('/api/v1/webhooks', { url, eventTypes: ['*'] }, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
      assert.deepEqual(pathsOf(error), ['url'], url);
    }
    const endpoint = await server.client.post<{ data: { id: string } }>(
      '/api/v1/webhooks',
      { url: 'http://hooks.example.invalid/x', eventTypes: ['transfer.voided'], enabled: false },
      { token: admin.accessToken },
    );
    assert.equal(endpoint.status, 201);
    expectError(
      await server.client.patch(`/api/v1/webhooks/${endpoint.body.data.id}`, { url: 'http://169.254.169.254/' }, { token: admin.accessToken }),
      400,
      'VALIDATION_FAILED',
    );
    assert.equal(receiver.requests.length, 0);
  });

  it('when a hostname resolves to 127.0.0.1 (localhost), then it is accepted but every delivery fails at connect time with the reason; the receiver is never hit', async () => {
    const receiver = await startReceiver();
    defer(() => receiver.close());
    const created = await server.client.post<{ data: { id: string; secret: string } }>(
      '/api/v1/webhooks',
      { url: `http://localhost:${receiver.port}/hook`, eventTypes: ['user.created'] },
      { token: admin.accessToken },
    );
    assert.equal(created.status, 201, created.text);
    receiver.secret = created.body.data.secret;
    const endpointId = created.body.data.id;

    await registerAndLogin(server.client);
    const dead = async () => {
      const response = await server.client.get<{ data: Array<{ attempts: number; lastError: string | null; lastStatusCode: number | null }> }>(
        `/api/v1/webhooks/${endpointId}/deliveries?status=dead`,
        { token: admin.accessToken },
      );
      return response.body.data;
    };
    await waitFor(async () => (await dead()).length === 1, 'the refused delivery to be dead-lettered');
    const [delivery] = await dead();
    assert.equal(delivery?.attempts, MAX_ATTEMPTS);
    assert.equal(delivery?.lastStatusCode, null);
    assert.match(delivery?.lastError ?? '', /SSRF guard: localhost resolves to (127\.0\.0\.1|::1) is a loopback address/);
    assert.equal(receiver.requests.length, 0, 'nothing reached the receiver');
    assert.ok(!server.logs.some((line) => line.includes(receiver.secret ?? '-')), 'the secret is never logged');
  });
});
