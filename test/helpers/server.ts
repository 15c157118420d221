// Starts the real service in-process on a fresh database of the given backend, capturing every log
// line so tests can assert on what was (not) logged: `startApplication` builds it without HTTP (for
// tests that call the services directly), `startServer` also listens on a random port.
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { createApplication, type Application, type ApplicationOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { Backend, TestDatabase } from './backends.js';
import { createClient, type Client } from './client.js';

export const ADMIN_EMAIL = 'admin@bastion.test';
export const ADMIN_PASSWORD = 'admin-password-1';

export interface TestApplication {
  readonly app: Application;
  readonly database: TestDatabase;
  /** Every log line the service wrote so far (JSON strings). */
  readonly logs: string[];
  /** Closes the application, then drops its database unless the caller owns it. Idempotent. */
  stop(): Promise<void>;
}

export interface TestServer extends TestApplication {
  readonly baseUrl: string;
  readonly client: Client;
}

export interface StartOptions {
  /** A database the caller owns (not dropped at stop). */
  readonly database?: TestDatabase;
  /** Test seams (pauses, faults). */
  readonly application?: Omit<ApplicationOptions, 'logDestination'>;
}

export async function startApplication(backend: Backend, env: Record<string, string> = {}, options: StartOptions = {}): Promise<TestApplication> {
  // The service migrates on start as ever; on PGlite it finds the schema already there (see pgliteTemplate).
  const database = options.database ?? (await backend.createDatabase({ pgliteTemplate: true }));
  const logs: string[] = [];
  let pending = '';
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      logs.push(...lines.filter(Boolean));
      callback();
    },
  });
  let app: Application;
  try {
    const config = loadConfig({
      PORT: '0',
      HOST: '127.0.0.1',
      DATA_DIR: database.dataDir,
      ...(database.databaseUrl ? { DATABASE_URL: database.databaseUrl } : {}),
      BOOTSTRAP_ADMIN_EMAIL: ADMIN_EMAIL,
      BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      RATE_LIMIT_MAX: '1000000',
      LOG_LEVEL: 'info',
      DATABASE_POOL_SIZE: '5',
      ...env,
    });
    app = await createApplication(config, { ...options.application, logDestination: destination });
  } catch (error) {
    if (!options.database) await database.drop();
    throw error;
  }
  let stopped = false;
  return {
    app,
    database,
    logs,
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.close();
      if (!options.database) await database.drop();
    },
  };
}

export async function startServer(backend: Backend, env: Record<string, string> = {}, options: StartOptions = {}): Promise<TestServer> {
  const started = await startApplication(backend, env, options);
  try {
    await started.app.http.listen({ port: 0, host: '127.0.0.1' });
  } catch (error) {
    await started.stop();
    throw error;
  }
  const { port } = started.app.http.server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  return { ...started, baseUrl, client: createClient(baseUrl) };
}
