// One access line per request, when info lines are logged at all (no hook otherwise).
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../platform/logger.js';

export function registerAccessLog(app: FastifyInstance, accessLogger: Logger): void {
  if (!accessLogger.isLevelEnabled('info')) return;
  app.addHook('onResponse', (request, reply, done) => {
    accessLogger.info(
      {
        reqId: request.id,
        method: request.method,
        url: request.url,
        statusCode: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
        userId: request.principal?.userId,
      },
      'request completed',
    );
    done();
  });
}
