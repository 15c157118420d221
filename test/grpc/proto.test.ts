// The .proto files and the code generated from them: `buf lint` clean, the committed code exactly
// what `buf generate` makes of the committed protos now (a proto changed without regenerating
// fails), and `buf breaking` against main when this checkout has it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BUF = path.join(ROOT, 'node_modules', '.bin', 'buf');
const GENERATED = 'src/transports/grpc/gen';

async function filesUnder(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(directory, path.join(entry.parentPath, entry.name)))
    .sort();
}

describe('proto files', () => {
  it('when buf lints the protos, then there is nothing to report', async () => {
    const { stdout } = await run(BUF, ['lint'], { cwd: ROOT });
    assert.equal(stdout.trim(), '');
  });

  it('when the protos are generated again into a temporary directory, then the result equals the committed code', async () => {
    const output = await mkdtemp(path.join(tmpdir(), 'bastion-proto-'));
    try {
      await run(BUF, ['generate', '--output', output], { cwd: ROOT, env: { ...process.env, PATH: `${path.join(ROOT, 'node_modules', '.bin')}${path.delimiter}${process.env['PATH'] ?? ''}` } });
      const fresh = path.join(output, GENERATED);
      const committed = path.join(ROOT, GENERATED);
      const files = await filesUnder(fresh);
      assert.deepEqual(await filesUnder(committed), files, 'the same files (run npm run proto:generate)');
      for (const file of files) {
        assert.equal(
          await readFile(path.join(committed, file), 'utf8'),
          await readFile(path.join(fresh, file), 'utf8'),
          `${file} is stale: run npm run proto:generate`,
        );
      }
    } finally {
      await rm(output, { recursive: true, force: true });
    }
  });

  it('when the protos are compared with main, then no change breaks a client', async (context) => {
    const main = await run('git', ['rev-parse', '--verify', '--quiet', 'main^{commit}'], { cwd: ROOT }).catch(() => undefined);
    if (!main) return context.skip('no main branch in this checkout');
    const onMain = await run('git', ['ls-tree', '-d', 'main', 'proto'], { cwd: ROOT });
    if (onMain.stdout.trim() === '') return context.skip('main has no protos yet');
    await run(BUF, ['breaking', '--against', '.git#branch=main'], { cwd: ROOT });
  });
});
