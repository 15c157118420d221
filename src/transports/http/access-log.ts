// One access line per request, when info lines are logged at all (no hook otherwise).
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../platform/logger.js';

/**
 * Query parameters that may carry a credential (an OIDC callback's code and state, a mailed token, a
 * secret or password a client put in the wrong place), matched on the decoded name: never logged.
 */
const SECRET_QUERY_NAME = /code|state|token|secret|password|key/i;

/** The URL as logged: the values of credential-bearing query parameters replaced. */
export function loggableUrl(url: string): string {
  const at = url.indexOf('?');
  if (at === -1) return url;
  const parts = url.slice(at + 1).split('&').map((part) => {
    const equals = part.indexOf('=');
    if (equals === -1) return part;
    let name: string;
    try {
      name = decodeURIComponent(part.slice(0, equals).replaceAll('+', ' '));
    } catch {
      return `${part.slice(0, equals)}=[redacted]`; // a name that does not decode is not worth the risk
    }
    return SECRET_QUERY_NAME.test(name) ? `${part.slice(0, equals)}=[redacted]` : part;
  });
  return `${url.slice(0, at)}?${parts.join('&')}`;
}

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
