// Starts the real service in-process on a random port, on a fresh database of the given backend,
// capturing every log line so tests can assert on what was (not) logged.
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { createApplication, type Application, type ApplicationOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { Backend, TestDatabase } from './backends.js';
import { createClient, type Client } from './client.js';

export const ADMIN_EMAIL = 'admin@bastion.test';
export const ADMIN_PASSWORD = 'admin-password-1';

export interface TestServer {
  readonly baseUrl: string;
  readonly app: Application;
  readonly client: Client;
  readonly database: TestDatabase;
  /** Every log line the server wrote so far (JSON strings). */
  readonly logs: string[];
  stop(): Promise<void>;
}

export async function startServer(
  backend: Backend,
  env: Record<string, string> = {},
  /** `database`: one the caller owns (not dropped at stop); `application`: test seams (pauses, faults). */
  options: { database?: TestDatabase; application?: Omit<ApplicationOptions, 'logDestination'> } = {},
): Promise<TestServer> {
  const database = options.database ?? (await backend.createDatabase());
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
  const app = await createApplication(config, { ...options.application, logDestination: destination });
  await app.http.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.http.server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  let stopped = false;
  return {
    baseUrl,
    app,
    client: createClient(baseUrl),
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
