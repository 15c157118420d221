// Runs every *.test.ts under src/ and test/ with node's test runner (each file in its own process).
// TEST_CONCURRENCY (default 2) and TEST_REPORTER (default spec: a built-in name or a reporter module's path) tune it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const roots = ['src', 'test'];
const files = [];
const walk = (dir) => {
  for (const entry of readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) walk(full);
    else if (entry.endsWith('.test.ts')) files.push(full);
  }
};
for (const root of roots) walk(root);
const only = process.argv.slice(2);
const selected = only.length > 0 ? files.filter((file) => only.some((part) => file.includes(part))) : files;
if (selected.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// One migrated PGlite data directory for the whole run, copied for each test database (see
// CreateDatabaseOptions in test/helpers/backends.ts): built by the first test process that needs it.
const templateRoot = mkdtempSync(path.join(os.tmpdir(), 'bastion-template-run-'));
let result;
try {
  result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', `--test-reporter=${process.env.TEST_REPORTER ?? 'spec'}`, `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`, ...selected.sort()],
    { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test', BASTION_TEST_PGLITE_TEMPLATE_ROOT: templateRoot } },
  );
} finally {
  rmSync(templateRoot, { recursive: true, force: true });
}
process.exit(result.status ?? 1);
