// Stored hashes from older formats still log in, and are replaced by argon2id with the current
// (OWASP) parameters on that login: the seed's bcrypt hashes, and argon2 hashes with weaker settings.
import assert from 'node:assert/strict';
import { hash as argon2Hash, parseOptions } from '@node-rs/argon2';
import { hash as bcryptHash } from '@node-rs/bcrypt';
import { login, registerAndLogin } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

describeOnBackends('password hash upgrades', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });

  const storedHash = async (id: string) =>
    (await server.app.database.db.selectFrom('users').select('password_hash').where('id', '=', id).executeTakeFirstOrThrow())
      .password_hash;
  const setHash = (id: string, passwordHash: string) =>
    server.app.database.db.updateTable('users').set({ password_hash: passwordHash }).where('id', '=', id).execute();

  it('when a user registers, then the stored hash is argon2id with m=19456, t=2, p=1 in PHC format', async () => {
    const session = await registerAndLogin(server.client);
    const stored = await storedHash(session.user.id);
    assert.match(stored, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  it('when a user with a bcrypt hash logs in, then it works and the hash becomes argon2id', async () => {
    const session = await registerAndLogin(server.client);
    await setHash(session.user.id, await bcryptHash(session.password, 10));
    const again = await login(server.client, session.user.email, session.password);
    assert.equal(again.user.id, session.user.id);
    const stored = await storedHash(session.user.id);
    assert.match(stored, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    await login(server.client, session.user.email, session.password);
    const wrong = await server.client.post('/api/v1/auth/login', { email: session.user.email, password: 'not-the-password' });
    assert.equal(wrong.status, 401);
  });

  it('when a bcrypt user gives a wrong password, then it is 401 and the hash is left alone', async () => {
    const session = await registerAndLogin(server.client);
    const bcrypt = await bcryptHash(session.password, 10);
    await setHash(session.user.id, bcrypt);
    const wrong = await server.client.post('/api/v1/auth/login', { email: session.user.email, password: 'wrong-password' });
    assert.equal(wrong.status, 401);
    assert.equal(await storedHash(session.user.id), bcrypt);
  });

  it('when an argon2 hash has weaker parameters, then the next login re-hashes it with the current ones', async () => {
    const session = await registerAndLogin(server.client);
    await setHash(session.user.id, await argon2Hash(session.password, { memoryCost: 4096, timeCost: 1, parallelism: 1 }));
    await login(server.client, session.user.email, session.password);
    const parsed = parseOptions(await storedHash(session.user.id));
    assert.deepEqual([parsed.memoryCost, parsed.timeCost, parsed.parallelism], [19456, 2, 1]);
  });
});
