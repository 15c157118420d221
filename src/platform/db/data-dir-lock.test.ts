import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DataDirInUseError, LOCK_FILE, lockDataDir } from './data-dir-lock.js';

describe('PGlite data directory lock', () => {
  const directories: string[] = [];
  after(() => Promise.all(directories.map((directory) => rm(directory, { recursive: true, force: true }))));
  const freshDirectory = async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), 'bastion-lock-'));
    directories.push(directory);
    return directory;
  };
  /** A pid no process has any more: a child that has exited. */
  const deadPid = () => {
    const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    return Number(child.stdout);
  };

  it('when a directory is locked, then the lock file names this process, a second lock is refused, and release frees it', async () => {
    const directory = await freshDirectory();
    const release = await lockDataDir(directory);
    assert.equal((await readFile(path.join(directory, LOCK_FILE), 'utf8')).split('\n')[0], String(process.pid));
    await assert.rejects(lockDataDir(directory), (error: unknown) => error instanceof DataDirInUseError && error.ownerPid === process.pid);
    await release();
    assert.deepEqual(await readdir(directory), [], 'no lock file and no leftover candidate file');
    const again = await lockDataDir(directory);
    await again();
  });

  it('when the lock file names another live process, then the lock is refused with its pid', async () => {
    const directory = await freshDirectory();
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => undefined, 60_000)'], { stdio: 'ignore' });
    try {
      assert.ok(holder.pid);
      await writeFile(path.join(directory, LOCK_FILE), `${holder.pid}\n`);
      await assert.rejects(lockDataDir(directory), (error: unknown) => error instanceof DataDirInUseError && error.ownerPid === holder.pid);
      assert.equal((await readFile(path.join(directory, LOCK_FILE), 'utf8')).trim(), String(holder.pid), 'the owner\'s lock is left alone');
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('when the lock file names a process that is gone, or is unreadable, then the lock is taken over at once', async () => {
    for (const content of [`${deadPid()}\n2026-01-01T00:00:00.000Z\n`, '', 'garbage']) {
      const directory = await freshDirectory();
      await writeFile(path.join(directory, LOCK_FILE), content);
      const release = await lockDataDir(directory);
      assert.equal((await readFile(path.join(directory, LOCK_FILE), 'utf8')).split('\n')[0], String(process.pid));
      await release();
    }
  });

  it('when the lock file names this process (a restarted container with the same pid) but this process holds no lock on it, then it is stale', async () => {
    const directory = await freshDirectory();
    await writeFile(path.join(directory, LOCK_FILE), `${process.pid}\n`);
    const release = await lockDataDir(directory);
    await release();
  });
});
