// Composition root: config -> platform -> components -> transport. main.ts and the tests both build
// the service here, so what is tested is what runs.
import type { FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import type { Config } from './config.js';
import {
  createAccessTokens,
  createAuthService,
  createMemoryLoginThrottle,
  loadSigningKeys,
  loadSuccessorSecret,
  revokeSessionsOfUser,
  type AuthService,
} from './components/auth/index.js';
import { createLedgerService, type LedgerService } from './components/ledger/index.js';
import { createPasswordHasher, createUsersService, type UserState, type UsersService } from './components/users/index.js';
import { createLocalCache } from './platform/cache.js';
import { openDatabase, type Database } from './platform/db/index.js';
import { migrate } from './platform/db/migrate.js';
import { createLogger, type Logger } from './platform/logger.js';
import { buildServer } from './transports/http.js';

export interface Application {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  readonly http: FastifyInstance;
  /** Marks the service as shutting down (readiness 503), then closes HTTP, timers and pools. */
  close(): Promise<void>;
}

export interface ApplicationOptions {
  /** Where logs go (tests capture them); stdout by default. */
  readonly logDestination?: DestinationStream;
}

export async function createApplication(config: Config, options: ApplicationOptions = {}): Promise<Application> {
  const logger = createLogger(config.logLevel, options.logDestination);
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    poolSize: config.databasePoolSize,
    logger,
  });
  try {
    const { applied } = await migrate(database);
    if (applied.length > 0) logger.info({ applied }, 'database: migrations applied');

    const passwords = await createPasswordHasher({ concurrency: config.passwordHashConcurrency });
    const users = createUsersService({
      database,
      passwords,
      logger,
      stateCache: createLocalCache<UserState>({ maxEntries: 100_000, ttlMs: config.principalCacheTtlMs }),
    });
    const signingKeys = await loadSigningKeys({
      database,
      logger,
      retiredKeyGraceSeconds: config.accessTokenTtlSeconds + 300,
    });
    const auth = createAuthService(
      {
        database,
        users,
        accessTokens: createAccessTokens({ keys: signingKeys, ttlSeconds: config.accessTokenTtlSeconds }),
        loginThrottle: createMemoryLoginThrottle({
          maxFailures: config.loginMaxFailures,
          windowSeconds: config.loginFailureWindowSeconds,
        }),
        refreshTokenTtlSeconds: config.refreshTokenTtlSeconds,
        refreshReuseGraceSeconds: config.refreshReuseGraceSeconds,
        logger,
      },
      await loadSuccessorSecret(database),
    );
    const ledger = createLedgerService({
      database,
      users,
      logger,
      idempotencyKeyTtlSeconds: config.idempotencyKeyTtlSeconds,
      pendingSweepIntervalMs: config.pendingSweepIntervalMs,
    });
    // A user with money cannot be deleted (the ledger vetoes); otherwise their accounts close and
    // their sessions end, in the same transaction as the delete.
    users.onDelete((tx, userId) => ledger.closeAccountsOfDeletedUser(tx, userId));
    users.onDelete((tx, userId) => revokeSessionsOfUser(tx, userId));

    if (config.bootstrapAdmin) {
      const outcome = await users.ensureAdmin(config.bootstrapAdmin.email, config.bootstrapAdmin.password);
      if (outcome === 'created') logger.info({ email: config.bootstrapAdmin.email }, 'users: bootstrap admin created');
    }

    let shuttingDown = false;
    const http = await buildServer({
      config,
      logger,
      users,
      auth,
      ledger,
      signingKeys,
      readiness: { database: async () => (await database.ping(1_000), 'ok') },
      isShuttingDown: () => shuttingDown,
    });

    ledger.startBackgroundWork();

    return {
      config,
      logger,
      database,
      users,
      auth,
      ledger,
      http,
      async close() {
        shuttingDown = true;
        try {
          await http.close();
        } finally {
          ledger.stopBackgroundWork();
          signingKeys.stop();
          await database.close();
        }
      },
    };
  } catch (error) {
    await database.close().catch(() => undefined);
    throw error;
  }
}
