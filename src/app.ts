// Composition root: config -> platform -> components -> transport. main.ts and the tests both build
// the service here, so what is tested is what runs.
import type { FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import type { Config } from './config.js';
import {
  createAccessTokens,
  createAuthService,
  createMemoryLoginThrottle,
  createSharedLoginThrottle,
  keySealerFor,
  loadSigningKeys,
  loadSuccessorSecret,
  revokeSessionsOfUser,
  type AuthService,
  type SessionState,
} from './components/auth/index.js';
import { createOutbox, pruneOutbox, startRelay, type Outbox, type Relay } from './components/events/index.js';
import { publishersFromConfig } from './components/events/publishers/from-config.js';
import { createLedgerService, type LedgerService } from './components/ledger/index.js';
import { createWebhooks } from './components/webhooks/index.js';
import { createAuditService, type AuditService } from './components/audit/index.js';
import { createOidcService, type OidcService } from './components/oidc/index.js';
import { createClosuresService, type ClosurePauses, type ClosuresService } from './components/closures/index.js';
import { createMfa, type MfaPauses } from './components/mfa/index.js';
import { createApiKeysService, type ApiKeyState, type ApiKeysService } from './components/api-keys/index.js';
import { createEmailFlowsService, type EmailFlowsService } from './components/email-flows/index.js';
import { createMailer } from './platform/mailer.js';
import { createPasswordHasher, createUsersService, type CredentialPauses, type UserState, type UsersService } from './components/users/index.js';
import { createCache, type CacheOptions } from './platform/cache.js';
import { createMetrics } from './platform/metrics.js';
import { openDatabase, type Database } from './platform/db/index.js';
import { migrateSchema } from './schema.js';
import { createLoggers, type Logger } from './platform/logger.js';
import { createLocalGcra, createSharedGcra } from './platform/rate-limit.js';
import { createLiveEvents, type LiveEvents } from './platform/live-events.js';
import { createScheduler } from './platform/jobs.js';
import { connectRedis, type RedisConnection } from './platform/redis.js';
import { buildServer } from './transports/http.js';
import { createGrpcServer, type GrpcServer } from './transports/grpc/server.js';

export interface Application {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly redis: RedisConnection | undefined;
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  /** Closing users as a saga (freeze, settle, revoke, delete), resumed after a crash. */
  readonly closures: ClosuresService;
  /** Email verification and password reset (mails over SMTP_URL, else links logged). */
  readonly emailFlows: EmailFlowsService;
  /** API keys: management, and the resolution of `bsk_` bearer secrets (auth's apiKeys dependency). */
  readonly apiKeys: ApiKeysService;
  /** OpenID Connect login with the providers of OIDC_PROVIDERS (none: its routes answer 404 for every provider). */
  readonly oidc: OidcService;
  /** The audit log: use cases record into it (AuditTrail) in their transactions; GET /api/v1/audit reads it. */
  readonly audit: AuditService;
  /** Live events (posted transfers) across instances, feeding GraphQL subscriptions. */
  readonly live: LiveEvents;
  /** The outbox (undefined with EVENTS_OUTBOX=false) and this instance's relay, if it runs one. */
  readonly events: { readonly outbox: Outbox | undefined; readonly relay: Relay | undefined };
  readonly http: FastifyInstance;
  /** The gRPC server (not yet listening: main listens on GRPC_PORT); undefined when GRPC_PORT is unset. */
  readonly grpc: GrpcServer | undefined;
  /** Marks the service as shutting down (readiness 503), then closes HTTP and gRPC, timers and pools. */
  close(): Promise<void>;
}

/**
 * No cached user state is served longer than this after the read that produced it began: under the
 * contract's 1 s for a deletion, demotion or revocation to reach every instance, with room for the
 * request that observes it. Holds even if the writer's invalidation never reaches Redis.
 */
export const USER_STATE_MAX_STALENESS_MS = 800;

export interface ApplicationOptions {
  /** Where logs go (tests capture them); stdout by default. */
  readonly logDestination?: DestinationStream;
  /** Tests only: where credential use cases wait, to force races deterministically. */
  readonly credentialPauses?: CredentialPauses;
  /** Tests only: where a closure's runner waits after each step. */
  readonly closurePauses?: ClosurePauses;
  /** Tests only: fault injection into the user-state cache's Redis calls. */
  readonly userStateCacheFaults?: Pick<CacheOptions, 'beforeInvalidate'>;
  /** Tests only: the MFA component's clock (ms; time steps, challenge expiry) and where its use cases wait. */
  readonly mfa?: { readonly now?: () => number; readonly pauses?: MfaPauses };
}

export async function createApplication(config: Config, options: ApplicationOptions = {}): Promise<Application> {
  const { logger, accessLogger } = createLoggers(config.logLevel, options.logDestination);
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    poolSize: config.databasePoolSize,
    logger,
  });
  const redis = config.redisUrl ? connectRedis(config.redisUrl, logger) : undefined;
  try {
    const { applied } = await migrateSchema(database);
    if (applied.length > 0) logger.info({ applied }, 'database: migrations applied');

    const passwords = await createPasswordHasher({ concurrency: config.passwordHashConcurrency });
    const metrics = createMetrics();
    // Every change other systems care about writes its event in its own transaction.
    const outbox = config.events.outbox ? createOutbox() : undefined;
    // Periodic work runs once per tick across all instances.
    const scheduler = createScheduler({ database, logger, registry: metrics.registry });
    /**
     * A cache of state that revocation depends on (users, sessions, API keys): in memory, shared
     * through Redis when configured, never served staler than USER_STATE_MAX_STALENESS_MS.
     */
    const revocationStateCache = <V>(name: string, faults?: Pick<CacheOptions, 'beforeInvalidate'>) =>
      createCache<V>({
        maxEntries: 100_000,
        ttlMs: config.cacheL1TtlMs,
        disabled: !config.cacheEnabled,
        maxStalenessMs: USER_STATE_MAX_STALENESS_MS,
        ...(redis ? { shared: { redis, name, ttlSeconds: config.cacheL2TtlSeconds, logger } } : {}),
        ...faults,
      });
    const userStateCache = revocationStateCache<UserState>('users', options.userStateCacheFaults);
    metrics.observeCache('users', userStateCache.stats);
    // Security-relevant actions are recorded in the transactions that make them; expired ones are removed below.
    const audit = createAuditService({ database, retentionDays: config.auditRetentionDays });
    const users = createUsersService({
      database,
      passwords,
      logger,
      stateCache: userStateCache,
      pauses: options.credentialPauses,
      audit,
      ...(outbox ? { outbox } : {}),
    });
    const throttleOptions = { maxFailures: config.loginMaxFailures, windowSeconds: config.loginFailureWindowSeconds };
    const sealer = keySealerFor(config.keyEncryptionSecret);
    if (!sealer) {
      logger.warn('auth: private signing keys are stored unencrypted in the database; set KEY_ENCRYPTION_SECRET to seal them');
    }
    const signingKeys = await loadSigningKeys({
      database,
      logger,
      algorithm: config.accessTokenAlg,
      retiredKeyGraceSeconds: config.accessTokenTtlSeconds + 300,
      sealer,
    });
    const sessionStates = revocationStateCache<SessionState>('sessions');
    metrics.observeCache('sessions', sessionStates.stats);
    const apiKeyStates = revocationStateCache<ApiKeyState>('api-keys');
    metrics.observeCache('api-keys', apiKeyStates.stats);
    // One limiter for every transport: a client's REST and gRPC calls count against one budget, and an
    // API key's calls against its own on top, whatever the protocol.
    const rateLimiter = redis ? createSharedGcra(redis) : createLocalGcra();
    const apiKeys = createApiKeysService({
      database,
      users,
      keyStates: apiKeyStates,
      logger,
      audit,
      rateLimit: { limiter: rateLimiter, max: config.apiKeyRateLimitMax, windowMs: config.apiKeyRateLimitWindowMs },
    });
    // TOTP second factor: login asks it for a challenge, and completes only on a right code.
    const mfa = createMfa({ database, users, sealer, audit, logger, ...options.mfa });
    await mfa.sealStoredSecrets(logger);
    const auth = createAuthService(
      {
        database,
        users,
        accessTokens: createAccessTokens({ keys: signingKeys, ttlSeconds: config.accessTokenTtlSeconds }),
        loginThrottle: redis ? createSharedLoginThrottle(redis, throttleOptions) : createMemoryLoginThrottle(throttleOptions),
        refreshTokenTtlSeconds: config.refreshTokenTtlSeconds,
        refreshReuseGraceSeconds: config.refreshReuseGraceSeconds,
        logger,
        schedule: scheduler.every,
        sessionStates,
        apiKeys,
        audit,
        secondFactor: mfa,
        ...(outbox ? { outbox } : {}),
      },
      await loadSuccessorSecret(database, sealer),
    );
    // Webhook endpoints (admin API), the relay's fan-out into deliveries, and the worker that sends them.
    const webhooks = createWebhooks({ database, logger, sealer, settings: config.webhooks, registry: metrics.registry });
    const live = createLiveEvents({ logger, ...(redis ? { redis } : {}) });
    const ledger = createLedgerService({
      database,
      users,
      logger,
      idempotencyKeyTtlSeconds: config.idempotencyKeyTtlSeconds,
      pendingSweepIntervalMs: config.pendingSweepIntervalMs,
      batchSize: config.ledgerBatchSize,
      batchConcurrency: config.ledgerBatchConcurrency,
      // Posted transfers reach the live views (GraphQL subscriptions) of every instance.
      live,
      schedule: scheduler.every,
      registry: metrics.registry,
      ...(outbox ? { outbox } : {}),
    });
    // A user with money cannot be deleted (the ledger vetoes); otherwise their accounts close and
    // their sessions end, in the same transaction as the delete.
    users.onDelete((tx, userId, origin) => ledger.closeAccountsOfDeletedUser(tx, userId, origin));
    users.onDelete((tx, userId) => revokeSessionsOfUser(tx, userId));
    users.onDelete((tx, userId, origin) => apiKeys.revokeKeysOfDeletedUser(tx, userId, origin));
    // Providers are discovered on first use, so a provider that is down does not stop the service.
    const oidc = createOidcService({
      database,
      users,
      startSession: (userId, provider, origin) => auth.loginAs(userId, provider, origin),
      settings: config.oidc,
      logger,
      audit,
    });
    // A deleted user's provider subjects are freed with the user, as the email is.
    users.onDelete((tx, userId) => oidc.forgetUser(tx, userId));
    // A deleted user's TOTP secret, recovery codes and challenges go with the user.
    users.onDelete((tx, userId) => mfa.forgetUser(tx, userId));
    const closures = createClosuresService({
      database,
      users,
      ledger,
      logger,
      schedule: scheduler.every,
      ...(options.closurePauses ? { pauses: options.closurePauses } : {}),
    });
    const mailer = createMailer({ smtpUrl: config.mail.smtpUrl, from: config.mail.from, logger });
    const emailFlows = createEmailFlowsService({
      database,
      users,
      mailer,
      publicUrl: config.mail.publicUrl,
      logger,
      revokeSessionsOfUser,
    });
    // A registration mails its verification link once committed, in the background.
    users.onRegistered((user) => emailFlows.sendVerification(user));

    if (config.bootstrapAdmin) {
      const outcome = await users.ensureAdmin(config.bootstrapAdmin.email, config.bootstrapAdmin.password);
      if (outcome === 'created') logger.info({ email: config.bootstrapAdmin.email }, 'users: bootstrap admin created');
    }

    let shuttingDown = false;
    const http = await buildServer({
      config,
      logger,
      accessLogger,
      users,
      auth,
      ledger,
      signingKeys,
      metrics,
      rateLimiter,
      webhooks: webhooks.service,
      closures,
      audit,
      oidc,
      apiKeys,
      emailFlows,
      mfa,
      readiness: {
        database: async () => (await database.ping(1_000), 'ok'),
        // Redis away is degraded, not down: the service keeps serving on in-process equivalents.
        ...(redis ? { redis: async () => (await redis.ping(500).then(() => 'ok' as const, () => 'degraded' as const)) } : {}),
      },
      isShuttingDown: () => shuttingDown,
    });
    const grpc =
      config.grpcPort === undefined
        ? undefined
        : createGrpcServer({
            logger,
            users,
            auth,
            ledger,
            apiKeys,
            rateLimiter,
            rateLimitMax: config.rateLimitMax,
            rateLimitWindowMs: config.rateLimitWindowMs,
            isReady: () => database.ping(1_000).then(() => true, () => false),
            isShuttingDown: () => shuttingDown,
          });

    ledger.startBackgroundWork();
    closures.startBackgroundWork();
    auth.startBackgroundWork();
    apiKeys.start();
    webhooks.worker.start();
    const events = config.events;
    const publishers = outbox && events.embeddedRelay ? [...publishersFromConfig(events, config.redisUrl, logger), webhooks.fanout] : [];
    const relay =
      outbox && publishers.length > 0
        ? startRelay({
            database,
            publishers,
            source: events.source,
            batchSize: events.relayBatchSize,
            pollIntervalMs: events.relayPollIntervalMs,
            leaseMs: events.relayLeaseMs,
            logger,
            registry: metrics.registry,
          })
        : undefined;
    if (relay) outbox?.onCommitted(() => relay.wake());
    scheduler.every('events: pruned published events', 60_000, () => pruneOutbox(database.db, events.retentionHours * 3_600, 10_000));
    scheduler.every('oidc: purged expired login flows', 3_600_000, () => oidc.purgeExpiredFlows());
    scheduler.every('audit: removed expired events', 3_600_000, () => audit.purgeExpired());
    scheduler.every('email-flows: purged expired tokens', 3_600_000, () => emailFlows.purgeExpiredTokens());

    return {
      config,
      logger,
      database,
      redis,
      users,
      auth,
      ledger,
      closures,
      apiKeys,
      audit,
      oidc,
      emailFlows,
      live,
      events: { outbox, relay },
      http,
      grpc,
      async close() {
        shuttingDown = true;
        try {
          await Promise.all([http.close(), grpc?.close()]);
        } finally {
          ledger.stopBackgroundWork();
          auth.stopBackgroundWork();
          await closures.stopBackgroundWork();
          await scheduler.stop();
          await relay?.stop();
          await webhooks.worker.stop();
          await apiKeys.stop(); // writes the last uses recorded since the last flush
          signingKeys.stop();
          // Mails still being sent (requests answered before the close) go out first.
          await emailFlows.idle();
          await mailer.close();
          await passwords.close();
          await redis?.close();
          await database.close();
        }
      },
    };
  } catch (error) {
    await redis?.close().catch(() => undefined);
    await database.close().catch(() => undefined);
    throw error;
  }
}
