// Liveness (no dependency touched) and readiness (each dependency checked, with a time bound).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { SMALL_RESPONSE } from '../../platform/http.js';

/** Resolves 'ok', or 'degraded' when the service still serves without it; throws when failing. */
export type ReadinessCheck = () => Promise<'ok' | 'degraded'>;

const ReadyBody = Type.Object({
  status: Type.Enum(['ok', 'degraded', 'unavailable']),
  checks: Type.Record(Type.String(), Type.String()),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String(), requestId: Type.String() })),
});

export const healthRoutes: FastifyPluginAsyncTypebox<{
  checks: Record<string, ReadinessCheck>;
  isShuttingDown: () => boolean;
}> = async (app, { checks, isShuttingDown }) => {
  app.get(
    '/health',
    {
      ...SMALL_RESPONSE,
      schema: {
        tags: ['health'],
        summary: 'Liveness',
        response: { 200: Type.Object({ status: Type.Literal('ok'), timestamp: Type.String({ format: 'date-time' }) }) },
      },
    },
    async () => ({ status: 'ok' as const, timestamp: new Date().toISOString() }),
  );

  app.get(
    '/health/ready',
    { ...SMALL_RESPONSE, schema: { tags: ['health'], summary: 'Readiness of every dependency', response: { 200: ReadyBody, 503: ReadyBody } } },
    async (request, reply) => {
      const results: Record<string, string> = {};
      await Promise.all(
        Object.entries(checks).map(async ([name, check]) => {
          try {
            results[name] = await check();
          } catch {
            results[name] = 'fail';
          }
        }),
      );
      if (isShuttingDown()) results['shutdown'] = 'in progress';
      const failing = Object.entries(results).filter(([, value]) => value !== 'ok' && value !== 'degraded');
      if (failing.length > 0) {
        return reply.code(503).send({
          status: 'unavailable',
          checks: results,
          error: {
            code: 'NOT_READY',
            message: `Not ready: ${failing.map(([name]) => name).join(', ')}`,
            requestId: request.id,
          },
        });
      }
      const degraded = Object.values(results).includes('degraded');
      return { status: degraded ? ('degraded' as const) : ('ok' as const), checks: results };
    },
  );
};
