// The `authenticate` onRequest hook of every protected route: the bearer token becomes
// `request.principal` through the auth service's one entry point, or the request fails UNAUTHENTICATED.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, unauthenticated } from '../../platform/errors.js';
import type { Gcra, GcraDecision } from '../../platform/rate-limit.js';
import type { Principal } from '../access/index.js';
import type { AuthService } from './auth.service.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook that resolves the bearer token to `request.principal` or answers 401. */
    authenticate: (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void) => void;
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The token of an `Authorization: Bearer <token>` header (or gRPC metadata); undefined for any other value. */
export const bearerTokenOf = (header: unknown): string | undefined =>
  typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined;

/** A budget per API key (API_KEY_RATE_LIMIT_*), on top of the per-client one every /api/ request has. */
export interface ApiKeyRateLimit {
  readonly limiter: Gcra;
  readonly max: number;
  readonly windowMs: number;
}

/**
 * Callback style on purpose: with the token verified before and the user's state in memory (the
 * common case) auth.authenticate answers synchronously, and the request goes on without a promise hop.
 */
function authenticateHook(auth: AuthService, keyLimit: ApiKeyRateLimit | undefined) {
  /** The key's budget, keyed by key id (not by secret: the limiter's keys may sit in Redis). */
  const limitKey = (reply: FastifyReply, keyId: string, done: (error?: Error) => void): void => {
    if (!keyLimit) return done();
    const { max, windowMs } = keyLimit;
    const apply = (decision: GcraDecision) => {
      const waitSeconds = Math.max(1, Math.ceil(decision.waitMs / 1000));
      // The tighter of the two budgets is the one the client is told about.
      if (!decision.allowed || decision.remaining < Number(reply.getHeader('ratelimit-remaining') ?? Infinity)) {
        void reply.headers({ 'ratelimit-limit': max, 'ratelimit-remaining': decision.remaining, 'ratelimit-reset': waitSeconds });
      }
      if (decision.allowed) return done();
      done(new DomainError('RATE_LIMITED', 'Too many requests with this API key; retry later', { retryAfterSeconds: waitSeconds }));
    };
    const decision = keyLimit.limiter.take(`api-key:${keyId}`, max, windowMs);
    // A limiter failure lets the request through, as the per-client limit does.
    if (decision instanceof Promise) decision.then(apply, () => done());
    else apply(decision);
  };
  const admit = (request: FastifyRequest, reply: FastifyReply, principal: Principal, done: (error?: Error) => void): void => {
    request.principal = principal;
    if (principal.apiKey) return limitKey(reply, principal.apiKey.id, done);
    done();
  };
  return (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    const token = bearerTokenOf(request.headers.authorization);
    if (!token) return done(unauthenticated('Authentication required: send Authorization: Bearer <token>'));
    let principal: Principal | Promise<Principal>;
    try {
      principal = auth.authenticate(token);
    } catch (error) {
      return done(error as Error);
    }
    if (!(principal instanceof Promise)) return admit(request, reply, principal, done);
    principal.then(
      (resolved) => admit(request, reply, resolved, done),
      (error: unknown) => done(error as Error),
    );
  };
}

/**
 * Decorates the app it is registered on with `authenticate` (and requests with their `principal`),
 * for every route plugin registered after it. Not encapsulated (Fastify's `skip-override`, what
 * fastify-plugin sets): the decoration belongs to the registering app, not to a child context.
 */
const decorateWithAuthenticate: FastifyPluginAsync<{ auth: AuthService; apiKeyRateLimit?: ApiKeyRateLimit }> = async (
  app,
  { auth, apiKeyRateLimit },
) => {
  app.decorateRequest('principal', undefined);
  app.decorate('authenticate', authenticateHook(auth, apiKeyRateLimit));
};
export const authenticatePlugin = Object.assign(decorateWithAuthenticate, { [Symbol.for('skip-override')]: true });
