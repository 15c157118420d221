// The README's start command, run three times at once from this one checkout. `npm start` runs the
// build made at install (`npm ci` runs `prepare`) and never compiles: when it compiled on every
// start, instances started together raced on half-written files in dist/ (one in about four runs
// died with a SyntaxError) and each start took ~14 s.
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pgliteBackend, type TestDatabase } from '../helpers/backends.js';
import { REPO_ROOT, request, serviceEnv, startServiceProcess, type ServiceProcess } from './service-process.js';

const INSTANCES = 3;
/** The embedded default must fit a 512 MB host: idle after a first start it held ~830 MB before. */
const IDLE_RSS_LIMIT_MB = 400;

/** Resident memory of a process in MB (Linux), or undefined where /proc is not there. */
function residentMb(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
const DIST_MAIN = path.join(REPO_ROOT, 'dist/src/main.js');

/** The `start` script of package.json as an argv, with `node` being this Node. */
function startCommand(): string[] {
  const manifest = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const script = manifest.scripts['start'];
  assert.ok(script, 'package.json has a start script');
  const [program, ...args] = script.split(/\s+/);
  assert.equal(program, 'node', `the start script runs node directly, not another npm script: "${script}"`);
  return [process.execPath, ...args];
}

describe('npm start', () => {
  const databases: TestDatabase[] = [];
  const services: ServiceProcess[] = [];
  after(async () => {
    await Promise.all(services.map((service) => service.kill()));
    await Promise.all(databases.map((database) => database.drop()));
  });

  it('when three instances start at once from one checkout, then all three serve and dist/ is not rebuilt', async () => {
    const command = startCommand();
    assert.ok(!command.join(' ').includes('tsc') && !command.join(' ').includes('build'), 'the start command does not build');
    let builtAtMs: number;
    try {
      builtAtMs = statSync(DIST_MAIN).mtimeMs;
    } catch {
      assert.fail('dist/src/main.js is missing: run `npm run build` (npm ci runs it through `prepare`)');
    }

    for (let index = 0; index < INSTANCES; index++) databases.push(await pgliteBackend.createDatabase());
    const startedAt = performance.now();
    const started = await Promise.allSettled(
      databases.map((database) => startServiceProcess(serviceEnv(database, { LOG_LEVEL: 'warn' }), { command, startTimeoutMs: 90_000 })),
    );
    const seconds = ((performance.now() - startedAt) / 1000).toFixed(1);
    for (const outcome of started) if (outcome.status === 'fulfilled') services.push(outcome.value);
    const failures = started.flatMap((outcome) => (outcome.status === 'rejected' ? [String(outcome.reason)] : []));
    assert.deepEqual(failures, [], 'every instance started');
    process.stdout.write(`# ${INSTANCES} instances started at once, all serving after ${seconds} s\n`);

    for (const service of services) {
      const health = await request(service.port, 'GET', '/health');
      assert.equal(health.status, 200);
      assert.doesNotMatch(service.stderr(), /SyntaxError|Cannot find module/);
    }
    assert.equal(statSync(DIST_MAIN).mtimeMs, builtAtMs, 'starting did not rewrite dist/');
  });

  it(`when the service has started on a new data directory, then it holds less than ${IDLE_RSS_LIMIT_MB} MB resident`, async (t) => {
    assert.equal(services.length, INSTANCES, 'the instances of the test before are running');
    const sizes = services.map((service) => residentMb(service.child.pid));
    if (sizes.some((size) => size === undefined)) return t.skip('no /proc here to read resident memory from');
    process.stdout.write(`# idle resident memory after a first start: ${sizes.map((size) => size?.toFixed(0)).join(', ')} MB\n`);
    for (const size of sizes) assert.ok((size ?? 0) < IDLE_RSS_LIMIT_MB, `${size?.toFixed(0)} MB resident`);
  });
});
