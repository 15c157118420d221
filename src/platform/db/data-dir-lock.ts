// One process at a time owns a PGlite data directory. PGlite is PostgreSQL in one process, without
// the postmaster that refuses a second server on a data directory: two processes opening it (a second
// `npm start`, a `migrate` run against a live service, two containers on one volume) would each write
// pages the other has cached, and the database is corrupted. The lock works as postmaster.pid does:
// a file holding the owner's pid, created atomically; a file whose process is gone is stale and taken
// over at once (no wait after a crash); a file naming this very process is stale too (a container
// restarted on the same volume gets the same low pid again). Not guarded: two processes starting in
// the same instant on a directory whose owner crashed may both see the stale file.
import { randomUUID } from 'node:crypto';
import { link, readFile, realpath, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const LOCK_FILE = 'bastion.pid';

/** The data directory is held by another live process. */
export class DataDirInUseError extends Error {
  readonly code = 'DATA_DIR_IN_USE';
  constructor(
    readonly dataDir: string,
    readonly ownerPid: number,
  ) {
    super(
      `DATA_DIR ${dataDir} is in use by process ${ownerPid}; stop it first (a PGlite data directory has one owner). ` +
        `If no such process uses it, delete ${path.join(dataDir, LOCK_FILE)}`,
    );
    this.name = 'DataDirInUseError';
  }
}

// Directories this process holds: a second open in the same process is refused as well.
const heldHere = new Set<string>();

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists, it is just not ours to signal.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

async function ownerOf(lockPath: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(lockPath, 'utf8')).split('\n')[0] ?? '', 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Takes the directory's lock (it must exist) or throws DataDirInUseError; resolves to its release. */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const directory = await realpath(dataDir);
  if (heldHere.has(directory)) throw new DataDirInUseError(dataDir, process.pid);
  const lockPath = path.join(directory, LOCK_FILE);
  // Written whole under a private name, then linked into place: link() fails if the lock exists, so
  // there is no moment where the lock file exists without its pid.
  const candidate = path.join(directory, `.${LOCK_FILE}.${randomUUID()}`);
  await writeFile(candidate, `${process.pid}\n${new Date().toISOString()}\n`, { flag: 'wx' });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(candidate, lockPath);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw error;
      }
      const owner = await ownerOf(lockPath);
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
        throw new DataDirInUseError(dataDir, owner);
      }
      await unlink(lockPath).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    }
  } finally {
    await unlink(candidate).catch(() => undefined);
  }
  heldHere.add(directory);
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    heldHere.delete(directory);
    // Only our own lock: never a file another process wrote after taking a lock we lost.
    if ((await ownerOf(lockPath)) === process.pid) await unlink(lockPath).catch(() => undefined);
  };
}
