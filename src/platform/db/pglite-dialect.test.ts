import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { createLogger } from '../logger.js';
import { openDatabase, type Database } from './index.js';

// FACTS.md: on PGlite a BEGIN sent through plain query() is shared by every request in the
// process, so another request's update can be undone by this one's ROLLBACK. These tests pin that
// our dialect serialises transactions and keeps other queries out of them.
describe('PGlite dialect under concurrency', () => {
  let database: Database;
  before(async () => {
    database = await openDatabase({ databaseUrl: undefined, dataDir: 'memory://', poolSize: 1, logger: createLogger('silent') });
    await sql`create table counters (id int primary key, value int not null)`.execute(database.db);
    await sql`insert into counters values (1, 0)`.execute(database.db);
  });
  after(async () => database.close());

  const value = async () =>
    (await sql<{ value: number }>`select value from counters where id = 1`.execute(database.db)).rows[0]?.value;

  it('when a transaction rolls back while plain queries and other transactions run, then only its own work is undone', async () => {
    const before = (await value()) ?? 0;
    const failing = database
      .transaction(async (tx) => {
        await sql`update counters set value = value + 1000 where id = 1`.execute(tx);
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new Error('roll me back');
      })
      .catch(() => 'rolled back');
    const plain = Array.from({ length: 10 }, () => sql`update counters set value = value + 1 where id = 1`.execute(database.db));
    const committed = Array.from({ length: 10 }, () =>
      database.transaction(async (tx) => {
        await sql`update counters set value = value + 10 where id = 1`.execute(tx);
      }),
    );
    assert.equal(await failing, 'rolled back');
    await Promise.all([...plain, ...committed]);
    assert.equal(await value(), before + 10 + 100);
  });

  it('when two transactions read-modify-write the same row, then no update is lost', async () => {
    const before = (await value()) ?? 0;
    await Promise.all(
      Array.from({ length: 20 }, () =>
        database.transaction(async (tx) => {
          const current = (await sql<{ value: number }>`select value from counters where id = 1`.execute(tx)).rows[0]?.value ?? 0;
          await new Promise((resolve) => setImmediate(resolve));
          await sql`update counters set value = ${current + 1} where id = 1`.execute(tx);
        }),
      ),
    );
    assert.equal(await value(), before + 20);
  });
});
