// The per-client limit on /api/ routes, as an onRequest hook with the draft-standard headers.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../../platform/errors.js';
import type { Gcra, GcraDecision } from '../../platform/rate-limit.js';

/**
 * GCRA (see platform/rate-limit.ts) per client IP, with RateLimit-Limit, RateLimit-Remaining,
 * RateLimit-Reset (seconds until the full budget is back) and, when refused, 429 RATE_LIMITED with
 * Retry-After. Synchronous unless Redis decides; a Redis failure lets the request through.
 */
export function rateLimitHook(gcra: Gcra, max: number, windowMs: number) {
  return (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    const apply = (decision: GcraDecision) => {
      const waitSeconds = Math.max(1, Math.ceil(decision.waitMs / 1000));
      void reply.headers({ 'ratelimit-limit': max, 'ratelimit-remaining': decision.remaining, 'ratelimit-reset': waitSeconds });
      if (decision.allowed) return done();
      done(new DomainError('RATE_LIMITED', 'Too many requests; retry later', { retryAfterSeconds: waitSeconds }));
    };
    const decision = gcra.take(request.ip, max, windowMs);
    if (decision instanceof Promise) decision.then(apply, () => done());
    else apply(decision);
  };
}
