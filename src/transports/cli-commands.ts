// The commands' work, loaded by cli.ts once the configuration and the arguments are good: each opens
// what it needs (the database, the application, the relay), calls the same code the service runs,
// and returns an exit code.
import { createServer, type Server } from 'node:http';
import { Registry } from 'prom-client';
import { createApplication, type Application } from '../app.js';
import { keySealerFor, rotateSigningKey } from '../components/auth/index.js';
import { cursorStatus, startRelay } from '../components/events/index.js';
import { publishersFromConfig } from '../components/events/publishers/from-config.js';
import { checkLedger as checkLedgerOf } from '../components/ledger/index.js';
import { createWebhookFanout } from '../components/webhooks/index.js';
import { createPasswordHasher, createUsersService, type UserState } from '../components/users/index.js';
import type { Config } from '../config.js';
import { createLocalCache } from '../platform/cache.js';
import { openDatabase, type Database } from '../platform/db/index.js';
import { DomainError } from '../platform/errors.js';
import { createLogger } from '../platform/logger.js';
import { migrateSchema } from '../schema.js';

async function withDatabase(config: Config, work: (database: Database) => Promise<number>): Promise<number> {
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  let database: Database;
  try {
    database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 2, logger });
  } catch (error) {
    // Unreachable server, a data directory another process holds: one line, not a stack trace.
    process.stderr.write(`bastion: could not open the database: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  try {
    return await work(database);
  } finally {
    await database.close();
  }
}

export async function migrate(config: Config): Promise<number> {
  return withDatabase(config, async (database) => {
    const { applied } = await migrateSchema(database);
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
    return 0;
  });
}

export async function rotateKeys(config: Config): Promise<number> {
  return withDatabase(config, async (database) => {
    await migrateSchema(database);
    const kid = await rotateSigningKey(database, { algorithm: config.accessTokenAlg, sealer: keySealerFor(config.keyEncryptionSecret) });
    process.stdout.write(`new signing key ${kid}; older keys verify until their tokens expire\n`);
    return 0;
  });
}

export async function checkLedger(config: Config): Promise<number> {
  return withDatabase(config, async (database) => {
    const report = await checkLedgerOf(database.db);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return report.ok ? 0 : 1;
  });
}

export async function eventsStatus(config: Config): Promise<number> {
  return withDatabase(config, async (database) => {
    await migrateSchema(database);
    process.stdout.write(`${JSON.stringify(await eventsStatusOf(database), null, 2)}\n`);
    return 0;
  });
}

export async function createAdmin(config: Config, admin: { email: string; name: string; password: string }): Promise<number> {
  const { email, name, password } = admin;
  return withDatabase(config, async (database) => {
    await migrateSchema(database);
    const logger = createLogger('warn');
    const passwords = await createPasswordHasher({ concurrency: 1 });
    const users = createUsersService({
      database,
      logger,
      passwords,
      stateCache: createLocalCache<UserState>({ maxEntries: 1, ttlMs: 0 }),
    });
    try {
      const user = await users.create(
        { userId: 'cli', role: 'admin' },
        { email, name, password, role: 'admin' },
      );
      process.stdout.write(`created admin ${user.id} <${user.email}>\n`);
      return 0;
    } catch (error) {
      if (error instanceof DomainError) {
        process.stderr.write(`create-admin: ${error.code}: ${error.message}\n`);
        return 1;
      }
      throw error;
    } finally {
      await passwords.close();
    }
  });
}

export async function serve(config: Config): Promise<number> {
  return new Promise<number>((resolve) => {
    let application: Application | undefined;
    let stopping = false;
    // Installed before the service starts, so a signal during start-up is a clean stop too.
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      if (application) void drain(application, signal);
    };
    const drain = async (running: Application, signal: NodeJS.Signals) => {
      const { http, logger } = running;
      logger.info({ signal }, 'shutdown: draining in-flight requests');
      const deadline = setTimeout(() => {
        logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown: timed out, closing connections');
        http.server.closeAllConnections();
        running.grpc?.destroyConnections();
        resolve(1);
      }, config.shutdownTimeoutMs);
      deadline.unref();
      try {
        await running.close();
        clearTimeout(deadline);
        logger.info('shutdown: complete');
        logger.flush(() => resolve(0));
      } catch (error) {
        logger.error({ err: error }, 'shutdown: failed');
        resolve(1);
      }
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);

    createApplication(config)
      .then(async (created) => {
        application = created;
        if (stopping) return drain(created, 'SIGTERM');
        const address = await created.http.listen({ port: config.port, host: config.host });
        created.logger.info({ address, pid: process.pid }, `Server listening at ${address}`);
        if (created.grpc && config.grpcPort !== undefined) {
          const grpcPort = await created.grpc.listen(config.grpcPort, config.host);
          created.logger.info({ port: grpcPort, pid: process.pid }, `gRPC (h2c) listening on ${config.host}:${grpcPort}`);
        }
      })
      .catch((error: unknown) => {
        // A start that fails (database unreachable, port taken) is one clear line, not a trace.
        process.stderr.write(`bastion: could not start: ${error instanceof Error ? error.message : String(error)}\n`);
        resolve(1);
      });
  });
}

/** `events status`: per publisher, where it is and how far behind, for people and scripts alike. */
async function eventsStatusOf(database: Database) {
  const { lastSeq, total, cursors } = await cursorStatus(database.db);
  const now = Date.now();
  return {
    lastPosition: lastSeq.toString(),
    eventsStored: total,
    publishers: cursors.map((cursor) => ({
      publisher: cursor.publisher,
      position: cursor.position.toString(),
      backlog: cursor.backlog,
      lagSeconds: cursor.oldestWaitingAt ? Math.max(0, (now - cursor.oldestWaitingAt.getTime()) / 1000) : 0,
      leaseOwner: cursor.leaseUntil && cursor.leaseUntil.getTime() > now ? cursor.leaseOwner : null,
      lastPublishedAt: cursor.publishedAt?.toISOString() ?? null,
    })),
  };
}

/**
 * `relay`: the relay alone, for deployments that publish from separate processes (set
 * EVENTS_RELAY_EMBEDDED=false on the servers then, or keep both: leases keep them from doubling up).
 */
export async function runRelay(config: Config): Promise<number> {
  const logger = createLogger(config.logLevel);
  return withDatabase(config, async (database) => {
    await migrateSchema(database);
    const events = config.events;
    const registry = new Registry();
    const relay = startRelay({
      registry,
      database,
      // The brokers, and the webhooks' fan-out (its deliveries are sent by the servers' workers).
      publishers: [...publishersFromConfig(events, config.redisUrl, logger), createWebhookFanout({ database })],
      source: events.source,
      batchSize: events.relayBatchSize,
      pollIntervalMs: events.relayPollIntervalMs,
      leaseMs: events.relayLeaseMs,
      logger,
    });
    logger.info({ publishers: events.publishers }, 'relay: started');
    // Its backlog and lag metrics, for Prometheus, when RELAY_METRICS_PORT is set.
    const metricsServer = events.relayMetricsPort === undefined ? undefined : await serveMetrics(registry, events.relayMetricsPort, config.host);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    logger.info({ signal }, 'relay: stopping');
    await relay.stop();
    metricsServer?.close();
    return 0;
  });
}

/** GET /metrics (Prometheus text) and GET /health for a process that serves no API. */
async function serveMetrics(registry: Registry, port: number, host: string): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method === 'GET' && request.url === '/metrics') {
      registry.metrics().then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        () => response.writeHead(500).end(),
      );
    } else if (request.method === 'GET' && request.url === '/health') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"ROUTE_NOT_FOUND","message":"Not found"}}');
    }
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}
