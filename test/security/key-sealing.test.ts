// Private material at rest: with KEY_ENCRYPTION_SECRET, the signing keys' private JWKs and the
// refresh-successor secret are stored sealed (a JWE under a key derived from the secret), keys stored
// in the clear before are sealed in place, and a wrong or missing secret stops the start with a clear
// error instead of minting a new key behind the operators' back.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createKeySealer, rotateSigningKey, SealedKeyError } from '../../src/components/auth/index.js';
import { loginAdmin } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const SECRET = 'a-key-encryption-secret-of-32-chars-or-more';
const OTHER_SECRET = 'another-secret-that-is-long-enough-too';

/** What the database holds for the auth component's private material, read through a running server. */
async function storedMaterial(server: TestServer) {
  const db = server.app.database.db;
  const keys = await db.selectFrom('signing_keys').select(['kid', 'private_jwk']).execute();
  const secrets = await db.selectFrom('auth_secrets').select(['name', 'secret']).execute();
  return {
    keys,
    secrets: secrets.map((row) => ({ name: row.name, text: Buffer.from(row.secret).toString('latin1') })),
  };
}

describe('key sealing (unit)', () => {
  it('when a value is sealed, then it opens with the same secret only, and a tampered value does not open', async () => {
    const sealer = createKeySealer(SECRET);
    const plaintext = Buffer.from('{"d":"private"}');
    const sealed = await sealer.seal(plaintext);
    assert.ok(!sealed.includes('private'));
    assert.deepEqual(Buffer.from(await sealer.open(sealed)), plaintext);
    await assert.rejects(createKeySealer(OTHER_SECRET).open(sealed), SealedKeyError);
    const parts = sealed.split('.');
    const body = parts[3] ?? '';
    parts[3] = (body[0] === 'A' ? 'B' : 'A') + body.slice(1);
    await assert.rejects(sealer.open(parts.join('.')), SealedKeyError);
  });
});

describeOnBackends('private keys at rest', ({ it, startServer, createDatabase }) => {
  it('when KEY_ENCRYPTION_SECRET is set, then nothing private is stored in the clear, and a restart with it keeps every token valid', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const first = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    const session = await loginAdmin(first.client);
    const stored = await storedMaterial(first);
    assert.ok(stored.keys.length > 0);
    for (const key of stored.keys) {
      assert.equal(typeof key.private_jwk['sealed'], 'string', `key ${key.kid} is sealed`);
      assert.equal(key.private_jwk['d'], undefined, `key ${key.kid} has no private member in the clear`);
    }
    assert.ok(stored.secrets.length > 0);
    for (const secret of stored.secrets) assert.ok(secret.text.startsWith('bastion-sealed:'), `secret ${secret.name} is sealed`);
    assert.ok(!first.logs.some((line) => line.includes('stored unencrypted')));
    await first.stop();

    // A restart (or another instance) with the same secret signs and verifies with the same keys.
    const second = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    const me = await second.client.get('/api/v1/users/me', { token: session.accessToken });
    assert.equal(me.status, 200, me.text);
    const refreshed = await second.client.post('/api/v1/auth/refresh', { refreshToken: session.refreshToken });
    assert.equal(refreshed.status, 200, refreshed.text);
    const jwks = await second.client.get<{ keys: Array<Record<string, unknown>> }>('/.well-known/jwks.json');
    assert.ok(jwks.body.keys.length > 0);
    for (const key of jwks.body.keys) assert.equal(key['d'], undefined);
    await second.stop();
  });

  it('when the secret is wrong or missing, then the service refuses to start with a clear error and keeps the stored keys', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const sealed = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    const before = await storedMaterial(sealed);
    await sealed.stop();

    await assert.rejects(startServer({ KEY_ENCRYPTION_SECRET: OTHER_SECRET }, { database }), (error: Error) => {
      assert.ok(error instanceof SealedKeyError, String(error));
      assert.match(error.message, /KEY_ENCRYPTION_SECRET does not open/);
      return true;
    });
    await assert.rejects(startServer({}, { database }), /stored private keys are encrypted: set KEY_ENCRYPTION_SECRET/);

    const again = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    assert.deepEqual(await storedMaterial(again), before, 'no key was replaced or added');
    await again.stop();
  });

  it('when clear and sealed keys are mixed, then a wrong secret stops the start before any clear key is sealed under it', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const sealed = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    // The newest key stored in the clear beside a sealed one (as a rotation without the secret leaves).
    await rotateSigningKey(sealed.app.database, {});
    const before = await storedMaterial(sealed);
    assert.ok(before.keys.some((key) => typeof key.private_jwk['d'] === 'string'));
    assert.ok(before.keys.some((key) => typeof key.private_jwk['sealed'] === 'string'));
    await sealed.stop();

    // Sealing the clear key under the wrong secret first would let this start succeed, and every
    // later start with the right secret fail on the newest key.
    await assert.rejects(startServer({ KEY_ENCRYPTION_SECRET: OTHER_SECRET }, { database }), SealedKeyError);
    const again = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    const after = await storedMaterial(again);
    assert.deepEqual(after.keys.map((key) => key.kid).sort(), before.keys.map((key) => key.kid).sort());
    for (const key of after.keys) assert.equal(key.private_jwk['d'], undefined);
    const session = await loginAdmin(again.client);
    assert.equal((await again.client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
    await again.stop();
  });

  it('when keys were stored in the clear, then starting with the secret seals them in place and earlier tokens stay valid', async () => {
    const database = await createDatabase({ pgliteTemplate: true });
    const clear = await startServer({}, { database });
    assert.ok(clear.logs.some((line) => line.includes('"level":"warn"') && line.includes('set KEY_ENCRYPTION_SECRET')));
    const session = await loginAdmin(clear.client);
    const inTheClear = await storedMaterial(clear);
    assert.ok(inTheClear.keys.every((key) => typeof key.private_jwk['d'] === 'string'));
    await clear.stop();

    const sealed = await startServer({ KEY_ENCRYPTION_SECRET: SECRET }, { database });
    const now = await storedMaterial(sealed);
    assert.deepEqual(
      now.keys.map((key) => key.kid),
      inTheClear.keys.map((key) => key.kid),
    );
    for (const key of now.keys) assert.equal(key.private_jwk['d'], undefined);
    for (const secret of now.secrets) assert.ok(secret.text.startsWith('bastion-sealed:'));
    const me = await sealed.client.get('/api/v1/users/me', { token: session.accessToken });
    assert.equal(me.status, 200, me.text);
    const refreshed = await sealed.client.post('/api/v1/auth/refresh', { refreshToken: session.refreshToken });
    assert.equal(refreshed.status, 200, refreshed.text);
    const fresh = await loginAdmin(sealed.client);
    assert.equal((await sealed.client.get('/api/v1/users/me', { token: fresh.accessToken })).status, 200);
    await sealed.stop();
  });
});
