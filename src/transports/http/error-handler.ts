// Where every failure of a request is answered: through the one mapper (../http-errors.ts), logged
// when it is the service's fault or a dependency's.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../platform/logger.js';
import { sendError, toErrorPayload } from '../http-errors.js';
import { API_SECURITY_HEADERS } from './security-headers.js';

/** The error handler (thrown or passed to `done` anywhere in a request) and the 404 of unknown routes. */
export function registerErrorHandlers(app: FastifyInstance, logger: Logger): void {
  app.setErrorHandler((error, request, reply) => {
    const payload = toErrorPayload(error);
    if (payload.code === 'INTERNAL_ERROR') logger.error({ err: error, reqId: request.id }, 'unhandled error');
    else if (payload.status >= 500) {
      logger.warn({ err: error, reqId: request.id, code: payload.code }, 'request failed: dependency unavailable');
    }
    return sendError(request, reply, payload);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(request, reply, {
      status: 404,
      code: 'ROUTE_NOT_FOUND',
      message: `Route ${request.method} ${request.url.split('?')[0]} not found`,
    }),
  );
}

/**
 * Fastify's `frameworkErrors` option. Router errors (a bad percent-encoding, a path segment over
 * 100 characters) skip every hook and the error handler; this sends them through the one mapper
 * with the headers the hooks would have set.
 */
export function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  void reply.headers(API_SECURITY_HEADERS);
  return sendError(request, reply, toErrorPayload(error));
}
