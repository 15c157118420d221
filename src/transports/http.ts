// The HTTP transport: builds the Fastify app (it never listens; main does) from single-job modules
// (./http/), in the order they must run, and wires the components' route plugins. Every failure is
// answered by the one error mapper, ./http-errors.ts.
import compress from '@fastify/compress';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { authenticatePlugin, authRoutes, jwksRoutes, type AuthService, type SigningKeys } from '../components/auth/index.js';
import { healthRoutes, type ReadinessCheck } from '../components/health/http.js';
import { ledgerRoutes, type LedgerService } from '../components/ledger/index.js';
import { usersRoutes, type UsersService } from '../components/users/index.js';
import { webhooksRoutes, type WebhooksService } from '../components/webhooks/index.js';
import { closuresRoutes, type ClosuresService } from '../components/closures/index.js';
import { emailFlowsRoutes, type EmailFlowsService } from '../components/email-flows/index.js';
import { apiKeysRoutes, type ApiKeysService } from '../components/api-keys/index.js';
import { auditRoutes, type AuditService } from '../components/audit/index.js';
import { oidcRoutes, type OidcService } from '../components/oidc/index.js';
import { mfaRoutes, type MfaService } from '../components/mfa/index.js';
import { COMPRESS_THRESHOLD_BYTES } from '../platform/http.js';
import type { Logger } from '../platform/logger.js';
import type { Metrics } from '../platform/metrics.js';
import type { Gcra } from '../platform/rate-limit.js';
import { registerAccessLog } from './http/access-log.js';
import { admissionHook } from './http/admission.js';
import { registerCors } from './http/cors.js';
import { registerDocs } from './http/docs.js';
import { graphqlTransport } from './graphql/plugin.js';
import { registerErrorHandlers } from './http/error-handler.js';
import { acceptJsonBodiesOnly } from './http/json-parser.js';
import { registerMetricsRoute } from './http/metrics-route.js';
import { rateLimitHook } from './http/rate-limit-hook.js';
import { createRequestIds } from './http/request-id.js';
import { securityHeadersHook } from './http/security-headers.js';
import { serverOptions } from './http/server-options.js';
import { answerConnectAndExpect, answerUpgradeRequests } from './http/socket-errors.js';
import { createValidatorCompiler } from './http/validation.js';
import { coalesceWrite } from './http/write-coalescing.js';

interface HttpDependencies {
  readonly config: Config;
  readonly logger: Logger;
  readonly accessLogger: Logger;
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  readonly webhooks: WebhooksService;
  readonly closures: ClosuresService;
  readonly emailFlows: EmailFlowsService;
  readonly apiKeys: ApiKeysService;
  readonly audit: AuditService;
  readonly oidc: OidcService;
  readonly mfa: MfaService;
  readonly signingKeys: SigningKeys;
  readonly rateLimiter: Gcra;
  readonly metrics: Metrics;
  readonly readiness: Record<string, ReadinessCheck>;
  /** Set when shutdown begins: readiness turns 503 so load balancers stop sending traffic. */
  readonly isShuttingDown: () => boolean;
}

export async function buildServer(deps: HttpDependencies): Promise<FastifyInstance> {
  const { config } = deps;
  const requestIds = createRequestIds();
  const app = Fastify(serverOptions(config, requestIds)).withTypeProvider<TypeBoxTypeProvider>();
  answerConnectAndExpect(app.server, requestIds);
  app.setValidatorCompiler(createValidatorCompiler());
  acceptJsonBodiesOnly(app);
  await app.register(authenticatePlugin, { auth: deps.auth });

  // onRequest, in this order: the headers first, so that every answer (a refusal included) has them.
  app.addHook('onRequest', securityHeadersHook);
  app.addHook('onRequest', admissionHook(deps.isShuttingDown));
  registerAccessLog(app, deps.accessLogger);
  registerErrorHandlers(app, deps.logger);

  await registerCors(app, config.allowedOrigins);
  // Responses only: request bodies are small JSON, so no decompression hook on every request.
  await app.register(compress, { threshold: COMPRESS_THRESHOLD_BYTES, globalDecompression: false });
  // After compress, so that it is the last onSend hook and writes what compress produced.
  app.addHook('onSend', coalesceWrite);

  await registerDocs(app);
  registerMetricsRoute(app, deps.metrics);
  await app.register(healthRoutes, { checks: deps.readiness, isShuttingDown: deps.isShuttingDown });
  await app.register(jwksRoutes, { keys: deps.signingKeys });
  await app.register(
    async (api) => {
      // Per-client limit on every /api/ route, checked before authentication or body parsing.
      api.addHook('onRequest', rateLimitHook(deps.rateLimiter, config.rateLimitMax, config.rateLimitWindowMs));
      await api.register(authRoutes, { auth: deps.auth, users: deps.users });
      await api.register(usersRoutes, { users: deps.users });
      await api.register(ledgerRoutes, { ledger: deps.ledger });
      await api.register(webhooksRoutes, { webhooks: deps.webhooks });
      await api.register(closuresRoutes, { closures: deps.closures });
      await api.register(emailFlowsRoutes, { emailFlows: deps.emailFlows });
      await api.register(apiKeysRoutes, { apiKeys: deps.apiKeys });
      await api.register(auditRoutes, { audit: deps.audit });
      await api.register(oidcRoutes, { oidc: deps.oidc });
      await api.register(mfaRoutes, { mfa: deps.mfa, auth: deps.auth });
    },
    { prefix: '/api/v1' },
  );
  await app.register(graphqlTransport, {
    users: deps.users,
    auth: deps.auth,
    ledger: deps.ledger,
    apiKeys: deps.apiKeys,
    logger: deps.logger,
    rateLimiter: deps.rateLimiter,
    rateLimitMax: config.rateLimitMax,
    rateLimitWindowMs: config.rateLimitWindowMs,
    limits: {
      maxDepth: config.graphqlMaxDepth,
      maxCost: config.graphqlMaxCost,
      maxAliases: config.graphqlMaxAliases,
      introspection: config.graphqlIntrospection,
    },
    graphiql: config.graphiql,
  });
  // Subscriptions made the server listen for upgrades: requests asking for one are answered safely.
  answerUpgradeRequests(app, '/graphql', requestIds);
  return app;
}
