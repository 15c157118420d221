// The command line: each command parses its arguments, calls the same code the service runs
// (cli-commands.ts), and returns an exit code. Configuration errors print one line per bad variable
// and exit 1.
import cluster from 'node:cluster';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { canonicalEmail } from '../platform/email.js';
import { createLogger } from '../platform/logger.js';

/**
 * What the commands run (the application, the database, the components), loaded only once the
 * configuration and the arguments are known to be good: a bad variable or a misused command answers
 * in the time it takes to load the configuration (~20 ms) instead of the whole service (~4 s), and a
 * WORKERS>1 primary, which only supervises, never loads it.
 */
const commands = () => import('./cli-commands.js');

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
      if (config.workers > 1 && cluster.isPrimary) return superviseWorkers(config);
      return (await commands()).serve(config);
    case 'migrate':
      return (await commands()).migrate(config);
    case 'create-admin':
      return createAdmin(config, rest);
    case 'keys':
      if (rest[0] !== 'rotate') break;
      return (await commands()).rotateKeys(config);
    case 'ledger':
      if (rest[0] !== 'check') break;
      return (await commands()).checkLedger(config);
    case 'relay':
      if (config.databaseUrl === undefined) {
        process.stderr.write('relay: needs DATABASE_URL (the embedded database belongs to the server process, which runs its own relay)\n');
        return 2;
      }
      return (await commands()).runRelay(config);
    case 'events':
      if (rest[0] !== 'status') break;
      return (await commands()).eventsStatus(config);
    case 'help':
    case '--help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
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
  return (await commands()).createAdmin(config, { email, name: values.name ?? 'Administrator', password });
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

