// The GraphQL transport: Mercurius at POST/GET /graphql over the same services as REST. Encapsulated
// (a plain plugin, registered by buildServer): Mercurius' error handler and formatter, and the rate
// limit hook, apply to its routes only.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import mercurius, { type IResolvers } from 'mercurius';
import type { Principal } from '../../components/access/index.js';
import type { ApiKeysService } from '../../components/api-keys/index.js';
import { bearerTokenOf, type AuthService } from '../../components/auth/index.js';
import type { LedgerService } from '../../components/ledger/index.js';
import type { UsersService } from '../../components/users/index.js';
import { unauthenticated } from '../../platform/errors.js';
import { originOfRequest } from '../../platform/http.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import type { Logger } from '../../platform/logger.js';
import type { Gcra } from '../../platform/rate-limit.js';
import { rateLimitHook } from '../http/rate-limit-hook.js';
import { createErrorFormatter } from './errors.js';
import { queryLimitRule, type QueryLimits } from './limits.js';
import { createLoaders, type Loaders } from './loaders.js';
import { createResolvers, type GraphqlContext } from './resolvers.js';
import { typeDefs } from './schema.js';
import { connectionPrincipal, livePubSub, onConnect, validateSubscriptions } from './subscriptions.js';

export interface GraphqlOptions {
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  readonly apiKeys: ApiKeysService;
  readonly logger: Logger;
  readonly rateLimiter: Gcra;
  readonly rateLimitMax: number;
  readonly rateLimitWindowMs: number;
  readonly limits: QueryLimits;
  readonly graphiql: boolean;
}

const GRAPHIQL_CSP =
  "default-src 'self'; script-src 'self' https://unpkg.com; style-src 'self' 'unsafe-inline' https://unpkg.com; " +
  "img-src 'self' data:; font-src 'self' data: https://unpkg.com; connect-src 'self'; worker-src 'self'; frame-ancestors 'none'";

/**
 * The caller, authenticated on first use (register and login need none), as REST's authenticate
 * hook does: the same token syntax, the same auth.authenticate, the same UNAUTHENTICATED.
 */
function principalOnDemand(auth: AuthService, request: FastifyRequest): () => Promise<Principal> {
  let principal: Promise<Principal> | undefined;
  return () => {
    principal ??= (async () => {
      const token = bearerTokenOf(request.headers.authorization);
      if (!token) throw unauthenticated('Authentication required: send Authorization: Bearer <token>');
      return auth.authenticate(token);
    })();
    return principal;
  };
}

/**
 * A request's context. A class, not an object literal with a `get loaders()`: V8 builds such a
 * literal in dictionary mode, and under load a third of what a `{ me }` request allocated then
 * outlived the young generation (scavenges of ~6 ms instead of ~1 ms, and mark-compacts): GC was
 * the largest single cost of a request. With the getter on the prototype every context has one
 * fast shape, and GraphQL `me` took about a third less CPU.
 */
class RequestContext implements GraphqlContext {
  readonly requestId: string;
  readonly clientIp: string;
  readonly traceparentHeader: string | undefined;
  readonly principal: () => Promise<Principal>;
  /** Not #private fields: a context made with Object.create(this one) must still reach them. */
  private madeLoaders: Loaders | undefined;
  private madeOrigin: RequestOrigin | undefined;

  constructor(
    private readonly request: FastifyRequest,
    auth: AuthService,
    private readonly services: Parameters<typeof createLoaders>[0],
  ) {
    this.requestId = request.id;
    this.clientIp = request.ip;
    const traceparent = request.headers.traceparent;
    this.traceparentHeader = typeof traceparent === 'string' ? traceparent : undefined;
    this.principal = principalOnDemand(auth, request);
  }

  /** Made on first use: only writes note where they came from. */
  get origin(): RequestOrigin {
    return (this.madeOrigin ??= originOfRequest(this.request));
  }

  /** Made on first use: most requests (me, a mutation) follow no link. */
  get loaders(): Loaders {
    return (this.madeLoaders ??= createLoaders(this.services, this.principal));
  }
}

export const graphqlTransport: FastifyPluginAsync<GraphqlOptions> = async (app, options) => {
  const services = { users: options.users, auth: options.auth, ledger: options.ledger, apiKeys: options.apiKeys };
  // As on /api/: per client, before anything is parsed.
  app.addHook('onRequest', rateLimitHook(options.rateLimiter, options.rateLimitMax, options.rateLimitWindowMs));
  if (options.graphiql) {
    // GraphiQL is an HTML page whose scripts and styles Mercurius loads from unpkg: it needs its own
    // policy instead of the API's `default-src 'none'`, as /docs does (only when it is enabled).
    app.addHook('onRequest', (request, reply, done) => {
      if (request.url.startsWith('/graphiql')) void reply.header('content-security-policy', GRAPHIQL_CSP);
      done();
    });
  }
  const validationRules = [queryLimitRule(options.limits)];
  await app.register(mercurius, {
    schema: typeDefs,
    resolvers: createResolvers(services, options.logger) as unknown as IResolvers,
    path: '/graphql',
    graphiql: options.graphiql,
    validationRules,
    allowBatchedQueries: false,
    jit: 1,
    errorFormatter: createErrorFormatter(options.logger),
    context: (request): GraphqlContext => new RequestContext(request, options.auth, services),
    subscription: {
      pubsub: livePubSub(options.logger),
      // The upgrade request's id and address; its caller comes with connection_init (onConnect).
      context: (_socket: unknown, request: FastifyRequest) => ({ requestId: request.id, clientIp: request.ip }),
      onConnect: async (message: { payload?: unknown }) => {
        const connection = await onConnect(options.auth)(message);
        if (!connection) return false;
        const principal = connectionPrincipal(options.auth, connection);
        return { connection, principal, loaders: createLoaders(services, principal, { cache: false }) };
      },
      keepAlive: 30_000,
    },
  });
  validateSubscriptions(app, validationRules, options.logger);
};
