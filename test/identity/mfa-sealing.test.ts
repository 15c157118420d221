// TOTP secrets at rest across a change of KEY_ENCRYPTION_SECRET: secrets stored in the clear (before
// the secret was set) are sealed in place at the next start with it, each exactly once even when
// instances start together, without undoing what requests wrote meanwhile (a step used by a login, a
// new enrolment); and a wrong or missing secret stops the start before anything is written. The MFA
// clock is a test seam shared by every instance here, so codes of newer time steps need no waiting.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { generate } from 'otplib';
import { createKeySealer, openBytes, SealedKeyError } from '../../src/components/auth/index.js';
import { createMfa, type MfaPauses } from '../../src/components/mfa/index.js';
import type { Database } from '../../src/platform/db/index.js';
import { registerAndLogin, type Session } from '../helpers/auth.js';
import type { TestDatabase } from '../helpers/backends.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';

const ENROL = '/api/v1/auth/mfa/totp';
const CONFIRM = '/api/v1/auth/mfa/totp/confirm';
const VERIFY = '/api/v1/auth/mfa/verify';
const LOGIN = '/api/v1/auth/login';
const ME = '/api/v1/users/me';

const SECRET = 'mfa-sealing-key-encryption-secret-0123456789';
const OTHER_SECRET = 'another-key-encryption-secret-long-enough-0123';
const SEALED_LOG = 'mfa: sealed TOTP secrets stored in the clear';

let offsetMs = 0;
const clock = (): number => Date.now() + offsetMs;
const codeNow = (secret: string): Promise<string> => generate({ secret, epoch: Math.floor(clock() / 1000) });
/** A code of a time step newer than any accepted so far: the clock moves on one step first. */
const freshCode = (secret: string): Promise<string> => {
  offsetMs += 30_000;
  return codeNow(secret);
};

interface User {
  session: Session & { password: string };
  /** The base32 secret the authenticator app holds. */
  secret: string;
}

interface StoredRow {
  secret: Buffer;
  last_step: number | null;
  confirmed: boolean;
}

async function storedRow(db: Database['db'], userId: string): Promise<StoredRow> {
  const result = await sql<{ secret: Uint8Array; last_step: number | null; confirmed: boolean }>`
    select secret, last_step, confirmed_at is not null as confirmed from mfa_totp where user_id = ${userId}::uuid`.execute(db);
  const row = result.rows[0];
  assert.ok(row, `user ${userId} has an enrolment`);
  return { secret: Buffer.from(row.secret), last_step: row.last_step, confirmed: row.confirmed };
}

/** The stored secret is sealed once: sealed, and opening it once (with SECRET) gives the base32 text. */
async function assertSealedOnce(stored: Buffer, secret: string): Promise<void> {
  assert.ok(stored.toString('latin1').startsWith('bastion-sealed:'), 'stored sealed');
  assert.ok(!stored.toString('latin1').includes(secret), 'the clear secret is not in the stored value');
  assert.equal((await openBytes(createKeySealer(SECRET), stored)).toString('utf8'), secret);
}

/** How many secrets each "sealed" log line of an instance reports. */
const sealedCounts = (logs: readonly string[]): number[] =>
  logs
    .map((line) => JSON.parse(line) as { msg?: string; secrets?: number })
    .filter((entry) => entry.msg === SEALED_LOG)
    .map((entry) => entry.secrets ?? Number.NaN);

const enrol = async (server: TestServer, token: string): Promise<string> => {
  const response = await server.client.post<{ data: { secret: string } }>(ENROL, undefined, { token });
  assert.equal(response.status, 201, response.text);
  return response.body.data.secret;
};

const confirm = async (server: TestServer, user: User): Promise<void> => {
  const response = await server.client.post(CONFIRM, { code: await codeNow(user.secret) }, { token: user.session.accessToken });
  assert.equal(response.status, 200, response.text);
};

const pendingUser = async (server: TestServer): Promise<User> => {
  const session = await registerAndLogin(server.client);
  return { session, secret: await enrol(server, session.accessToken) };
};

const enrolledUser = async (server: TestServer): Promise<User> => {
  const user = await pendingUser(server);
  await confirm(server, user);
  return user;
};

const challenge = async (server: TestServer, user: User): Promise<string> => {
  const response = await server.client.post<{ data: { mfaToken: string } }>(LOGIN, { email: user.session.user.email, password: user.session.password });
  assert.equal(response.status, 200, response.text);
  assert.equal(typeof response.body.data.mfaToken, 'string', response.text);
  return response.body.data.mfaToken;
};

/** The whole MFA login with `code` (a fresh one unless given), and a call with the access token it gives. */
async function mfaLogin(server: TestServer, user: User, code?: string): Promise<void> {
  const mfaToken = await challenge(server, user);
  const response = await server.client.post<{ data: { accessToken: string; user: { id: string } } }>(VERIFY, {
    mfaToken,
    code: code ?? (await freshCode(user.secret)),
  });
  assert.equal(response.status, 200, response.text);
  assert.equal(response.body.data.user.id, user.session.user.id);
  const me = await server.client.get<{ data: { id: string } }>(ME, { token: response.body.data.accessToken });
  assert.equal(me.status, 200, me.text);
}

describeOnBackends('TOTP secrets at rest across KEY_ENCRYPTION_SECRET', ({ it, backend, startServer, createDatabase }) => {
  const postgresOnly = backend.name === 'pglite' ? 'one process owns a PGlite directory: instances cannot run side by side' : undefined;
  const start = (database: TestDatabase, env: Record<string, string>, pauses?: MfaPauses): Promise<TestServer> =>
    startServer(env, { database, application: { mfa: { now: clock, ...(pauses ? { pauses } : {}) } } });

  it('when secrets were stored in the clear, then a start with KEY_ENCRYPTION_SECRET seals each in place, says how many, and MFA keeps working', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const clear = await start(database, {});
    const confirmed = await enrolledUser(clear);
    const pending = await pendingUser(clear);
    for (const user of [confirmed, pending]) {
      const row = await storedRow(clear.app.database.db, user.session.user.id);
      assert.deepEqual(row.secret, Buffer.from(user.secret, 'utf8'), 'stored in the clear without KEY_ENCRYPTION_SECRET');
    }
    const confirmedBefore = await storedRow(clear.app.database.db, confirmed.session.user.id);
    assert.equal(sealedCounts(clear.logs).length, 0);
    await clear.stop();

    const sealed = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    assert.deepEqual(sealedCounts(sealed.logs), [2]);
    for (const line of sealed.logs) {
      for (const user of [confirmed, pending]) assert.ok(!line.includes(user.secret), 'no secret is logged');
    }
    const confirmedAfter = await storedRow(sealed.app.database.db, confirmed.session.user.id);
    await assertSealedOnce(confirmedAfter.secret, confirmed.secret);
    assert.deepEqual({ ...confirmedAfter, secret: undefined }, { ...confirmedBefore, secret: undefined }, 'only the secret changed');
    await assertSealedOnce((await storedRow(sealed.app.database.db, pending.session.user.id)).secret, pending.secret);

    // The user's authenticator app keeps working; the pending enrolment still confirms.
    await mfaLogin(sealed, confirmed);
    await confirm(sealed, pending);
    await mfaLogin(sealed, pending);
    const settled = await Promise.all([confirmed, pending].map((user) => storedRow(sealed.app.database.db, user.session.user.id)));
    await sealed.stop();

    // Nothing is left in the clear: the next start seals nothing and changes nothing.
    const again = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    assert.deepEqual(sealedCounts(again.logs), []);
    assert.deepEqual(await Promise.all([confirmed, pending].map((user) => storedRow(again.app.database.db, user.session.user.id))), settled);
    await mfaLogin(again, confirmed);
    await again.stop();
  });

  it('when KEY_ENCRYPTION_SECRET is wrong or missing, then sealing refuses before writing anything, so no secret is sealed under the wrong one', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const clear = await start(database, {});
    const sealedUser = await enrolledUser(clear);
    await clear.stop();
    const sealed = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    const { database: appDatabase, users, logger } = sealed.app;
    // A pending enrolment written in the clear, as an instance still running without the secret does.
    const clearUser = await registerAndLogin(sealed.client);
    const clearSecret = (await createMfa({ database: appDatabase, users }).enrolTotp({ userId: clearUser.user.id, role: 'user' })).secret;
    const before = await Promise.all([sealedUser.session.user.id, clearUser.user.id].map((id) => storedRow(appDatabase.db, id)));
    assert.deepEqual(before[1]?.secret, Buffer.from(clearSecret, 'utf8'));

    await assert.rejects(createMfa({ database: appDatabase, users, sealer: createKeySealer(OTHER_SECRET) }).sealStoredSecrets(logger), (error: Error) => {
      assert.ok(error instanceof SealedKeyError, String(error));
      assert.match(error.message, /KEY_ENCRYPTION_SECRET does not open/);
      return true;
    });
    await assert.rejects(createMfa({ database: appDatabase, users }).sealStoredSecrets(logger), (error: Error) => {
      assert.ok(error instanceof SealedKeyError, String(error));
      assert.match(error.message, /set KEY_ENCRYPTION_SECRET/);
      return true;
    });
    assert.deepEqual(await Promise.all([sealedUser.session.user.id, clearUser.user.id].map((id) => storedRow(appDatabase.db, id))), before);
    await sealed.stop();

    // The service as a whole refuses to start too (the signing keys are checked first, the same way).
    await assert.rejects(start(database, { KEY_ENCRYPTION_SECRET: OTHER_SECRET }), SealedKeyError);
    await assert.rejects(start(database, {}), SealedKeyError);

    // With the right secret, the clear one is sealed now, and the other was never touched.
    const right = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    assert.deepEqual(sealedCounts(right.logs), [1]);
    assert.deepEqual(await storedRow(right.app.database.db, sealedUser.session.user.id), before[0]);
    await assertSealedOnce((await storedRow(right.app.database.db, clearUser.user.id)).secret, clearSecret);
    await mfaLogin(right, sealedUser);
    await right.stop();
  });

  it('when two instances start at once with KEY_ENCRYPTION_SECRET over clear secrets, then each secret is sealed exactly once', { skip: postgresOnly }, async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const clear = await start(database, {});
    const users: User[] = [];
    for (let index = 0; index < 6; index += 1) users.push(await enrolledUser(clear));
    await clear.stop();

    // Each instance holds its first write until both have read the clear secrets: every row is
    // contended (5 s at most, so that a wrong implementation fails below instead of hanging).
    let arrived = 0;
    let releaseAll!: () => void;
    const bothRead = new Promise<void>((resolve) => (releaseAll = resolve));
    const holdFirstWrite = (): MfaPauses => {
      let first = true;
      return {
        async beforeSealWrite() {
          if (!first) return;
          first = false;
          arrived += 1;
          if (arrived === 2) releaseAll();
          await Promise.race([bothRead, sleep(5_000)]);
        },
      };
    };
    const instances = await Promise.all([
      start(database, { KEY_ENCRYPTION_SECRET: SECRET }, holdFirstWrite()),
      start(database, { KEY_ENCRYPTION_SECRET: SECRET }, holdFirstWrite()),
    ]);
    assert.equal(arrived, 2, 'both instances found clear secrets to seal');
    const counts = instances.flatMap((instance) => sealedCounts(instance.logs));
    assert.equal(
      counts.reduce((sum, count) => sum + count, 0),
      users.length,
      `sealed ${JSON.stringify(counts)} in all: once per secret`,
    );
    for (const user of users) await assertSealedOnce((await storedRow(instances[0].app.database.db, user.session.user.id)).secret, user.secret);
    for (const [index, user] of users.entries()) await mfaLogin(instances[index % 2] ?? instances[0], user);
  });

  it('when requests change a secret\'s row while it is being sealed, then the step a login used and a new enrolment\'s secret are kept', { skip: postgresOnly }, async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    // An instance without the secret keeps serving while another starts with it.
    const old = await start(database, {});
    const loggingIn = await enrolledUser(old);
    const reEnrolling = await pendingUser(old);

    let reached!: () => void;
    const sealing = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let first = true;
    const starting = start(
      database,
      { KEY_ENCRYPTION_SECRET: SECRET },
      {
        async beforeSealWrite() {
          if (!first) return;
          first = false;
          reached();
          await Promise.race([released, sleep(10_000)]);
        },
      },
    );
    await sealing;
    // The starting instance has read both clear secrets; meanwhile one user logs in (a newer step is
    // used) and the other enrols again (a new secret).
    const usedCode = await freshCode(loggingIn.secret);
    await mfaLogin(old, loggingIn, usedCode);
    const usedStep = (await storedRow(old.app.database.db, loggingIn.session.user.id)).last_step;
    assert.notEqual(usedStep, null);
    const newSecret = await enrol(old, reEnrolling.session.accessToken);
    assert.notEqual(newSecret, reEnrolling.secret);
    release();
    const sealed = await starting;

    assert.deepEqual(sealedCounts(sealed.logs), [1], 'only the unchanged secret was sealed');
    const loggedIn = await storedRow(sealed.app.database.db, loggingIn.session.user.id);
    await assertSealedOnce(loggedIn.secret, loggingIn.secret);
    assert.equal(loggedIn.last_step, usedStep, 'the login\'s step is kept');
    // So its code is not accepted a second time, and a newer one is.
    expectError(await sealed.client.post(VERIFY, { mfaToken: await challenge(sealed, loggingIn), code: usedCode }), 401, 'INVALID_MFA_CODE');
    await mfaLogin(sealed, loggingIn);

    // The new enrolment's secret was not overwritten by the stale sealed one: it stays in the clear
    // (until the next start with the secret), and confirms.
    assert.deepEqual((await storedRow(sealed.app.database.db, reEnrolling.session.user.id)).secret, Buffer.from(newSecret, 'utf8'));
    const reEnrolled = { ...reEnrolling, secret: newSecret };
    await confirm(sealed, reEnrolled);
    await mfaLogin(sealed, reEnrolled);
    await old.stop();

    const next = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    assert.deepEqual(sealedCounts(next.logs), [1]);
    await assertSealedOnce((await storedRow(next.app.database.db, reEnrolling.session.user.id)).secret, newSecret);
    await mfaLogin(next, reEnrolled);
  });

  it('when an instance without the secret meets a secret another instance sealed, then its MFA login is 503 with Retry-After, not a 500, and the sealed instance logs the user in', { skip: postgresOnly }, async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    // A rolling switch to KEY_ENCRYPTION_SECRET: the old instance keeps serving while a new one seals.
    const old = await start(database, {});
    const user = await enrolledUser(old);
    const sealed = await start(database, { KEY_ENCRYPTION_SECRET: SECRET });
    await assertSealedOnce((await storedRow(sealed.app.database.db, user.session.user.id)).secret, user.secret);

    const failures = async () =>
      (await sql<{ failures: number }>`select failures from mfa_totp where user_id = ${user.session.user.id}::uuid`.execute(old.app.database.db)).rows[0]?.failures;
    const failuresBefore = await failures();
    const mfaToken = await challenge(old, user);
    const refused = await old.client.post(VERIFY, { mfaToken, code: await freshCode(user.secret) });
    expectError(refused, 503, 'SERVICE_UNAVAILABLE');
    assert.equal(await failures(), failuresBefore, 'nothing was tried: the wrong-code budget is untouched');
    // Disabling with a code there is the same transient, and spends nothing either.
    const disable = await old.client.request('DELETE', ENROL, { code: await freshCode(user.secret) }, { token: user.session.accessToken });
    expectError(disable, 503, 'SERVICE_UNAVAILABLE');
    assert.equal(await failures(), failuresBefore, 'disabling tried nothing either');
    assert.ok(Number(refused.headers.get('retry-after')) >= 1, refused.text);
    assert.ok(
      old.logs.some((line) => {
        const { level } = JSON.parse(line) as { level: number | string };
        return line.includes('KEY_ENCRYPTION_SECRET') && (level === 'error' || (typeof level === 'number' && level >= 50));
      }),
      'the instance says why, at error level',
    );
    // The retry that reaches a restarted instance succeeds.
    await mfaLogin(sealed, user);
  });
});
