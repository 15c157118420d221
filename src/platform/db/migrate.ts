// The schema: numbered SQL migrations (migrations/NNNN_name.sql) for tables, applied in order, each
// in its own transaction; then the components' routine files (their SQL functions, written
// CREATE OR REPLACE), each applied again whenever its text changed. All under one advisory lock, so
// several instances starting at once apply each file exactly once.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database, ExclusiveSession } from './index.js';

const MIGRATION_LOCK_KEY = 0x6261_7374; // "bast"
const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;

const defaultMigrationsDir = (): string => {
  // Works from src/ (tsx) and dist/src/ (compiled): walk up to the folder that holds migrations/.
  const here = path.dirname(fileURLToPath(import.meta.url));
  const fromSource = path.resolve(here, '../../../migrations');
  const fromDist = path.resolve(here, '../../../../migrations');
  return here.includes(`${path.sep}dist${path.sep}`) ? fromDist : fromSource;
};

/** A component's SQL functions: a file of idempotent statements, applied after the migrations. */
export interface RoutineFile {
  readonly name: string;
  readonly path: string;
}

interface MigrateOptions {
  readonly migrationsDir?: string;
  readonly routines?: readonly RoutineFile[];
}

export interface MigrationResult {
  /** Migration files and routine files (by name) applied by this call. */
  readonly applied: readonly string[];
}

/** Runs a script in its own transaction; a failure rolls it back and names the file. */
async function applyScript(session: ExclusiveSession, label: string, script: string): Promise<void> {
  try {
    await session.execScript(`begin;\n${script}\ncommit;`);
  } catch (error) {
    await session.execScript('rollback').catch(() => undefined);
    throw new Error(`${label} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

const quote = (text: string): string => `'${text.replaceAll("'", "''")}'`;

export async function migrate(database: Database, options: MigrateOptions = {}): Promise<MigrationResult> {
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const files = (await readdir(migrationsDir)).filter((file) => FILE_PATTERN.test(file)).sort();
  return database.withAdvisoryLock(MIGRATION_LOCK_KEY, async (session) => {
    await session.execScript(`
      create table if not exists schema_migrations (
        version integer primary key,
        name text not null,
        applied_at timestamptz not null default now()
      );
      create table if not exists schema_routines (
        name text primary key,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`);
    const done = new Set(
      (await session.query<{ version: number }>('select version from schema_migrations')).map((row) => row.version),
    );
    const applied: string[] = [];
    for (const file of files) {
      const match = FILE_PATTERN.exec(file);
      if (!match) continue;
      const version = Number(match[1]);
      if (done.has(version)) continue;
      const script = await readFile(path.join(migrationsDir, file), 'utf8');
      await applyScript(
        session,
        `migration ${file}`,
        `${script}\n;insert into schema_migrations (version, name) values (${version}, ${quote(match[2] ?? '')});`,
      );
      applied.push(file);
    }

    const checksums = new Map(
      (await session.query<{ name: string; checksum: string }>('select name, checksum from schema_routines')).map((row) => [
        row.name,
        row.checksum,
      ]),
    );
    for (const routine of options.routines ?? []) {
      const script = await readFile(routine.path, 'utf8');
      const checksum = createHash('sha256').update(script).digest('hex');
      if (checksums.get(routine.name) === checksum) continue;
      await applyScript(
        session,
        `routines ${routine.name} (${routine.path})`,
        `${script}\n;insert into schema_routines (name, checksum) values (${quote(routine.name)}, ${quote(checksum)})
          on conflict (name) do update set checksum = excluded.checksum, applied_at = now();`,
      );
      applied.push(`${routine.name} routines`);
    }
    return { applied };
  });
}
