// Groups concurrent money requests into one database transaction, as TigerBeetle batches
// transfers: under load, one commit (one WAL flush) and one lock acquisition per hot account serve
// many transfers instead of one each. Idle, a movement runs alone at once: a batch is whatever
// queued while the previous one ran, so batching adds no waiting of its own.
//
// Every money request goes through here: moves, posts, voids and the sweep's expiries, keyed or not.
// Items keep their own outcome and idempotency record. A batch that fails as a whole on an
// unexpected error is re-run item by item, so that one bad item fails alone; contention and lost
// connections are passed to each item's caller, which retries it (see ledger.service.ts).
import type { Database } from '../../platform/db/index.js';
import { isConnectionError, sqlState } from '../../platform/db/index.js';
import * as repo from './ledger.repo.js';

interface Queued {
  readonly input: repo.LedgerRequest;
  readonly resolve: (result: repo.LedgerResult) => void;
  readonly reject: (error: unknown) => void;
}

interface MoveBatcher {
  submit(input: repo.LedgerRequest): Promise<repo.LedgerResult>;
}

const PASS_THROUGH_STATES = new Set(['40001', '40P01', '55P03']);

export function createMoveBatcher(options: {
  database: Database;
  maxBatchSize: number;
  /** Batches in flight at once (each on its own connection). */
  concurrency: number;
  shards: number;
  /** Told the size of every batch as it starts (a metric). */
  onBatch?: (size: number) => void;
}): MoveBatcher {
  const queue: Queued[] = [];
  let active = 0;

  const shard = () => Math.floor(Math.random() * options.shards);

  const runAlone = async (item: Queued) => {
    try {
      const [result] = await repo.applyBatch(options.database.db, [item.input], shard());
      if (result) item.resolve(result);
      else item.reject(new Error('ledger batch: missing result'));
    } catch (error) {
      item.reject(error);
    }
  };

  const runBatch = async (batch: Queued[]) => {
    options.onBatch?.(batch.length);
    if (batch.length === 1 && batch[0]) return runAlone(batch[0]);
    try {
      const results = await repo.applyBatch(
        options.database.db,
        batch.map((item) => item.input),
        shard(),
      );
      batch.forEach((item, index) => {
        const result = results[index];
        if (result) item.resolve(result);
        else item.reject(new Error('ledger batch: missing result'));
      });
    } catch (error) {
      if (PASS_THROUGH_STATES.has(sqlState(error) ?? '') || isConnectionError(error)) {
        for (const item of batch) item.reject(error);
        return;
      }
      // Nothing of the batch committed: find the item at fault by running each on its own.
      await Promise.all(batch.map(runAlone));
    }
  };

  const drain = async () => {
    active++;
    try {
      while (queue.length > 0) await runBatch(queue.splice(0, options.maxBatchSize));
    } finally {
      active--;
    }
  };

  return {
    submit(input) {
      return new Promise<repo.LedgerResult>((resolve, reject) => {
        queue.push({ input, resolve, reject });
        // Let the requests that arrived in this turn of the event loop join the same batch.
        if (active < options.concurrency) setImmediate(() => void drain());
      });
    },
  };
}
