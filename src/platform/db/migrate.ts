// Numbered SQL migrations (migrations/NNNN_name.sql), applied in order, each in its own transaction,
// under an advisory lock so several instances starting at once apply each file exactly once.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from './index.js';

const MIGRATION_LOCK_KEY = 0x6261_7374; // "bast"
const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;

export const defaultMigrationsDir = (): string => {
  // Works from src/ (tsx) and dist/src/ (compiled): walk up to the folder that holds migrations/.
  const here = path.dirname(fileURLToPath(import.meta.url));
  const fromSource = path.resolve(here, '../../../migrations');
  const fromDist = path.resolve(here, '../../../../migrations');
  return here.includes(`${path.sep}dist${path.sep}`) ? fromDist : fromSource;
};

export interface MigrationResult {
  readonly applied: readonly string[];
}

export async function migrate(database: Database, migrationsDir = defaultMigrationsDir()): Promise<MigrationResult> {
  const files = (await readdir(migrationsDir)).filter((file) => FILE_PATTERN.test(file)).sort();
  return database.withAdvisoryLock(MIGRATION_LOCK_KEY, async (session) => {
    await session.execScript(`
      create table if not exists schema_migrations (
        version integer primary key,
        name text not null,
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
      try {
        await session.execScript(
          `begin;\n${script}\n;insert into schema_migrations (version, name) values (${version}, '${match[2]}');\ncommit;`,
        );
      } catch (error) {
        await session.execScript('rollback').catch(() => undefined);
        throw new Error(`migration ${file} failed: ${error instanceof Error ? error.message : String(error)}`, {
          cause: error,
        });
      }
      applied.push(file);
    }
    return { applied };
  });
}
