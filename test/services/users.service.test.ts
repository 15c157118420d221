// The users service called directly, as any transport calls it: plain data and a Principal in, a
// User or a DomainError out. The access rule under test: an operation the role never allows is
// FORBIDDEN; another user's resource is NOT_FOUND, as if absent.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe } from 'node:test';
import type { Application } from '../../src/app.js';
import type { Principal } from '../../src/components/access/index.js';
import type { User } from '../../src/components/users/index.js';
import { uniqueEmail } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { ISO_UTC, UUID } from '../helpers/errors.js';
import { adminPrincipal, expectDomainError, registerUser } from '../helpers/services.js';

const USER_KEYS = ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role', 'updatedAt'];

describeOnBackends('users service', ({ it, before, startApplication }) => {
  let app: Application;
  let admin: Principal;

  before(async () => {
    ({ app } = await startApplication());
    admin = await adminPrincipal(app);
  });

  /** Users rows with this email in any case, deleted ones included. */
  const rowsWithEmail = (email: string) =>
    app.database.db
      .selectFrom('users')
      .select(['id', 'deleted_at'])
      .where((eb) => eb(eb.fn('lower', ['email']), '=', email.toLowerCase()))
      .execute();

  describe('register and create', () => {
    it('when a user registers, then the user comes back with role user and no secret field, and reads back the same', async () => {
      const email = uniqueEmail('reg');
      const user = await app.users.register({ email, name: 'Reg Istered', password: 'register-pw-1' });
      assert.deepEqual(Object.keys(user).sort(), USER_KEYS);
      assert.match(user.id, UUID);
      assert.match(user.createdAt, ISO_UTC);
      assert.match(user.updatedAt, ISO_UTC);
      assert.deepEqual({ email: user.email, name: user.name, role: user.role }, { email, name: 'Reg Istered', role: 'user' });
      assert.deepEqual(await app.users.get({ userId: user.id, role: 'user' }, user.id), user);
    });

    it('when an email is taken in any case, then register, create and update fail EMAIL_TAKEN and nothing is written', async () => {
      const taken = await registerUser(app);
      const shouted = taken.user.email.toUpperCase();
      await expectDomainError(app.users.register({ email: shouted, name: 'Again', password: 'password-2' }), 'EMAIL_TAKEN', 'register');
      await expectDomainError(app.users.create(admin, { email: shouted, name: 'Again', password: 'password-2' }), 'EMAIL_TAKEN', 'create');
      const other = await registerUser(app);
      await expectDomainError(app.users.update(other.principal, other.user.id, { email: shouted }), 'EMAIL_TAKEN', 'update');
      assert.equal((await rowsWithEmail(taken.user.email)).length, 1);
      assert.equal((await app.users.get(other.principal, other.user.id)).email, other.user.email);
    });

    it('when the admin creates users, then the role is user by default or the one given', async () => {
      const plain = await app.users.create(admin, { email: uniqueEmail('made'), name: 'Made', password: 'password-1' });
      assert.equal(plain.role, 'user');
      const second = await app.users.create(admin, { email: uniqueEmail('made'), name: 'Admin Two', password: 'password-1', role: 'admin' });
      assert.equal(second.role, 'admin');
      assert.equal((await app.users.get(admin, second.id)).role, 'admin');
    });

    it('when a non-admin creates a user, then FORBIDDEN and nothing is stored', async () => {
      const { principal } = await registerUser(app);
      const email = uniqueEmail('refused');
      await expectDomainError(app.users.create(principal, { email, name: 'Refused', password: 'password-1' }), 'FORBIDDEN');
      await expectDomainError(app.users.create(principal, { email, name: 'Refused', password: 'password-1', role: 'admin' }), 'FORBIDDEN');
      assert.equal((await rowsWithEmail(email)).length, 0);
    });
  });

  describe('get', () => {
    it('when a user reads themself (the id in any case), then it is their user', async () => {
      const { user, principal } = await registerUser(app);
      assert.deepEqual(await app.users.get(principal, user.id), user);
      assert.deepEqual(await app.users.get(principal, user.id.toUpperCase()), user);
    });

    it('when a user reads another user, then NOT_FOUND, the same as for an absent id', async () => {
      const reader = await registerUser(app);
      const other = await registerUser(app);
      await expectDomainError(app.users.get(reader.principal, other.user.id), 'NOT_FOUND', 'another user');
      await expectDomainError(app.users.get(reader.principal, randomUUID()), 'NOT_FOUND', 'an absent id');
    });

    it('when the admin reads, then any user is found and an absent id is NOT_FOUND', async () => {
      const { user } = await registerUser(app);
      assert.deepEqual(await app.users.get(admin, user.id), user);
      await expectDomainError(app.users.get(admin, randomUUID()), 'NOT_FOUND');
    });
  });

  describe('getMany', () => {
    it('when the admin reads a batch (ids in any case, one twice), then every user is in the map under its lower-case id', async () => {
      const [first, second] = [await registerUser(app), await registerUser(app)];
      const found = await app.users.getMany(admin, [first.user.id, second.user.id.toUpperCase(), first.user.id]);
      assert.deepEqual(found, new Map([[first.user.id, first.user], [second.user.id, second.user]]));
    });

    it('when a user reads a batch, then only their own user is in the map, others missing as if absent', async () => {
      const reader = await registerUser(app);
      const other = await registerUser(app);
      const found = await app.users.getMany(reader.principal, [other.user.id, reader.user.id.toUpperCase(), randomUUID()]);
      assert.deepEqual(found, new Map([[reader.user.id, reader.user]]));
      assert.deepEqual(await app.users.getMany(reader.principal, [other.user.id]), new Map());
    });

    it('when the batch holds unknown, deleted and malformed ids, then they are missing and the rest still comes back', async () => {
      const live = await registerUser(app);
      const deleted = await registerUser(app);
      await app.users.delete(admin, deleted.user.id);
      const found = await app.users.getMany(admin, [randomUUID(), deleted.user.id, 'not-a-uuid', live.user.id]);
      assert.deepEqual(found, new Map([[live.user.id, live.user]]));
      assert.deepEqual(await app.users.getMany(admin, []), new Map());
    });
  });

  describe('list', () => {
    it('when a non-admin lists users, then FORBIDDEN', async () => {
      const { principal } = await registerUser(app);
      await expectDomainError(app.users.list(principal, { page: 1, limit: 10 }), 'FORBIDDEN');
    });

    it('when the admin walks every page, then each live user comes once, newest first, under meta {page, limit, total, totalPages}', async () => {
      const added = await Promise.all([registerUser(app), registerUser(app), registerUser(app)]);
      const limit = 2;
      const first = await app.users.list(admin, { page: 1, limit });
      const { total } = first.meta;
      assert.ok(total >= 4, `total ${total}: the admin and three users at least`);
      assert.deepEqual(first.meta, { page: 1, limit, total, totalPages: Math.ceil(total / limit) });
      const seen: User[] = [];
      for (let page = 1; page <= first.meta.totalPages; page++) {
        const result = await app.users.list(admin, { page, limit });
        assert.deepEqual(result.meta, { ...first.meta, page });
        assert.equal(result.data.length, page < first.meta.totalPages ? limit : total - limit * (page - 1));
        seen.push(...result.data);
      }
      assert.equal(new Set(seen.map((user) => user.id)).size, total, 'no user twice');
      for (const { user } of added) assert.ok(seen.some((listed) => listed.id === user.id), `${user.email} is listed`);
      const createdAt = seen.map((user) => user.createdAt);
      assert.deepEqual(createdAt, [...createdAt].sort().reverse(), 'newest first');
    });

    it('when the page is past the end, then no users and the same meta', async () => {
      const { meta } = await app.users.list(admin, { page: 1, limit: 100 });
      const past = await app.users.list(admin, { page: meta.totalPages + 1, limit: 100 });
      assert.deepEqual(past, { data: [], meta: { ...meta, page: meta.totalPages + 1 } });
    });
  });

  describe('update', () => {
    it('when a user updates their own name and email, then the new values come back, are stored, and updatedAt moves on', async () => {
      const { user, principal } = await registerUser(app);
      const email = uniqueEmail('renamed');
      const updated = await app.users.update(principal, user.id, { name: 'Re Named', email });
      assert.deepEqual({ ...updated, updatedAt: user.updatedAt }, { ...user, name: 'Re Named', email });
      assert.ok(updated.updatedAt > user.updatedAt, `${updated.updatedAt} after ${user.updatedAt}`);
      assert.deepEqual(await app.users.get(principal, user.id), updated);
    });

    it('when a user updates another user, then NOT_FOUND and nothing changes', async () => {
      const editor = await registerUser(app);
      const other = await registerUser(app);
      await expectDomainError(app.users.update(editor.principal, other.user.id, { name: 'Hijacked' }), 'NOT_FOUND');
      assert.deepEqual(await app.users.get(admin, other.user.id), other.user);
    });

    it('when a non-admin sends a role (even their own, even with other fields), then FORBIDDEN and nothing changes', async () => {
      const { user, principal } = await registerUser(app);
      await expectDomainError(app.users.update(principal, user.id, { role: 'admin' }), 'FORBIDDEN', 'promotion');
      await expectDomainError(app.users.update(principal, user.id, { role: 'user', name: 'Sneaky' }), 'FORBIDDEN', 'own role');
      assert.deepEqual(await app.users.get(principal, user.id), user);
    });

    it("when the admin changes a user's role, then the new role is stored", async () => {
      const { user } = await registerUser(app);
      const promoted = await app.users.update(admin, user.id, { role: 'admin' });
      assert.equal(promoted.role, 'admin');
      assert.equal((await app.users.get(admin, user.id)).role, 'admin');
      assert.equal((await app.users.update(admin, user.id, { role: 'user' })).role, 'user');
      assert.equal((await app.users.get(admin, user.id)).role, 'user');
    });

    it('when the admin updates an absent user, then NOT_FOUND', async () => {
      await expectDomainError(app.users.update(admin, randomUUID(), { name: 'Nobody' }), 'NOT_FOUND');
    });
  });

  describe('delete', () => {
    it('when a non-admin deletes a user (another or themself), then FORBIDDEN and both remain', async () => {
      const deleter = await registerUser(app);
      const other = await registerUser(app);
      await expectDomainError(app.users.delete(deleter.principal, other.user.id), 'FORBIDDEN', 'another');
      await expectDomainError(app.users.delete(deleter.principal, deleter.user.id), 'FORBIDDEN', 'themself');
      assert.deepEqual(await app.users.get(admin, other.user.id), other.user);
      assert.deepEqual(await app.users.get(admin, deleter.user.id), deleter.user);
    });

    it('when the admin deletes a user, then the row stays marked deleted, reads and writes are NOT_FOUND, and the email is free again', async () => {
      const { user, principal, password } = await registerUser(app);
      await app.users.delete(admin, user.id);

      const rows = await rowsWithEmail(user.email);
      assert.equal(rows.length, 1, 'a soft delete keeps the row');
      assert.ok(rows[0]?.deleted_at instanceof Date, 'deleted_at is set');
      await expectDomainError(app.users.get(admin, user.id), 'NOT_FOUND', 'admin read');
      await expectDomainError(app.users.update(admin, user.id, { name: 'Ghost' }), 'NOT_FOUND', 'update');
      await expectDomainError(app.users.delete(admin, user.id), 'NOT_FOUND', 'second delete');
      // The user's own principal, resolved before the delete: their credentials are what is invalid now.
      await expectDomainError(app.users.get(principal, user.id), 'UNAUTHENTICATED', 'own read');
      const { data } = await app.users.list(admin, { page: 1, limit: 100 });
      assert.ok(!data.some((listed) => listed.id === user.id), 'not listed');

      const again = await app.users.register({ email: user.email, name: 'Second Life', password });
      assert.notEqual(again.id, user.id);
      assert.equal((await rowsWithEmail(user.email)).length, 2);
    });

    it('when the admin deletes an absent id, then NOT_FOUND', async () => {
      await expectDomainError(app.users.delete(admin, randomUUID()), 'NOT_FOUND');
    });
  });
});
