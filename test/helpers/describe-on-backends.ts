// One suite per database backend: `describeOnBackends(name, body)` declares `name [pglite]` and
// `name [postgres]`, and hands the body what every such suite needs, so no test file repeats the
// backend loop, the skip probe, the `if (skip) return` in its hooks or the server's stop.
//
//   describeOnBackends('users', ({ it, before, startServer }) => {
//     let server: TestServer;
//     before(async () => {
//       server = await startServer({ ACCESS_TOKEN_TTL: '1' }); // env on top of the test defaults
//     });
//     it('when …, then …', async () => {
//       … server.client …
//     });
//   });
//
// - Skipping: PGlite always runs. PostgreSQL is probed once per process (backends.ts): unreachable on
//   a laptop, every test of its suite is skipped with the reason and one `# SKIP` line says so; in CI
//   (CI=true or BASTION_REQUIRE_SERVICES=1) the probe throws and the suite FAILS instead. `options.skip`
//   adds a reason known beforehand (another service's probe, awaited at module level); `variant` names
//   that extra dimension: `{ variant: 'redis throttle' }` gives `name [pglite, redis throttle]`.
// - `it` is node:test's `it` with the suite's skip reason applied; a test's own `skip` (say, for
//   PGlite only) counts when the suite itself runs. Test names stay exactly as written.
// - `before` is node:test's `before`, not run when the suite is skipped.
// - `startServer` / `startApplication` start the real service (with / without an HTTP listener) on a
//   fresh database of this backend (on PGlite, a copy of one migrated once per run: see
//   CreateDatabaseOptions in backends.ts); `createDatabase` makes an empty one, or such a copy with
//   `{ pgliteTemplate: true }`. All are stopped or dropped
//   when the suite ends, as is whatever is handed to `defer`: last in, first out, so a server stops
//   before the database it runs on is dropped. Stopping early (`await server.stop()`) is fine.
//   Nesting node:test's `describe` inside the body is fine too; use the body's `it` there as well.
//
// Converting an old loop: drop `for (const backend of backends)`, the `skipReason()` line, the
// `if (skip) return`, the `after(… stop())` and every `{ skip }` / `skip,` in the `it` options;
// `{ skip: skip ?? pgliteReason }` becomes `{ skip: pgliteReason }`; `startServer(backend, env,
// options)` becomes `startServer(env, options)`; `backend` is still there for what else needs it.
import { after, before as beforeAll, describe, it as test, type TestContext, type TestOptions } from 'node:test';
import { backends, type Backend, type CreateDatabaseOptions, type TestDatabase } from './backends.js';
import { startApplication, startServer, type StartOptions, type TestApplication, type TestServer } from './server.js';

type TestBody = (context: TestContext) => void | Promise<void>;

export interface SuiteTest {
  (name: string, body: TestBody): void;
  (name: string, options: TestOptions, body: TestBody): void;
}

export interface BackendSuite {
  readonly backend: Backend;
  /** Why every test of this suite is skipped (undefined: they run). */
  readonly skip: string | undefined;
  /** node:test's `it`, skipped with the suite. */
  readonly it: SuiteTest;
  /** node:test's `before`, not run when the suite is skipped. */
  readonly before: (setup: () => void | Promise<void>) => void;
  /** The real service listening on a random port; stopped when the suite ends. */
  startServer(env?: Record<string, string>, options?: StartOptions): Promise<TestServer>;
  /** The real service without an HTTP listener, for calling its services directly; stopped when the suite ends. */
  startApplication(env?: Record<string, string>, options?: StartOptions): Promise<TestApplication>;
  /** An empty database on this backend (see CreateDatabaseOptions); dropped when the suite ends. */
  createDatabase(options?: CreateDatabaseOptions): Promise<TestDatabase>;
  /** Runs `cleanup` when the suite ends (last deferred, first run). */
  defer(cleanup: () => unknown): void;
}

export interface BackendSuiteOptions {
  /** Another dimension of the suite, shown after the backend's name in the suite's name. */
  readonly variant?: string;
  /** A reason to skip on every backend, known before the suite is declared. */
  readonly skip?: string | undefined;
}

export function describeOnBackends(name: string, body: (suite: BackendSuite) => void | Promise<void>): void;
export function describeOnBackends(name: string, options: BackendSuiteOptions, body: (suite: BackendSuite) => void | Promise<void>): void;
export function describeOnBackends(
  name: string,
  optionsOrBody: BackendSuiteOptions | ((suite: BackendSuite) => void | Promise<void>),
  maybeBody?: (suite: BackendSuite) => void | Promise<void>,
): void {
  const options = typeof optionsOrBody === 'function' ? {} : optionsOrBody;
  const body = typeof optionsOrBody === 'function' ? optionsOrBody : maybeBody;
  if (!body) throw new TypeError('describeOnBackends: a suite body is required');
  for (const backend of backends) {
    const suffix = options.variant === undefined ? backend.name : `${backend.name}, ${options.variant}`;
    describe(`${name} [${suffix}]`, async () => {
      // Throws in CI when the backend is unreachable: the suite fails instead of skipping.
      const skip = (await backend.skipReason()) ?? options.skip;
      const cleanups: Array<() => unknown> = [];
      after(async () => {
        let firstError: unknown;
        for (const cleanup of cleanups.splice(0).reverse()) {
          try {
            await cleanup();
          } catch (error) {
            firstError ??= error;
          }
        }
        if (firstError !== undefined) throw firstError;
      });
      const defer = (cleanup: () => unknown) => void cleanups.push(cleanup);
      const it: SuiteTest = (testName: string, optionsOrTest: TestOptions | TestBody, maybeTest?: TestBody) => {
        const testOptions = typeof optionsOrTest === 'function' ? {} : optionsOrTest;
        const testBody = typeof optionsOrTest === 'function' ? optionsOrTest : maybeTest;
        void test(testName, { ...testOptions, skip: skip ?? testOptions.skip }, testBody);
      };
      await body({
        backend,
        skip,
        it,
        before: (setup) => beforeAll(async () => {
          if (!skip) await setup();
        }),
        async startServer(env = {}, startOptions = {}) {
          const server = await startServer(backend, env, startOptions);
          defer(() => server.stop());
          return server;
        },
        async startApplication(env = {}, startOptions = {}) {
          const application = await startApplication(backend, env, startOptions);
          defer(() => application.stop());
          return application;
        },
        async createDatabase(databaseOptions = {}) {
          const database = await backend.createDatabase(databaseOptions);
          defer(() => database.drop());
          return database;
        },
        defer,
      });
    });
  }
}
