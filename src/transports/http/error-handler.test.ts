// The error handler on a real Fastify app: a domain error that names the request which first
// produced it (an idempotent replay) is rendered with that id in the body; the header stays this
// request's own.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import Fastify from 'fastify';
import { DomainError } from '../../platform/errors.js';
import { createLogger } from '../../platform/logger.js';
import { registerErrorHandlers } from './error-handler.js';
import { createRequestIds } from './request-id.js';
import { securityHeadersHook } from './security-headers.js';

describe('the HTTP error handler', () => {
  const app = Fastify({ logger: false, genReqId: createRequestIds().of });
  app.addHook('onRequest', securityHeadersHook);
  registerErrorHandlers(app, createLogger('silent'));
  app.get('/replayed', async () => {
    throw new DomainError('NOT_FOUND', 'Transfer not found', {}, 'first-request-1');
  });
  app.get('/fresh', async () => {
    throw new DomainError('NOT_FOUND', 'Transfer not found');
  });
  after(() => app.close());

  it('when a domain error carries the original request id, then the body names it and the header names this request', async () => {
    const response = await app.inject({ method: 'GET', url: '/replayed', headers: { 'x-request-id': 'replay-2' } });
    assert.equal(response.statusCode, 404);
    assert.equal(response.headers['x-request-id'], 'replay-2');
    assert.deepEqual(response.json(), {
      error: { code: 'NOT_FOUND', message: 'Transfer not found', requestId: 'first-request-1' },
    });
  });

  it('when a domain error carries none, then the body names this request', async () => {
    const response = await app.inject({ method: 'GET', url: '/fresh', headers: { 'x-request-id': 'fresh-3' } });
    assert.equal(response.statusCode, 404);
    assert.equal(response.headers['x-request-id'], 'fresh-3');
    assert.equal(response.json<{ error: { requestId: string } }>().error.requestId, 'fresh-3');
  });
});
