// Signing keys met by an unknown `kid`: a flood of tokens with made-up kids may reload the key set at
// most once a second, and cannot hold back a key rotated in on another instance for longer than that.
// Run on a real database of each backend; "another instance" is a second key set on the same database.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KyselyPlugin } from 'kysely';
import { describeOnBackends } from '../../../test/helpers/describe-on-backends.js';
import { openDatabase, type Database } from '../../platform/db/index.js';
import { migrate } from '../../platform/db/migrate.js';
import { createLogger } from '../../platform/logger.js';
import { createAccessTokens, type AccessTokens } from './access-tokens.js';
import { loadSigningKeys, rotateSigningKey, type SigningKeys } from './signing-keys.js';

const logger = createLogger('silent');
const FLOOD_WORKERS = 64;
/** The promise: unknown kids reload the key set at most once a second, and never hold a new key back longer. */
const RELOAD_INTERVAL_MS = 1_000;
/** Room for one reload (a query and a key import) and a busy test machine. */
const MARGIN_MS = 500;

const segment = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A well-formed EdDSA token whose kid no key has; its signature is never reached. */
const unknownKidToken = (): string =>
  `${segment({ alg: 'EdDSA', kid: randomUUID(), typ: 'JWT' })}.${segment({ sub: randomUUID(), iss: 'bastion' })}.${Buffer.alloc(64).toString('base64url')}`;

/** Verifications of unknown-kid tokens, back to back on `workers` loops, until stopped. */
function flood(tokens: AccessTokens, workers = FLOOD_WORKERS) {
  let running = true;
  let sent = 0;
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      sent++;
      await Promise.resolve().then(() => tokens.verify(unknownKidToken())).then(
        () => assert.fail('a token with an unknown kid verified'),
        () => undefined,
      );
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
  return {
    sent: () => sent,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** The database with every query counted: after the first load, each query of a key set is a reload. */
function counted(database: Database): { database: Database; queries: () => number } {
  let queries = 0;
  const counter: KyselyPlugin = {
    transformQuery: (args) => {
      queries++;
      return args.node;
    },
    transformResult: async (args) => args.result,
  };
  return { database: { ...database, db: database.db.withPlugin(counter) }, queries: () => queries };
}

describeOnBackends('signing keys under a flood of unknown kids', ({ it, before, createDatabase, defer }) => {
  let database: Database;

  before(async () => {
    const testDatabase = await createDatabase();
    database = await openDatabase({ databaseUrl: testDatabase.databaseUrl, dataDir: testDatabase.dataDir, poolSize: 4, logger });
    defer(() => database.close());
    await migrate(database);
  });

  const instance = async (on: Database = database): Promise<{ keys: SigningKeys; tokens: AccessTokens }> => {
    const keys = await loadSigningKeys({ database: on, logger, retiredKeyGraceSeconds: 1_200 });
    defer(() => keys.stop());
    return { keys, tokens: createAccessTokens({ keys, ttlSeconds: 900 }) };
  };

  it('when unknown kids flood in for 3 s, then the key set is reloaded at most once a second', { timeout: 30_000 }, async () => {
    const observed = counted(database);
    const { tokens } = await instance(observed.database);
    const afterLoad = observed.queries();
    const started = performance.now();
    const load = flood(tokens);
    await sleep(3_000);
    await load.stop();
    const elapsedMs = performance.now() - started;
    const reloads = observed.queries() - afterLoad;
    const allowed = Math.ceil(elapsedMs / RELOAD_INTERVAL_MS) + 1;
    process.stdout.write(`# ${load.sent()} unknown-kid verifications in ${elapsedMs.toFixed(0)} ms: ${reloads} reloads\n`);
    assert.ok(reloads <= allowed, `${reloads} reloads in ${elapsedMs.toFixed(0)} ms (at most ${allowed})`);
  });

  it('when a key is rotated in during a flood, then a token signed by it verifies within one reload interval', { timeout: 30_000 }, async () => {
    const { tokens: verifier } = await instance();
    const load = flood(verifier);
    try {
      await sleep(200); // the flood is steady, and has just made the verifier reload
      await rotateSigningKey(database); // what `keys rotate` does
      const { keys: rotatedIn, tokens: issuer } = await instance(); // an instance started after the rotation
      const genuine = await issuer.issue({ userId: randomUUID(), tokenVersion: 0, role: 'user', sessionId: randomUUID() });
      assert.equal(JSON.parse(Buffer.from(genuine.split('.')[0] ?? '', 'base64url').toString()).kid, rotatedIn.signingKey().kid);

      const since = performance.now();
      let attempts = 0;
      for (;;) {
        attempts++;
        const verified = await Promise.resolve().then(() => verifier.verify(genuine)).then(
          () => true,
          () => false,
        );
        if (verified) break;
        assert.ok(performance.now() - since < 10_000, 'the rotated-in key was never loaded');
        await sleep(10);
      }
      const delayMs = performance.now() - since;
      process.stdout.write(`# genuine token of the new key verified after ${delayMs.toFixed(0)} ms (${attempts} attempts, ${load.sent()} flood tokens)\n`);
      assert.ok(
        delayMs <= RELOAD_INTERVAL_MS + MARGIN_MS,
        `the flood held the new key back for ${delayMs.toFixed(0)} ms (${attempts} attempts); bound ${RELOAD_INTERVAL_MS} + ${MARGIN_MS} ms`,
      );
    } finally {
      await load.stop();
    }
  });
});
