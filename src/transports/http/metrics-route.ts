// GET /metrics: the Prometheus exposition of this instance's metrics (not in the API docs).
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../../platform/metrics.js';

export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
}
