// Kysely dialect for PGlite that is safe under concurrency. PGlite is ONE connection: a BEGIN sent
// through its plain query() would be shared by every request in the process. So every acquisition
// of the connection is exclusive (a mutex, as Kysely's SQLite driver does), and transactions go
// through PGlite's own transaction(), which serialises them inside PGlite as well.
import type { PGlite, Transaction as PGliteTransaction } from '@electric-sql/pglite';
import {
  CompiledQuery,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';

export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Resolves with a release function once every earlier holder has released. */
  lock(): Promise<() => void> {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const acquired = this.#tail.then(() => release);
    this.#tail = this.#tail.then(() => released);
    return acquired;
  }
}

class PGliteConnection implements DatabaseConnection {
  #transaction: PGliteTransaction | undefined;
  #finish: { commit: () => void; rollback: (reason: Error) => void } | undefined;
  #closed: Promise<void> | undefined;

  constructor(private readonly pglite: PGlite) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const target = this.#transaction ?? this.pglite;
    const result = await target.query<R>(compiledQuery.sql, [...compiledQuery.parameters], { rowMode: 'object' });
    return {
      rows: result.rows,
      ...(result.affectedRows !== undefined ? { numAffectedRows: BigInt(result.affectedRows) } : {}),
    };
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('Streaming is not supported by PGlite');
  }

  async begin(settings: TransactionSettings): Promise<void> {
    let begun!: () => void;
    const hasBegun = new Promise<void>((resolve) => (begun = resolve));
    const finished = new Promise<void>((commit, rollback) => (this.#finish = { commit, rollback }));
    this.#closed = this.pglite.transaction(async (tx) => {
      this.#transaction = tx;
      begun();
      await finished;
    });
    // If BEGIN itself failed, surface it instead of waiting forever.
    await Promise.race([hasBegun, this.#closed]);
    if (settings.isolationLevel || settings.accessMode) {
      const parts = [
        settings.isolationLevel ? `isolation level ${settings.isolationLevel}` : '',
        settings.accessMode ?? '',
      ].filter(Boolean);
      await this.executeQuery(CompiledQuery.raw(`set transaction ${parts.join(' ')}`));
    }
  }

  async commit(): Promise<void> {
    this.#finish?.commit();
    try {
      await this.#closed;
    } finally {
      this.#reset();
    }
  }

  async rollback(): Promise<void> {
    this.#finish?.rollback(new Error('rollback'));
    await this.#closed?.catch(() => undefined);
    this.#reset();
  }

  #reset(): void {
    this.#transaction = undefined;
    this.#finish = undefined;
    this.#closed = undefined;
  }
}

class PGliteDriver implements Driver {
  readonly #mutex = new Mutex();
  #release: (() => void) | undefined;
  #connection: PGliteConnection | undefined;

  constructor(private readonly pglite: PGlite) {}

  async init(): Promise<void> {
    await this.pglite.waitReady;
    this.#connection = new PGliteConnection(this.pglite);
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    this.#release = await this.#mutex.lock();
    if (!this.#connection) throw new Error('PGlite driver used before init');
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await (connection as PGliteConnection).begin(settings);
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as PGliteConnection).commit();
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as PGliteConnection).rollback();
  }

  async destroy(): Promise<void> {
    const release = await this.#mutex.lock();
    try {
      if (!this.pglite.closed) await this.pglite.close();
    } finally {
      release();
    }
  }

  /** Runs `job` with exclusive use of PGlite, outside Kysely (multi-statement scripts for migrations). */
  async exclusive<T>(job: (pglite: PGlite) => Promise<T>): Promise<T> {
    const release = await this.#mutex.lock();
    try {
      return await job(this.pglite);
    } finally {
      release();
    }
  }
}

export class PGliteDialect implements Dialect {
  readonly driver: PGliteDriver;

  constructor(pglite: PGlite) {
    this.driver = new PGliteDriver(pglite);
  }

  createAdapter() {
    return new PostgresAdapter();
  }
  createDriver(): Driver {
    return this.driver;
  }
  createIntrospector(db: Parameters<Dialect['createIntrospector']>[0]) {
    return new PostgresIntrospector(db);
  }
  createQueryCompiler() {
    return new PostgresQueryCompiler();
  }
}
