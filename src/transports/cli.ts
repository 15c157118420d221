// The command line: each command parses its arguments, calls the same code the service runs, and
// returns an exit code. Configuration errors print one line per bad variable and exit 1.
import cluster from 'node:cluster';
import { createInterface } from 'node:readline';
import { createServer, type Server } from 'node:http';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { createApplication, type Application } from '../app.js';
import { keySealerFor, rotateSigningKey } from '../components/auth/index.js';
import { cursorStatus, startRelay } from '../components/events/index.js';
import { publishersFromConfig } from '../components/events/publishers/from-config.js';
import { checkLedger } from '../components/ledger/index.js';
import { createWebhookFanout } from '../components/webhooks/index.js';
import { createPasswordHasher, createUsersService, type UserState } from '../components/users/index.js';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { createLocalCache } from '../platform/cache.js';
import { openDatabase, type Database } from '../platform/db/index.js';
import { canonicalEmail } from '../platform/email.js';
import { migrateSchema } from '../schema.js';
import { DomainError } from '../platform/errors.js';
import { createLogger } from '../platform/logger.js';

const USAGE = `usage: bastion <command>
  serve                      start the HTTP service (default)
  migrate                    apply pending database migrations and exit
  create-admin --email E [--name N]
                             create an admin; the password is read from stdin or ADMIN_PASSWORD
  keys rotate                add a new access-token signing key (ACCESS_TOKEN_ALG) and retire the old ones
  ledger check               verify the ledger's invariants on the live database (exit 1 on a violation)
  relay                      publish the outbox's events to EVENTS_PUBLISHERS and webhooks (no HTTP), until SIGTERM
  events status              each publisher's position, backlog and lag, as JSON`;

export async function runCli(argv: readonly string[]): Promise<number> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const problem of error.problems) process.stderr.write(`${problem}\n`);
      return 1;
    }
    throw error;
  }
  const [command = 'serve', ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(config);
    case 'migrate':
      return withDatabase(config, async (database) => {
        const { applied } = await migrateSchema(database);
        process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
        return 0;
      });
    case 'create-admin':
      return createAdmin(config, rest);
    case 'keys':
      if (rest[0] !== 'rotate') break;
      return withDatabase(config, async (database) => {
        await migrateSchema(database);
        const kid = await rotateSigningKey(database, { algorithm: config.accessTokenAlg, sealer: keySealerFor(config.keyEncryptionSecret) });
        process.stdout.write(`new signing key ${kid}; older keys verify until their tokens expire\n`);
        return 0;
      });
    case 'ledger':
      if (rest[0] !== 'check') break;
      return withDatabase(config, async (database) => {
        const report = await checkLedger(database.db);
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return report.ok ? 0 : 1;
      });
    case 'relay':
      return runRelay(config);
    case 'events':
      if (rest[0] !== 'status') break;
      return withDatabase(config, async (database) => {
        await migrateSchema(database);
        process.stdout.write(`${JSON.stringify(await eventsStatus(database), null, 2)}\n`);
        return 0;
      });
    case 'help':
    case '--help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

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

async function readPassword(): Promise<string> {
  const fromEnv = process.env['ADMIN_PASSWORD'];
  if (fromEnv) return fromEnv;
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) return line;
  return '';
}

async function createAdmin(config: Config, args: readonly string[]): Promise<number> {
  const { values } = parseArgs({ args: [...args], options: { email: { type: 'string' }, name: { type: 'string' } } });
  const email = values.email !== undefined ? canonicalEmail(values.email) : undefined;
  if (!email) {
    process.stderr.write('create-admin: --email is required\n');
    return 2;
  }
  const password = await readPassword();
  if (password.length < 8 || password.length > 128) {
    process.stderr.write('create-admin: the password must be 8-128 characters (stdin or ADMIN_PASSWORD)\n');
    return 2;
  }
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
        { email, name: values.name ?? 'Administrator', password, role: 'admin' },
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

/**
 * WORKERS > 1: this process only supervises; N workers (node:cluster) share the port, each a full
 * instance on the same PostgreSQL (and Redis). A worker that dies is replaced; SIGTERM/SIGINT is
 * passed on, and the primary exits once every worker has drained.
 */
async function superviseWorkers(config: Config): Promise<number> {
  const logger = createLogger(config.logLevel);
  let stopping = false;
  const fork = () => cluster.fork();
  for (let index = 0; index < config.workers; index++) fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    logger.error({ pid: worker.process.pid, code, signal }, 'cluster: worker died, starting another');
    setTimeout(fork, 500);
  });
  logger.info({ workers: config.workers }, 'cluster: workers started');
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      const workers = Object.values(cluster.workers ?? {}).filter((worker) => worker !== undefined);
      let failed = false;
      let remaining = workers.length;
      if (remaining === 0) resolve(0);
      for (const worker of workers) {
        worker.once('exit', (code, exitSignal) => {
          // A worker still starting dies of the forwarded signal itself: that is a clean stop too.
          failed ||= code !== 0 && exitSignal !== signal;
          if (--remaining === 0) resolve(failed ? 1 : 0);
        });
        worker.process.kill(signal);
      }
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

async function serve(config: Config): Promise<number> {
  if (config.workers > 1 && cluster.isPrimary) return superviseWorkers(config);
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
async function eventsStatus(database: Database) {
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
async function runRelay(config: Config): Promise<number> {
  if (config.databaseUrl === undefined) {
    process.stderr.write('relay: needs DATABASE_URL (the embedded database belongs to the server process, which runs its own relay)\n');
    return 2;
  }
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
