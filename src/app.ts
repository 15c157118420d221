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
} from './components/auth/index.js';
import { createOutbox, pruneOutbox, startRelay, type Outbox, type Relay } from './components/events/index.js';
import { publishersFromConfig } from './components/events/publishers/from-config.js';
import { createLedgerService, type LedgerService } from './components/ledger/index.js';
import { createWebhooks } from './components/webhooks/index.js';
import { createClosuresService, type ClosurePauses, type ClosuresService } from './components/closures/index.js';
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
    const userStateCache = createCache<UserState>({
        maxEntries: 100_000,
        ttlMs: config.cacheL1TtlMs,
        disabled: !config.cacheEnabled,
        maxStalenessMs: USER_STATE_MAX_STALENESS_MS,
        ...(redis ? { shared: { redis, name: 'users', ttlSeconds: config.cacheL2TtlSeconds, logger } } : {}),
        ...options.userStateCacheFaults,
    });
    metrics.observeCache('users', userStateCache.stats);
    const users = createUsersService({
      database,
      passwords,
      logger,
      stateCache: userStateCache,
      pauses: options.credentialPauses,
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
      retiredKeyGraceSeconds: config.accessTokenTtlSeconds + 300,
      sealer,
    });
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
      ...(outbox ? { outbox } : {}),
    });
    // A user with money cannot be deleted (the ledger vetoes); otherwise their accounts close and
    // their sessions end, in the same transaction as the delete.
    users.onDelete((tx, userId, origin) => ledger.closeAccountsOfDeletedUser(tx, userId, origin));
    users.onDelete((tx, userId) => revokeSessionsOfUser(tx, userId));
    const closures = createClosuresService({
      database,
      users,
      ledger,
      logger,
      schedule: scheduler.every,
      ...(options.closurePauses ? { pauses: options.closurePauses } : {}),
    });

    if (config.bootstrapAdmin) {
      const outcome = await users.ensureAdmin(config.bootstrapAdmin.email, config.bootstrapAdmin.password);
      if (outcome === 'created') logger.info({ email: config.bootstrapAdmin.email }, 'users: bootstrap admin created');
    }

    let shuttingDown = false;
    // One limiter for every transport: a client's REST and gRPC calls count against one budget.
    const rateLimiter = redis ? createSharedGcra(redis) : createLocalGcra();
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
            rateLimiter,
            rateLimitMax: config.rateLimitMax,
            rateLimitWindowMs: config.rateLimitWindowMs,
            isReady: () => database.ping(1_000).then(() => true, () => false),
            isShuttingDown: () => shuttingDown,
          });

    ledger.startBackgroundWork();
    closures.startBackgroundWork();
    auth.startBackgroundWork();
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

    return {
      config,
      logger,
      database,
      redis,
      users,
      auth,
      ledger,
      closures,
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
          signingKeys.stop();
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
