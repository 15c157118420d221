import assert from 'node:assert/strict';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

describeOnBackends('health', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });

  it('when /health is called, then it answers ok with a timestamp', async () => {
    const response = await server.client.get<{ status: string; timestamp: string }>('/health');
    assert.equal(response.status, 200);
    assert.equal(response.body.status, 'ok');
    assert.ok(!Number.isNaN(Date.parse(response.body.timestamp)));
    assert.ok(response.headers.get('x-request-id'));
  });

  it('when the database answers, then /health/ready reports it ok', async () => {
    const response = await server.client.get<{ status: string; checks: Record<string, string> }>('/health/ready');
    assert.equal(response.status, 200);
    assert.deepEqual(response.body, { status: 'ok', checks: { database: 'ok' } });
  });

  it('when the client sends a valid X-Request-Id, then it is echoed', async () => {
    const response = await server.client.get('/health', { headers: { 'x-request-id': 'abc.DEF_123-x' } });
    assert.equal(response.headers.get('x-request-id'), 'abc.DEF_123-x');
    const invalid = await server.client.get('/nope', { headers: { 'x-request-id': 'bad id with spaces' } });
    const generated = invalid.headers.get('x-request-id');
    assert.ok(generated && generated !== 'bad id with spaces');
    assert.equal((invalid.body as { error: { requestId: string } }).error.requestId, generated);
  });
});
