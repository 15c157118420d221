// One access line per request, when info lines are logged at all (no hook otherwise).
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../platform/logger.js';

/** Query parameters that carry a credential (an OIDC callback's code and state, a mailed token): never logged. */
const SECRET_QUERY_VALUE = /([?&](?:code|state|token|[a-z_]*token|secret)=)[^&#]*/gi;

/** The URL as logged: credential-bearing query values replaced. */
export const loggableUrl = (url: string): string => (url.includes('?') ? url.replace(SECRET_QUERY_VALUE, '$1[redacted]') : url);

export function registerAccessLog(app: FastifyInstance, accessLogger: Logger): void {
  if (!accessLogger.isLevelEnabled('info')) return;
  app.addHook('onResponse', (request, reply, done) => {
    accessLogger.info(
      {
        reqId: request.id,
        method: request.method,
        url: loggableUrl(request.url),
        statusCode: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
        userId: request.principal?.userId,
      },
      'request completed',
    );
    done();
  });
}
