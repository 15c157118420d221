// Signing keys met by an unknown `kid`: a flood of tokens with made-up kids may reload the key set at
// most once a second, and cannot hold back a key rotated in on another instance for longer than that.
// Keys of each ACCESS_TOKEN_ALG: what the JWKS publishes of them (never a private member), a start
// with another algorithm (one new key however many instances start, the old keys verifying on), and a
// token verifying only under its key's own algorithm.
// Run on a real database of each backend; "another instance" is a second key set on the same database.
import assert from 'node:assert/strict';
import { createHmac, createPublicKey, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import type { KyselyPlugin } from 'kysely';
import { describeOnBackends } from '../../../test/helpers/describe-on-backends.js';
import { openDatabase, type Database } from '../../platform/db/index.js';
import { migrate } from '../../platform/db/migrate.js';
import { createLogger } from '../../platform/logger.js';
import { createAccessTokens, type AccessTokens } from './access-tokens.js';
import { loadSigningKeys, rotateSigningKey, SIGNING_ALGORITHMS, type SigningAlgorithm, type SigningKeys } from './signing-keys.js';

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
    const testDatabase = await createDatabase({ pgliteTemplate: true });
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
      await rotateSigningKey(database); // what `keys rotate` does (EdDSA, the default)
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

/** Exactly the members each key type publishes: its public ones, and kid, alg, use. */
const PUBLISHED_MEMBERS: Record<SigningAlgorithm, readonly string[]> = {
  EdDSA: ['alg', 'crv', 'kid', 'kty', 'use', 'x'],
  ES256: ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'],
  RS256: ['alg', 'e', 'kid', 'kty', 'n', 'use'],
};
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'sealed'];
const GRACE_SECONDS = 1_200;
const subject = () => ({ userId: randomUUID(), tokenVersion: 0, role: 'user', sessionId: randomUUID() });
const verifies = async (tokens: AccessTokens, token: string): Promise<boolean> =>
  Promise.resolve()
    .then(() => tokens.verify(token))
    .then(
      () => true,
      () => false,
    );

describeOnBackends('signing keys of each ACCESS_TOKEN_ALG', ({ it, createDatabase, defer }) => {
  const freshDatabase = async (): Promise<Database> => {
    const testDatabase = await createDatabase({ pgliteTemplate: true });
    const database = await openDatabase({ databaseUrl: testDatabase.databaseUrl, dataDir: testDatabase.dataDir, poolSize: 8, logger });
    defer(() => database.close());
    await migrate(database);
    return database;
  };
  const instance = async (database: Database, algorithm: SigningAlgorithm) => {
    const keys = await loadSigningKeys({ database, logger, algorithm, retiredKeyGraceSeconds: GRACE_SECONDS });
    defer(() => keys.stop());
    return { keys, tokens: createAccessTokens({ keys, ttlSeconds: 900 }) };
  };
  const storedKeys = (database: Database) =>
    database.db.selectFrom('signing_keys').select(['kid', 'algorithm', 'retired_at']).orderBy('created_at').execute();

  for (const algorithm of SIGNING_ALGORITHMS) {
    it(`when the service starts with ${algorithm}, then it signs ${algorithm} tokens and the JWKS holds only the public members of its key`, { timeout: 60_000 }, async () => {
      const database = await freshDatabase();
      const { keys, tokens } = await instance(database, algorithm);
      const token = await tokens.issue(subject());
      const header = decodeProtectedHeader(token);
      assert.equal(header.alg, algorithm);
      assert.equal(header.kid, keys.signingKey().kid);
      assert.equal(await verifies(tokens, token), true);

      const { keys: published } = keys.jwks();
      assert.equal(published.length, 1);
      const [jwk] = published;
      assert.ok(jwk);
      // Through JSON, as the route sends it: no member left undefined, none private.
      const sent = JSON.parse(JSON.stringify(jwk)) as Record<string, unknown>;
      assert.deepEqual(Object.keys(sent).sort(), PUBLISHED_MEMBERS[algorithm]);
      for (const member of PRIVATE_MEMBERS) assert.equal(sent[member], undefined, `${algorithm} JWKS member ${member}`);
      assert.equal(sent['alg'], algorithm);
      assert.equal(sent['use'], 'sig');
      assert.equal(sent['kid'], header.kid);
      // The published key alone verifies the token (what any other stack does with the JWKS).
      const publicKey = await importJWK(sent as JWK, algorithm);
      assert.equal((await jwtVerify(token, publicKey, { algorithms: [algorithm] })).protectedHeader.alg, algorithm);
      assert.deepEqual(await storedKeys(database).then((rows) => rows.map((row) => row.algorithm)), [algorithm]);
    });
  }

  it('when an instance restarts with another algorithm, then one key of it signs, the old key verifies on, and an instance still on the old algorithm keeps signing with its key', { timeout: 60_000 }, async () => {
    const database = await freshDatabase();
    const old = await instance(database, 'EdDSA');
    const oldKid = old.keys.signingKey().kid;
    const before = await old.tokens.issue(subject());

    const switched = await instance(database, 'RS256');
    const after = await switched.tokens.issue(subject());
    assert.equal(decodeProtectedHeader(after).alg, 'RS256');
    assert.notEqual(switched.keys.signingKey().kid, oldKid);
    const rows = await storedKeys(database);
    assert.deepEqual(
      rows.map((row) => [row.algorithm, row.retired_at === null]),
      [
        ['EdDSA', false],
        ['RS256', true],
      ],
      'the EdDSA key is retired, the RS256 key is not',
    );
    assert.equal(await verifies(switched.tokens, before), true, 'a token signed before the switch verifies after it');
    assert.deepEqual(switched.keys.jwks().keys.map((key) => [key.kid, key.alg]).sort(), [
      [oldKid, 'EdDSA'],
      [switched.keys.signingKey().kid, 'RS256'],
    ].sort());

    // The instance still configured with EdDSA finds no unretired EdDSA key: it must not make one
    // (that would retire the RS256 key in turn), and keeps signing with the key it has.
    await old.keys.reload();
    assert.equal(old.keys.signingKey().kid, oldKid);
    const stillOld = await old.tokens.issue(subject());
    assert.equal(decodeProtectedHeader(stillOld).alg, 'EdDSA');
    assert.equal(await verifies(switched.tokens, stillOld), true);
    assert.equal(await verifies(old.tokens, after), true, 'the old instance verifies the new algorithm\'s tokens');
    assert.equal((await storedKeys(database)).length, 2, 'no key was added by the reload');
  });

  it('when four instances start with a new algorithm at once, then exactly one key of it is made and all of them sign with it', { timeout: 60_000 }, async () => {
    const database = await freshDatabase();
    await instance(database, 'EdDSA');
    const started = await Promise.all(Array.from({ length: 4 }, () => instance(database, 'ES256')));
    const rows = await storedKeys(database);
    const unretired = rows.filter((row) => row.retired_at === null);
    assert.equal(rows.length, 2, `keys: ${JSON.stringify(rows)}`);
    assert.deepEqual(unretired.map((row) => row.algorithm), ['ES256']);
    for (const { keys } of started) assert.equal(keys.signingKey().kid, unretired[0]?.kid);
  });

  it('when keys rotate with the configured algorithm, then a new key of that algorithm signs after a reload', { timeout: 60_000 }, async () => {
    const database = await freshDatabase();
    const { keys, tokens } = await instance(database, 'ES256');
    const first = keys.signingKey().kid;
    const before = await tokens.issue(subject());
    const rotated = await rotateSigningKey(database, { algorithm: 'ES256' });
    await keys.reload();
    assert.equal(keys.signingKey().kid, rotated);
    assert.notEqual(rotated, first);
    const after = await tokens.issue(subject());
    assert.deepEqual([decodeProtectedHeader(after).alg, decodeProtectedHeader(after).kid], ['ES256', rotated]);
    assert.equal(await verifies(tokens, before), true);
  });

  it('when a header names another algorithm than its kid\'s key (none, HS256 keyed with the public key, ES256 over an RSA kid), then it does not verify', { timeout: 60_000 }, async () => {
    const database = await freshDatabase();
    const ec = await instance(database, 'ES256');
    const ecKid = ec.keys.signingKey().kid;
    const rsa = await instance(database, 'RS256'); // retires the ES256 key, which still verifies
    const rsaKid = rsa.keys.signingKey().kid;
    const { tokens } = rsa;
    await rsa.keys.reload();
    const claims = { sub: randomUUID(), ver: 0, sid: randomUUID(), iss: 'bastion', exp: Math.floor(Date.now() / 1000) + 300 };
    assert.equal(await verifies(tokens, await tokens.issue(subject())), true, 'control: a real RS256 token');
    assert.equal(await verifies(tokens, await ec.tokens.issue(subject())), true, 'control: a real ES256 token of the retired key');

    const segment = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const none = `${segment({ alg: 'none', kid: rsaKid, typ: 'JWT' })}.${segment(claims)}.`;
    assert.equal(await verifies(tokens, none), false, 'alg none');

    const rsaJwk = rsa.keys.jwks().keys.find((key) => key.kid === rsaKid);
    assert.ok(rsaJwk);
    const pem = createPublicKey({ key: rsaJwk as JWK & { kty: string }, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    for (const secret of [pem, JSON.stringify(rsaJwk), rsaJwk.n ?? '']) {
      const input = `${segment({ alg: 'HS256', kid: rsaKid, typ: 'JWT' })}.${segment(claims)}`;
      const hs = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      assert.equal(await verifies(tokens, hs), false, 'HS256 keyed with the public key');
    }

    // A genuine ES256 signature (by the ES256 key) under the RSA key's kid, and the reverse.
    const ecPrivate = ec.keys.signingKey().privateKey;
    const esOverRsa = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: rsaKid, typ: 'JWT' }).sign(ecPrivate);
    assert.equal(await verifies(tokens, esOverRsa), false, 'ES256 header over an RS256 kid');
    const rsOverEc = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: ecKid, typ: 'JWT' }).sign(rsa.keys.signingKey().privateKey);
    assert.equal(await verifies(tokens, rsOverEc), false, 'RS256 header over an ES256 kid');
    const esOverEc = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: ecKid, typ: 'JWT' }).sign(ecPrivate);
    assert.equal(await verifies(tokens, esOverEc), true, 'control: the same claims under the right kid verify');
  });
});
