// Contract: "Users" — /users/me, admin-only management, self-or-admin reads and updates (others are
// 404), role changes, pagination, deletion and what it revokes; no user body ever leaks secrets.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe } from 'node:test';
import { clientFrom, type ApiResponse, type Client, type RequestOptions } from '../helpers/client.js';
import { login, loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import { expectError } from '../helpers/errors.js';
import { eventually } from '../helpers/poll.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { expectUser, type User } from '../helpers/users.js';

const USERS = '/api/v1/users';
const ME = '/api/v1/users/me';
/** Field names that must never appear in any response body. */
const SECRET_FIELD = /password|hash|tokenversion|token_version/i;

interface PageMeta {
  page: number;
  limit: number;
  total: number;
  totalPages: number;
}
interface UserPage {
  data: User[];
  meta: PageMeta;
}
/** `{data: User}` with status `status`. */
function expectUserBody(response: ApiResponse<unknown>, status: number): User {
  assert.equal(response.status, status, response.text);
  const body = response.body as { data?: unknown };
  assert.deepEqual(Object.keys(body), ['data']);
  return expectUser(body.data);
}

function expectPage(response: ApiResponse<unknown>): UserPage {
  assert.equal(response.status, 200, response.text);
  const body = response.body as UserPage;
  assert.deepEqual(Object.keys(body).sort(), ['data', 'meta']);
  assert.ok(Array.isArray(body.data));
  body.data.forEach(expectUser);
  assert.deepEqual(Object.keys(body.meta).sort(), ['limit', 'page', 'total', 'totalPages']);
  return body;
}

function findSecretFields(value: unknown, path = 'body'): string[] {
  if (Array.isArray(value)) return value.flatMap((item, index) => findSecretFields(item, `${path}[${index}]`));
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, inner]) => [
    ...(SECRET_FIELD.test(key) ? [`${path}.${key}`] : []),
    ...findSecretFields(inner, `${path}.${key}`),
  ]);
}

/** A client that fails the test if any response body has a password, hash or token-version field. */
function guarded(inner: Client): Client {
  const request = async <T>(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<ApiResponse<T>> => {
    const response = await inner.request<T>(method, path, body, options);
    assert.deepEqual(findSecretFields(response.body), [], `${method} ${path} leaks: ${response.text}`);
    return response;
  };
  return clientFrom(inner.baseUrl, request);
}

describeOnBackends('users', ({ it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;

  before(async () => {
    server = await startServer();
    client = guarded(server.client);
    admin = await loginAdmin(client);
  });

  const userRow = (id: string) =>
    server.app.database.db
      .selectFrom('users')
      .select(['id', 'email', 'name', 'role', 'deleted_at'])
      .where('id', '=', id)
      .executeTakeFirst();
  const liveUsersWithEmail = async (email: string): Promise<number> => {
    const rows = await server.app.database.db
      .selectFrom('users')
      .select('id')
      .where((eb) => eb(eb.fn('lower', ['email']), '=', email.toLowerCase()))
      .where('deleted_at', 'is', null)
      .execute();
    return rows.length;
  };
  const liveUserCount = async (): Promise<number> => {
    const row = await server.app.database.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('deleted_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  };
  const createUser = async (input: { email?: string; name?: string; password?: string; role?: 'user' | 'admin' } = {}) => {
    const email = input.email ?? uniqueEmail('created');
    const password = input.password ?? 'created-pw-1';
    const response = await client.post(USERS, { email, name: input.name ?? 'Created', password, ...(input.role ? { role: input.role } : {}) }, {
      token: admin.accessToken,
    });
    return { user: expectUserBody(response, 201), password };
  };

  describe('GET /users/me', () => {
    it('when a user asks for themself, then 200 {data: User}', async () => {
      const session = await registerAndLogin(client, { name: 'Me Myself' });
      const user = expectUserBody(await client.get(ME, { token: session.accessToken }), 200);
      assert.deepEqual(user, session.user);
      assert.equal(user.role, 'user');
      assert.equal(user.name, 'Me Myself');
    });

    it('when the admin asks, then it is the admin', async () => {
      const user = expectUserBody(await client.get(ME, { token: admin.accessToken }), 200);
      assert.equal(user.id, admin.user.id);
      assert.equal(user.role, 'admin');
    });

    it('when no or a bad token is sent, then 401 UNAUTHENTICATED', async () => {
      expectError(await client.get(ME), 401, 'UNAUTHENTICATED');
      expectError(await client.get(ME, { token: 'nonsense' }), 401, 'UNAUTHENTICATED');
    });
  });

  describe('admin-only routes', () => {
    it('when a normal user creates a user, then 403 FORBIDDEN and nothing is created', async () => {
      const session = await registerAndLogin(client);
      const email = uniqueEmail('blocked');
      const response = await client.post(USERS, { email, name: 'Blocked', password: 'blocked-pw-1' }, { token: session.accessToken });
      expectError(response, 403, 'FORBIDDEN');
      assert.equal(await liveUsersWithEmail(email), 0);
    });

    it('when a normal user lists users, then 403 FORBIDDEN', async () => {
      const session = await registerAndLogin(client);
      expectError(await client.get(USERS, { token: session.accessToken }), 403, 'FORBIDDEN');
      expectError(await client.get(`${USERS}?page=1&limit=5`, { token: session.accessToken }), 403, 'FORBIDDEN');
    });

    it('when a normal user deletes a user (another or themself), then 403 FORBIDDEN and both still exist', async () => {
      const session = await registerAndLogin(client);
      const other = await registerAndLogin(client);
      expectError(await client.delete(`${USERS}/${other.user.id}`, { token: session.accessToken }), 403, 'FORBIDDEN');
      expectError(await client.delete(`${USERS}/${session.user.id}`, { token: session.accessToken }), 403, 'FORBIDDEN');
      expectError(await client.delete(`${USERS}/${admin.user.id}`, { token: session.accessToken }), 403, 'FORBIDDEN');
      assert.equal((await userRow(other.user.id))?.deleted_at, null);
      assert.equal((await userRow(session.user.id))?.deleted_at, null);
      assert.equal((await client.get(ME, { token: other.accessToken })).status, 200);
    });

    it('when unauthenticated, then admin routes are 401 UNAUTHENTICATED', async () => {
      expectError(await client.get(USERS), 401, 'UNAUTHENTICATED');
      expectError(await client.post(USERS, { email: uniqueEmail(), name: 'X', password: 'xxxxxxxx1' }), 401, 'UNAUTHENTICATED');
      expectError(await client.delete(`${USERS}/${randomUUID()}`), 401, 'UNAUTHENTICATED');
    });
  });

  describe('POST /users (admin)', () => {
    it('when the admin creates a user, then 201 with role user by default, the email normalised, and it can log in', async () => {
      const local = `Created.${Date.now()}`;
      const { user } = await createUser({ email: `  ${local}@Example.ORG `, password: 'created-pw-9' });
      assert.equal(user.email, `${local.toLowerCase()}@example.org`);
      assert.equal(user.role, 'user');
      assert.equal((await userRow(user.id))?.email, user.email);
      const session = await login(client, user.email, 'created-pw-9');
      assert.equal(session.user.id, user.id);
    });

    it('when the admin creates a user with role admin, then that user is an admin', async () => {
      const { user, password } = await createUser({ role: 'admin' });
      assert.equal(user.role, 'admin');
      assert.equal((await userRow(user.id))?.role, 'admin');
      const session = await login(client, user.email, password);
      expectPage(await client.get(USERS, { token: session.accessToken }));
    });

    it('when the email is taken (any case), then 409 EMAIL_TAKEN', async () => {
      const existing = await registerAndLogin(client);
      const response = await client.post(
        USERS,
        { email: ` ${existing.user.email.toUpperCase()} `, name: 'Dup', password: 'duplicate-1' },
        { token: admin.accessToken },
      );
      expectError(response, 409, 'EMAIL_TAKEN');
      assert.equal(await liveUsersWithEmail(existing.user.email), 1);
    });

    it('when the body is invalid (short password, unknown role, unknown field), then 400 VALIDATION_FAILED', async () => {
      for (const extra of [{ password: 'short' }, { role: 'superuser' }, { isAdmin: true }, { name: '' }]) {
        const email = uniqueEmail('invalid');
        const response = await client.post(USERS, { email, name: 'Invalid', password: 'valid-pw-12', ...extra }, { token: admin.accessToken });
        expectError(response, 400, 'VALIDATION_FAILED');
        assert.equal(await liveUsersWithEmail(email), 0);
      }
    });
  });

  describe('GET and PATCH /users/:id', () => {
    it('when a user reads themself by id, then 200; the admin can read anyone', async () => {
      const session = await registerAndLogin(client);
      assert.deepEqual(expectUserBody(await client.get(`${USERS}/${session.user.id}`, { token: session.accessToken }), 200), session.user);
      assert.deepEqual(expectUserBody(await client.get(`${USERS}/${session.user.id}`, { token: admin.accessToken }), 200), session.user);
    });

    it("when a non-admin reads another user's id, then 404 NOT_FOUND, indistinguishable from an absent id", async () => {
      const session = await registerAndLogin(client);
      const other = await registerAndLogin(client);
      const forOther = expectError(await client.get(`${USERS}/${other.user.id}`, { token: session.accessToken }), 404, 'NOT_FOUND');
      const forAdmin = expectError(await client.get(`${USERS}/${admin.user.id}`, { token: session.accessToken }), 404, 'NOT_FOUND');
      const forAbsent = expectError(await client.get(`${USERS}/${randomUUID()}`, { token: session.accessToken }), 404, 'NOT_FOUND');
      assert.equal(forOther.message, forAbsent.message);
      assert.equal(forAdmin.message, forAbsent.message);
    });

    it("when a non-admin patches another user's id, then 404 NOT_FOUND and nothing changes", async () => {
      const session = await registerAndLogin(client);
      const other = await registerAndLogin(client, { name: 'Untouched' });
      const response = await client.patch(`${USERS}/${other.user.id}`, { name: 'Hijacked' }, { token: session.accessToken });
      expectError(response, 404, 'NOT_FOUND');
      assert.equal((await userRow(other.user.id))?.name, 'Untouched');
      expectError(await client.patch(`${USERS}/${randomUUID()}`, { name: 'Nobody' }, { token: session.accessToken }), 404, 'NOT_FOUND');
    });

    it('when the admin reads or patches an absent id, then 404 NOT_FOUND', async () => {
      expectError(await client.get(`${USERS}/${randomUUID()}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.patch(`${USERS}/${randomUUID()}`, { name: 'Nobody' }, { token: admin.accessToken }), 404, 'NOT_FOUND');
    });

    it('when the id is not a UUID, then 400 VALIDATION_FAILED', async () => {
      const session = await registerAndLogin(client);
      for (const id of ['123', 'not-a-uuid', `${session.user.id}x`, session.user.id.replace(/-/g, '')]) {
        expectError(await client.get(`${USERS}/${id}`, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
        expectError(await client.get(`${USERS}/${id}`, { token: session.accessToken }), 400, 'VALIDATION_FAILED');
        expectError(await client.patch(`${USERS}/${id}`, { name: 'X' }, { token: session.accessToken }), 400, 'VALIDATION_FAILED');
        expectError(await client.delete(`${USERS}/${id}`, { token: admin.accessToken }), 400, 'VALIDATION_FAILED');
      }
    });

    it('when a user patches their own name, then 200 with the new name and a moved updatedAt', async () => {
      const session = await registerAndLogin(client, { name: 'Before' });
      await sleep(5);
      const user = expectUserBody(await client.patch(`${USERS}/${session.user.id}`, { name: 'After' }, { token: session.accessToken }), 200);
      assert.equal(user.name, 'After');
      assert.equal(user.email, session.user.email);
      assert.equal(user.createdAt, session.user.createdAt);
      assert.ok(Date.parse(user.updatedAt) > Date.parse(session.user.updatedAt), `${user.updatedAt} vs ${session.user.updatedAt}`);
      assert.equal((await userRow(session.user.id))?.name, 'After');
      assert.equal(expectUserBody(await client.get(ME, { token: session.accessToken }), 200).name, 'After');
    });

    it('when a user patches their email with spaces and capitals, then it is stored normalised and logs in', async () => {
      const session = await registerAndLogin(client);
      const local = `Renamed.${Date.now()}`;
      const user = expectUserBody(
        await client.patch(`${USERS}/${session.user.id}`, { email: ` ${local}@Example.NET  ` }, { token: session.accessToken }),
        200,
      );
      const expected = `${local.toLowerCase()}@example.net`;
      assert.equal(user.email, expected);
      assert.equal((await userRow(session.user.id))?.email, expected);
      await login(client, expected, session.password);
      // Re-sending one's own email in another case is not a conflict.
      assert.equal(
        expectUserBody(await client.patch(`${USERS}/${session.user.id}`, { email: expected.toUpperCase() }, { token: session.accessToken }), 200).email,
        expected,
      );
    });

    it("when a user patches their email to another user's (any case), then 409 EMAIL_TAKEN and nothing changes", async () => {
      const session = await registerAndLogin(client);
      const other = await registerAndLogin(client);
      const response = await client.patch(
        `${USERS}/${session.user.id}`,
        { email: other.user.email.toUpperCase() },
        { token: session.accessToken },
      );
      expectError(response, 409, 'EMAIL_TAKEN');
      assert.equal((await userRow(session.user.id))?.email, session.user.email);
      expectError(await client.patch(`${USERS}/${session.user.id}`, { email: admin.user.email }, { token: admin.accessToken }), 409, 'EMAIL_TAKEN');
    });

    it('when the patch body is invalid, then 400 VALIDATION_FAILED', async () => {
      const session = await registerAndLogin(client);
      for (const patch of [{ name: '' }, { name: 'n'.repeat(101) }, { email: 'not-an-email' }, { password: 'new-password-1' }, { name: 5 }]) {
        expectError(await client.patch(`${USERS}/${session.user.id}`, patch, { token: session.accessToken }), 400, 'VALIDATION_FAILED');
      }
      assert.equal((await userRow(session.user.id))?.name, session.user.name);
    });
  });

  describe('roles', () => {
    it('when a non-admin sends role (even their own, even with other fields), then 403 FORBIDDEN and nothing changes', async () => {
      const session = await registerAndLogin(client, { name: 'Plain' });
      for (const patch of [{ role: 'admin' }, { role: 'user' }, { name: 'Sneaky', role: 'admin' }]) {
        expectError(await client.patch(`${USERS}/${session.user.id}`, patch, { token: session.accessToken }), 403, 'FORBIDDEN');
      }
      const row = await userRow(session.user.id);
      assert.equal(row?.role, 'user');
      assert.equal(row?.name, 'Plain');
      expectError(await client.get(USERS, { token: session.accessToken }), 403, 'FORBIDDEN');
    });

    it("when the admin sets a user's role, then 200 and the role is stored", async () => {
      const session = await registerAndLogin(client);
      const user = expectUserBody(await client.patch(`${USERS}/${session.user.id}`, { role: 'admin' }, { token: admin.accessToken }), 200);
      assert.equal(user.role, 'admin');
      assert.equal((await userRow(session.user.id))?.role, 'admin');
      const back = expectUserBody(await client.patch(`${USERS}/${session.user.id}`, { role: 'user' }, { token: admin.accessToken }), 200);
      assert.equal(back.role, 'user');
      assert.equal((await userRow(session.user.id))?.role, 'user');
    });

    it('when an admin is demoted, then within 1 s the same token loses admin rights (403)', async () => {
      const { user, password } = await createUser({ role: 'admin' });
      const session = await login(client, user.email, password);
      expectPage(await client.get(USERS, { token: session.accessToken }));

      expectUserBody(await client.patch(`${USERS}/${user.id}`, { role: 'user' }, { token: admin.accessToken }), 200);

      expectError(await eventually(() => client.get(USERS, { token: session.accessToken }), 403), 403, 'FORBIDDEN');
      const email = uniqueEmail('by-demoted');
      expectError(await client.post(USERS, { email, name: 'X', password: 'xxxxxxxx1' }, { token: session.accessToken }), 403, 'FORBIDDEN');
      assert.equal(await liveUsersWithEmail(email), 0);
      expectError(await client.get(`${USERS}/${admin.user.id}`, { token: session.accessToken }), 404, 'NOT_FOUND');
      // Still a valid user: their own profile works and says so.
      assert.equal(expectUserBody(await client.get(ME, { token: session.accessToken }), 200).role, 'user');
    });
  });

  describe('GET /users (admin) pagination', () => {
    it('when the admin lists with page and limit, then meta is {page, limit, total, totalPages} and the newest come first', async () => {
      const created: User[] = [];
      for (let index = 0; index < 3; index++) created.push((await createUser({ name: `Paged ${index}` })).user);
      const total = await liveUserCount();

      const first = expectPage(await client.get(`${USERS}?page=1&limit=3`, { token: admin.accessToken }));
      assert.deepEqual(first.meta, { page: 1, limit: 3, total, totalPages: Math.ceil(total / 3) });
      assert.deepEqual(
        first.data.map((user) => user.id),
        created.map((user) => user.id).reverse(),
      );

      const second = expectPage(await client.get(`${USERS}?page=2&limit=3`, { token: admin.accessToken }));
      assert.deepEqual(second.meta, { page: 2, limit: 3, total, totalPages: Math.ceil(total / 3) });
      assert.equal(second.data.length, Math.min(3, total - 3));
      const firstIds = new Set(first.data.map((user) => user.id));
      for (const user of second.data) assert.ok(!firstIds.has(user.id), 'pages overlap');
      const lastOfFirst = first.data.at(-1);
      const firstOfSecond = second.data[0];
      assert.ok(lastOfFirst && firstOfSecond);
      assert.ok(Date.parse(firstOfSecond.createdAt) <= Date.parse(lastOfFirst.createdAt));
    });

    it('when the admin lists everything, then it is every live user, newest first, each once', async () => {
      const total = await liveUserCount();
      assert.ok(total <= 100, 'this suite keeps the table under one page of 100');
      const page = expectPage(await client.get(`${USERS}?limit=100`, { token: admin.accessToken }));
      assert.deepEqual(page.meta, { page: 1, limit: 100, total, totalPages: Math.ceil(total / 100) });
      assert.equal(page.data.length, total);
      assert.equal(new Set(page.data.map((user) => user.id)).size, total);
      const createdAt = page.data.map((user) => Date.parse(user.createdAt));
      for (let index = 1; index < createdAt.length; index++) {
        assert.ok((createdAt[index] ?? 0) <= (createdAt[index - 1] ?? 0), `not newest first at ${index}`);
      }
      assert.ok(page.data.some((user) => user.id === admin.user.id));
    });

    it('when page and limit are omitted, then page 1 and limit 10', async () => {
      const total = await liveUserCount();
      const page = expectPage(await client.get(USERS, { token: admin.accessToken }));
      assert.deepEqual(page.meta, { page: 1, limit: 10, total, totalPages: Math.ceil(total / 10) });
      assert.equal(page.data.length, Math.min(10, total));
    });

    it('when limit is 1 or 100, then it is accepted', async () => {
      const one = expectPage(await client.get(`${USERS}?limit=1`, { token: admin.accessToken }));
      assert.equal(one.data.length, 1);
      assert.equal(one.meta.limit, 1);
      assert.equal(one.meta.totalPages, one.meta.total);
      assert.equal(expectPage(await client.get(`${USERS}?limit=100`, { token: admin.accessToken })).meta.limit, 100);
    });

    it('when the page is past the end, then an empty data with correct meta', async () => {
      const total = await liveUserCount();
      const totalPages = Math.ceil(total / 5);
      for (const pageNumber of [totalPages + 1, totalPages + 50]) {
        const page = expectPage(await client.get(`${USERS}?page=${pageNumber}&limit=5`, { token: admin.accessToken }));
        assert.deepEqual(page.data, []);
        assert.deepEqual(page.meta, { page: pageNumber, limit: 5, total, totalPages });
      }
    });

    it('when page or limit is malformed or out of range, then 400 VALIDATION_FAILED', async () => {
      for (const query of ['limit=0', 'limit=101', 'limit=-1', 'limit=abc', 'limit=1.5', 'page=0', 'page=-1', 'page=abc', 'page=2.5', 'page=', 'limit=', 'page=1&page=2']) {
        const response = await client.get(`${USERS}?${query}`, { token: admin.accessToken });
        assert.equal(response.status, 400, `${query}: ${response.status} ${response.text}`);
        expectError(response, 400, 'VALIDATION_FAILED');
      }
    });

    it('when page is far beyond any page (1e20, 1e400), then 400 or an empty page, never a 5xx', async () => {
      const total = await liveUserCount();
      for (const page of ['1e20', '100000000000000000000', '1e400']) {
        const response = await client.get(`${USERS}?page=${page}&limit=10`, { token: admin.accessToken });
        assert.ok(response.status === 400 || response.status === 200, `page=${page}: ${response.status} ${response.text}`);
        if (response.status === 400) {
          expectError(response, 400, 'VALIDATION_FAILED');
        } else {
          const body = expectPage(response);
          assert.deepEqual(body.data, []);
          assert.equal(body.meta.total, total);
        }
      }
    });
  });

  describe('DELETE /users/:id (admin)', () => {
    it('when the admin deletes a user, then 204, the user is 404, their tokens stop working and the email is free again', async () => {
      const victim = await registerAndLogin(client);
      const countBefore = await liveUserCount();
      assert.equal((await client.get(ME, { token: victim.accessToken })).status, 200);

      const response = await client.delete(`${USERS}/${victim.user.id}`, { token: admin.accessToken });
      assert.equal(response.status, 204, response.text);
      assert.equal(response.text, '');
      expectError(await eventually(() => client.get(ME, { token: victim.accessToken }), 401), 401, 'UNAUTHENTICATED');

      expectError(await client.get(`${USERS}/${victim.user.id}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.delete(`${USERS}/${victim.user.id}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
      expectError(await client.patch(`${USERS}/${victim.user.id}`, { name: 'Ghost' }, { token: admin.accessToken }), 404, 'NOT_FOUND');
      assert.equal(await liveUserCount(), countBefore - 1);
      const listed = expectPage(await client.get(`${USERS}?limit=100`, { token: admin.accessToken }));
      assert.ok(!listed.data.some((user) => user.id === victim.user.id), 'deleted user still listed');

      expectError(await client.post('/api/v1/auth/refresh', { refreshToken: victim.refreshToken }), 401, 'INVALID_REFRESH_TOKEN');
      expectError(
        await client.post('/api/v1/auth/login', { email: victim.user.email, password: victim.password }),
        401,
        'INVALID_CREDENTIALS',
      );

      const again = await client.post('/api/v1/auth/register', { email: victim.user.email, name: 'Reborn', password: 'reborn-pw-1' });
      const reborn = expectUserBody(again, 201);
      assert.notEqual(reborn.id, victim.user.id);
      assert.equal(reborn.email, victim.user.email);
      const rebornSession = await login(client, victim.user.email, 'reborn-pw-1');
      assert.equal(rebornSession.user.id, reborn.id);
      // The old token does not come back to life through the new user with the same email.
      expectError(await client.get(ME, { token: victim.accessToken }), 401, 'UNAUTHENTICATED');
    });

    it('when the admin deletes an absent id, then 404 NOT_FOUND', async () => {
      expectError(await client.delete(`${USERS}/${randomUUID()}`, { token: admin.accessToken }), 404, 'NOT_FOUND');
    });
  });

  describe('secrets in responses', () => {
    it('when any user-returning endpoint answers, then no body has a password, hash or token-version field or the password itself', async () => {
      // Every response of this suite goes through `guarded`; this test touches each endpoint on purpose.
      const password = 'leak-check-password-1';
      const email = uniqueEmail('leak');
      const responses: ApiResponse<unknown>[] = [];
      responses.push(await client.post('/api/v1/auth/register', { email, name: 'Leak', password }));
      const loggedIn = await client.post<{ data: { accessToken: string; user: User } }>('/api/v1/auth/login', { email, password });
      responses.push(loggedIn);
      const token = loggedIn.body.data.accessToken;
      const id = loggedIn.body.data.user.id;
      responses.push(await client.get(ME, { token }));
      responses.push(await client.get(`${USERS}/${id}`, { token }));
      responses.push(await client.patch(`${USERS}/${id}`, { name: 'Leak 2' }, { token }));
      responses.push(await client.get(`${USERS}?limit=100`, { token: admin.accessToken }));
      responses.push(await client.post(USERS, { email: uniqueEmail('leak'), name: 'Leak 3', password }, { token: admin.accessToken }));
      responses.push(await client.post(USERS, { email, name: 'Leak dup', password }, { token: admin.accessToken }));
      for (const response of responses) {
        assert.ok(response.status < 500, response.text);
        assert.deepEqual(findSecretFields(response.body), []);
        assert.ok(!response.text.includes(password), `password echoed: ${response.text}`);
        assert.ok(!response.text.includes('$argon2'), `hash echoed: ${response.text}`);
      }
    });
  });
});
