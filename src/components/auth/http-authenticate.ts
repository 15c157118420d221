// The `authenticate` onRequest hook of every protected route: the bearer token becomes
// `request.principal` through the auth service's one entry point, or the request fails UNAUTHENTICATED.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { unauthenticated } from '../../platform/errors.js';
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

/**
 * Callback style on purpose: with the token verified before and the user's state in memory (the
 * common case) auth.authenticate answers synchronously, and the request goes on without a promise hop.
 */
function authenticateHook(auth: AuthService) {
  return (request: FastifyRequest, _reply: FastifyReply, done: (error?: Error) => void): void => {
    const token = bearerTokenOf(request.headers.authorization);
    if (!token) return done(unauthenticated('Authentication required: send Authorization: Bearer <token>'));
    let principal: Principal | Promise<Principal>;
    try {
      principal = auth.authenticate(token);
    } catch (error) {
      return done(error as Error);
    }
    if (!(principal instanceof Promise)) {
      request.principal = principal;
      return done();
    }
    principal.then(
      (resolved) => {
        request.principal = resolved;
        done();
      },
      (error: unknown) => done(error as Error),
    );
  };
}

/**
 * Decorates the app it is registered on with `authenticate` (and requests with their `principal`),
 * for every route plugin registered after it. Not encapsulated (Fastify's `skip-override`, what
 * fastify-plugin sets): the decoration belongs to the registering app, not to a child context.
 */
const decorateWithAuthenticate: FastifyPluginAsync<{ auth: AuthService }> = async (app, { auth }) => {
  app.decorateRequest('principal', undefined);
  app.decorate('authenticate', authenticateHook(auth));
};
export const authenticatePlugin = Object.assign(decorateWithAuthenticate, { [Symbol.for('skip-override')]: true });
