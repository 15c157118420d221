// Requests refused before any route sees them: HTTP/1.1 without a Host, and anything while shutting down.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, validationFailed } from '../../platform/errors.js';

/**
 * onRequest hook. Node's own refusal of a missing Host has no body at all, and Fastify's 503 while
 * closing has another body and none of the headers: both are refused here, in the contract's shape.
 * Readiness answers for itself during shutdown (503 with its own body, checks.shutdown).
 */
export function admissionHook(isShuttingDown: () => boolean) {
  return (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    if (request.headers.host === undefined && request.raw.httpVersion === '1.1') {
      return done(validationFailed([{ path: 'host', message: 'is required in HTTP/1.1' }], 'The Host header is missing'));
    }
    if (isShuttingDown() && request.routeOptions.url !== '/health/ready') {
      void reply.header('connection', 'close');
      return done(new DomainError('SERVICE_UNAVAILABLE', 'The service is shutting down; retry', { retryAfterSeconds: 1 }));
    }
    done();
  };
}
