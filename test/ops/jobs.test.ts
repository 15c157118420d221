// Periodic jobs run once per tick across instances (issue 12, item 5): several schedulers on one
// database, each with its own connections and timer, share each tick instead of each running it.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { openDatabase, type Database } from '../../src/platform/db/index.js';
import { createScheduler, type Scheduler } from '../../src/platform/jobs.js';
import { createLogger } from '../../src/platform/logger.js';
import { migrateSchema } from '../../src/schema.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';

const logger = createLogger('silent');

describeOnBackends('scheduled jobs', ({ backend, it, before, createDatabase, defer }) => {
  let database: Database;
  let openInstance: () => Promise<Database>;

  before(async () => {
    const testDatabase = await createDatabase({ pgliteTemplate: true });
    openInstance = async () => {
      const opened = await openDatabase({ databaseUrl: testDatabase.databaseUrl, dataDir: testDatabase.dataDir, poolSize: 2, logger });
      defer(() => opened.close());
      return opened;
    };
    database = await openInstance();
    await migrateSchema(database);
  });

  it('when three instances schedule one job every 100 ms for 1.5 s, then it runs about 15 times in all, never twice at once', { skip: backend.name === 'pglite' ? 'one process owns a PGlite directory: a single instance, tested below' : undefined }, async () => {
    // Two more instances with their own pools: the claim, not a shared connection, decides.
    const instances = [database, await openInstance(), await openInstance()];
    const schedulers: Scheduler[] = instances.map((instance) => createScheduler({ database: instance, logger }));
    let runs = 0;
    let running = 0;
    let overlapped = false;
    for (const scheduler of schedulers) {
      scheduler.every('test: counted', 100, async () => {
        running++;
        if (running > 1) overlapped = true;
        runs++;
        await sleep(20);
        running--;
        return 0;
      });
    }
    await sleep(1_500);
    await Promise.all(schedulers.map((scheduler) => scheduler.stop()));
    // Once per instance per tick would be ~45. Timers drift against the database clock, so a tick
    // can be skipped now and then, never doubled.
    assert.ok(runs >= 8 && runs <= 16, `ran ${runs} times`);
    assert.equal(overlapped, false);
  });

  it('when a job fails, then the failure is recorded and the next tick runs it again', async () => {
    const scheduler = createScheduler({ database, logger });
    let attempts = 0;
    scheduler.every('test: failing', 50, async () => {
      attempts++;
      throw new Error('boom');
    });
    await sleep(400);
    await scheduler.stop();
    assert.ok(attempts >= 3, `attempted ${attempts} times`);
    const row = await database.db.selectFrom('scheduled_jobs').selectAll().where('name', '=', 'test: failing').executeTakeFirstOrThrow();
    assert.equal(row.last_result, 'failed');
    assert.equal(row.lease_owner, null);
  });

  it('when an instance holds a run past the next tick, then no other instance starts it until the lease ends', async () => {
    const first = createScheduler({ database, logger });
    const second = createScheduler({ database, logger });
    let concurrent = 0;
    let maxConcurrent = 0;
    const job = async () => {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      await sleep(300); // three ticks long
      concurrent--;
      return 0;
    };
    first.every('test: slow', 100, job);
    second.every('test: slow', 100, job);
    await sleep(900);
    await Promise.all([first.stop(), second.stop()]);
    assert.equal(maxConcurrent, 1);
  });
});
