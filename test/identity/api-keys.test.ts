// Contract: "API keys" — creating, listing and revoking keys; using one as `Authorization: Bearer bsk_…`
// on the REST routes its scopes cover (and 403 on every other route that takes a token); unknown,
// revoked, expired keys and deleted owners 401; a per-key rate limit; lastUsedAt written in batches.
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { describe, it as unitTest } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { API_KEY_SCOPES, apiKeyScopesAllowedFor, authorize, can, keyCovers, type ApiKeyScope, type Permission, type Principal } from '../../src/components/access/index.js';
import { recordLastUses } from '../../src/components/api-keys/api-keys.repo.js';
import { DomainError } from '../../src/platform/errors.js';
import { login, loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import type { ApiResponse, Client } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { expectError, ISO_UTC, pathsOf, UUID } from '../helpers/errors.js';
import type { TestServer } from '../helpers/server.js';
import { dataOf as graphqlData, errorOf, gql } from '../graphql/gql.js';

const KEYS = '/api/v1/api-keys';
const ME = '/api/v1/users/me';
/** The per-key budget of the suite's server: small enough to exhaust, large enough for every other test. */
const KEY_RATE_LIMIT = 40;

interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: ApiKeyScope[];
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
}
interface ApiKeyWithSecret extends ApiKey {
  secret: string;
}

const KEY_FIELDS = ['createdAt', 'expiresAt', 'id', 'lastUsedAt', 'name', 'prefix', 'scopes'];

function expectApiKey(value: unknown, options: { withSecret: boolean }): ApiKeyWithSecret {
  assert.ok(value && typeof value === 'object');
  assert.deepEqual(Object.keys(value).sort(), options.withSecret ? [...KEY_FIELDS, 'secret'].sort() : KEY_FIELDS);
  const key = value as ApiKeyWithSecret;
  assert.match(key.id, UUID);
  assert.equal(typeof key.name, 'string');
  assert.match(key.prefix, /^bsk_[A-Za-z0-9_-]{8}$/);
  assert.ok(Array.isArray(key.scopes) && key.scopes.length > 0);
  for (const scope of key.scopes) assert.ok((API_KEY_SCOPES as readonly string[]).includes(scope), scope);
  assert.match(key.createdAt, ISO_UTC);
  if (key.expiresAt !== null) assert.match(key.expiresAt, ISO_UTC);
  if (key.lastUsedAt !== null) assert.match(key.lastUsedAt, ISO_UTC);
  if (options.withSecret) {
    assert.match(key.secret, /^bsk_[A-Za-z0-9_-]{43}$/);
    assert.ok(key.secret.startsWith(key.prefix), 'the prefix is the start of the secret');
  }
  return key;
}

const dataOf = <T>(response: ApiResponse<unknown>): T => (response.body as { data: T }).data;
const sha256 = (value: string) => createHash('sha256').update(value).digest();
const daysFromNow = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString();

/** A principal as an API key of `role` with `scopes` makes it. */
const keyPrincipal = (role: 'user' | 'admin', scopes: ApiKeyScope[]): Principal => ({
  userId: 'owner',
  role,
  apiKey: { id: 'key', scopes },
});
const codeOf = (run: () => void): string | undefined => {
  try {
    run();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof DomainError);
    return error.code;
  }
};

describe('API key scopes (access rules)', () => {
  const covered: Record<ApiKeyScope, Permission[]> = {
    'users:read': ['users:read'],
    'users:write': ['users:update'],
    'ledger:read': ['accounts:read', 'accounts:list', 'transfers:read'],
    'ledger:write': ['accounts:create', 'accounts:withdraw', 'transfers:create'],
  };
  const adminOnly: Permission[] = [
    'users:list',
    'users:create',
    'users:delete',
    'users:assign-role',
    'accounts:create-for-others',
    'accounts:list-system',
    'accounts:deposit',
    'webhooks:manage',
    'audit:read',
    'api-keys:manage',
  ];

  unitTest('when a role is asked which scopes its keys may hold, then both roles allow all four (each covers a permission the role has)', () => {
    assert.deepEqual(apiKeyScopesAllowedFor('user'), [...API_KEY_SCOPES]);
    assert.deepEqual(apiKeyScopesAllowedFor('admin'), [...API_KEY_SCOPES]);
  });

  unitTest('when a key has one scope, then it may use exactly that scope\'s permissions, with its owner\'s role rules on top', () => {
    for (const scope of API_KEY_SCOPES) {
      for (const [otherScope, permissions] of Object.entries(covered) as [ApiKeyScope, Permission[]][]) {
        for (const permission of permissions) {
          assert.equal(keyCovers([scope], permission), scope === otherScope, `${scope} covers ${permission}?`);
          const user = keyPrincipal('user', [scope]);
          // Own resource: allowed only when covered; someone else's: NOT_FOUND when covered (the role rule).
          assert.equal(codeOf(() => authorize(user, permission, ['owner'])), scope === otherScope ? undefined : 'FORBIDDEN', `${scope}: ${permission}`);
          assert.equal(codeOf(() => authorize(user, permission, ['someone'])), scope === otherScope ? 'NOT_FOUND' : 'FORBIDDEN', `${scope}: ${permission} of another`);
        }
      }
    }
  });

  unitTest('when an admin\'s key has every scope, then every admin-only permission is still FORBIDDEN, and what it covers applies to anyone\'s resources', () => {
    const key = keyPrincipal('admin', [...API_KEY_SCOPES]);
    for (const permission of adminOnly) {
      assert.equal(codeOf(() => authorize(key, permission)), 'FORBIDDEN', permission);
      assert.equal(can(key, permission, ['someone']), false, permission);
    }
    assert.equal(codeOf(() => authorize(key, 'accounts:read', ['someone'])), undefined);
    // Without a key, the same admin may do all of it.
    for (const permission of adminOnly) assert.equal(codeOf(() => authorize({ userId: 'owner', role: 'admin' }, permission)), undefined, permission);
  });
});

describeOnBackends('api keys', ({ it, before, startServer }) => {
  let server: TestServer;
  let client: Client;
  let admin: Session;
  let user: Session & { password: string };

  before(async () => {
    server = await startServer({ API_KEY_RATE_LIMIT_MAX: String(KEY_RATE_LIMIT), API_KEY_RATE_LIMIT_WINDOW_MS: '3600000' });
    client = server.client;
    admin = await loginAdmin(client);
    user = await registerAndLogin(client);
  });

  const createKey = async (token: string, body: Record<string, unknown>): Promise<ApiKeyWithSecret> => {
    const response = await client.post(KEYS, body, { token });
    assert.equal(response.status, 201, response.text);
    return expectApiKey(dataOf(response), { withSecret: true });
  };
  const allScopes = (token: string, name = 'all scopes') => createKey(token, { name, scopes: [...API_KEY_SCOPES] });
  const listKeys = async (token: string, query = ''): Promise<{ data: ApiKey[]; meta: { nextCursor: string | null } }> => {
    const response = await client.get(`${KEYS}${query}`, { token });
    assert.equal(response.status, 200, response.text);
    const body = response.body as { data: ApiKey[]; meta: { nextCursor: string | null } };
    assert.deepEqual(Object.keys(body).sort(), ['data', 'meta']);
    assert.deepEqual(Object.keys(body.meta), ['nextCursor']);
    for (const key of body.data) expectApiKey(key, { withSecret: false });
    return body;
  };
  const keyRow = (id: string) =>
    server.app.database.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it('when a user creates a key, then 201 with the key and its bsk_ secret (no-store), which works as a bearer token; lists never show the secret and the database holds only its SHA-256', async () => {
    const response = await client.post(KEYS, { name: 'CI deploys', scopes: ['users:read', 'ledger:read'] }, { token: user.accessToken });
    assert.equal(response.status, 201, response.text);
    assert.match(response.headers.get('cache-control') ?? '', /no-store/);
    const key = expectApiKey(dataOf(response), { withSecret: true });
    assert.equal(key.name, 'CI deploys');
    assert.deepEqual(key.scopes, ['users:read', 'ledger:read']);
    assert.equal(key.expiresAt, null);
    assert.equal(key.lastUsedAt, null);

    const me = await client.get(ME, { token: key.secret });
    assert.equal(me.status, 200, me.text);
    assert.equal(dataOf<{ id: string }>(me).id, user.user.id);

    const listed = await listKeys(user.accessToken);
    const { secret, ...withoutSecret } = key;
    assert.deepEqual(listed.data.find((entry) => entry.id === key.id), withoutSecret);
    const listText = (await client.get(KEYS, { token: user.accessToken })).text;
    assert.ok(!listText.includes(secret), 'the secret appears in the list');

    const row = await keyRow(key.id);
    assert.deepEqual(Buffer.from(row.secret_hash), sha256(secret));
    assert.ok(!JSON.stringify(row).includes(secret.slice(4)), 'the secret is stored');
    assert.equal(row.owner_id, user.user.id);
  });

  it('when a key is created with an expiry, then it is kept to the millisecond and shown', async () => {
    const expiresAt = daysFromNow(30);
    const key = await createKey(user.accessToken, { name: 'expiring', scopes: ['ledger:read'], expiresAt });
    assert.equal(key.expiresAt, expiresAt);
  });

  it('when the body is invalid, then 400 VALIDATION_FAILED naming the field', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: '', scopes: ['users:read'] }, 'name'],
      [{ name: 'x'.repeat(101), scopes: ['users:read'] }, 'name'],
      [{ scopes: ['users:read'] }, 'name'],
      [{ name: 'k', scopes: [] }, 'scopes'],
      [{ name: 'k' }, 'scopes'],
      [{ name: 'k', scopes: ['users:read', 'users:read'] }, 'scopes'],
      [{ name: 'k', scopes: ['users:admin'] }, 'scopes'],
      [{ name: 'k', scopes: ['users:read'], expiresAt: new Date(Date.now() - 60_000).toISOString() }, 'expiresAt'],
      [{ name: 'k', scopes: ['users:read'], expiresAt: daysFromNow(367) }, 'expiresAt'],
      [{ name: 'k', scopes: ['users:read'], expiresAt: 'tomorrow' }, 'expiresAt'],
      [{ name: 'k', scopes: ['users:read'], secret: 'bsk_mine' }, 'secret'],
    ];
    for (const [body, path] of cases) {
      const error = expectError(await client.post(KEYS, body, { token: user.accessToken }), 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).some((named) => named === path || named.startsWith(`${path}`)), `${JSON.stringify(body)}: ${JSON.stringify(pathsOf(error))}`);
    }
    // At most 366 days is allowed.
    await createKey(user.accessToken, { name: 'a year', scopes: ['users:read'], expiresAt: daysFromNow(365.9) });
  });

  it('when a non-admin passes ownerId (even their own), then 403; an admin may create a key for a user, which acts as that user; an absent owner is 404', async () => {
    for (const ownerId of [user.user.id, admin.user.id]) {
      expectError(await client.post(KEYS, { name: 'k', scopes: ['users:read'], ownerId }, { token: user.accessToken }), 403, 'FORBIDDEN');
    }
    const key = await createKey(admin.accessToken, { name: 'for the user', scopes: ['users:read'], ownerId: user.user.id.toUpperCase() });
    const me = await client.get(ME, { token: key.secret });
    assert.equal(me.status, 200, me.text);
    assert.equal(dataOf<{ id: string }>(me).id, user.user.id);
    assert.ok((await listKeys(user.accessToken)).data.some((entry) => entry.id === key.id), 'the owner lists it');
    assert.ok(!(await listKeys(admin.accessToken)).data.some((entry) => entry.id === key.id), "not among the admin's own keys");
    expectError(await client.post(KEYS, { name: 'k', scopes: ['users:read'], ownerId: randomUUID() }, { token: admin.accessToken }), 404, 'NOT_FOUND');
  });

  it('when keys are listed, then newest first, page by page with meta.nextCursor, revoked ones left out; an admin may list anyone\'s with ?ownerId=, a user may not', async () => {
    const owner = await registerAndLogin(client);
    const created: ApiKeyWithSecret[] = [];
    for (let index = 0; index < 5; index++) created.push(await createKey(owner.accessToken, { name: `key ${index}`, scopes: ['users:read'] }));
    const revokedKey = created[2] as ApiKeyWithSecret;
    assert.equal((await client.delete(`${KEYS}/${revokedKey.id}`, { token: owner.accessToken })).status, 204);
    const expected = created.filter((key) => key.id !== revokedKey.id).reverse().map((key) => key.id);

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await listKeys(owner.accessToken, `?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      assert.ok(page.data.length <= 2);
      seen.push(...page.data.map((key) => key.id));
      cursor = page.meta.nextCursor;
      pages++;
    } while (cursor !== null && pages < 10);
    assert.deepEqual(seen, expected);
    assert.equal(pages, 2);

    assert.deepEqual((await listKeys(admin.accessToken, `?ownerId=${owner.user.id}`)).data.map((key) => key.id), expected);
    expectError(await client.get(`${KEYS}?ownerId=${owner.user.id}`, { token: user.accessToken }), 403, 'FORBIDDEN');
    expectError(await client.get(`${KEYS}?cursor=not-a-cursor!`, { token: owner.accessToken }), 400, 'VALIDATION_FAILED');
    expectError(await client.get(KEYS), 401, 'UNAUTHENTICATED');
  });

  it("when a key is revoked, then 204 and it is 401 at once; revoking it again, or someone else's key, is 404 (the other key keeps working); an admin may revoke anyone's", async () => {
    const key = await allScopes(user.accessToken);
    assert.equal((await client.get(ME, { token: key.secret })).status, 200);
    const deleted = await client.delete(`${KEYS}/${key.id}`, { token: user.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    assert.equal(deleted.text, '');
    expectError(await client.get(ME, { token: key.secret }), 401, 'UNAUTHENTICATED');
    expectError(await client.delete(`${KEYS}/${key.id}`, { token: user.accessToken }), 404, 'NOT_FOUND');
    assert.ok((await keyRow(key.id)).revoked_at instanceof Date);

    const others = await allScopes(admin.accessToken);
    expectError(await client.delete(`${KEYS}/${others.id}`, { token: user.accessToken }), 404, 'NOT_FOUND');
    expectError(await client.delete(`${KEYS}/${randomUUID()}`, { token: user.accessToken }), 404, 'NOT_FOUND');
    assert.equal((await client.get(ME, { token: others.secret })).status, 200);

    const users = await allScopes(user.accessToken);
    assert.equal((await client.delete(`${KEYS}/${users.id}`, { token: admin.accessToken })).status, 204);
    expectError(await client.get(ME, { token: users.secret }), 401, 'UNAUTHENTICATED');
  });

  it('when one key is revoked by 6 requests at once, then exactly one is 204 and the others 404', async () => {
    const key = await allScopes(user.accessToken);
    const responses = await Promise.all(Array.from({ length: 6 }, () => client.delete(`${KEYS}/${key.id}`, { token: user.accessToken })));
    assert.deepEqual(responses.map((response) => response.status).sort(), [204, 404, 404, 404, 404, 404]);
  });

  it("when a key's state and its owner's are in this instance's memory, then authentication answers synchronously with the owner narrowed to the key's scopes", async () => {
    const key = await createKey(user.accessToken, { name: 'hot', scopes: ['users:read', 'ledger:read'] });
    const first = server.app.auth.authenticate(key.secret);
    if (first instanceof Promise) await first;
    const second = server.app.auth.authenticate(key.secret);
    assert.ok(!(second instanceof Promise), 'a promise although both states are in memory');
    assert.deepEqual(second, { userId: user.user.id, role: 'user', apiKey: { id: key.id, scopes: ['users:read', 'ledger:read'] } });
  });

  it('when unknown, malformed or altered secrets are presented, then 401 UNAUTHENTICATED', async () => {
    const key = await allScopes(user.accessToken);
    const altered = `${key.secret.slice(0, -1)}${key.secret.endsWith('A') ? 'B' : 'A'}`;
    for (const secret of [altered, `bsk_${'A'.repeat(43)}`, 'bsk_', 'bsk_short', `${key.secret}x`, key.prefix]) {
      expectError(await client.get(ME, { token: secret }), 401, 'UNAUTHENTICATED');
    }
  });

  describe('scopes on routes', () => {
    /** What each scope's routes need: the key's owner with two accounts, money, and a transfer. */
    interface Fixture {
      owner: Session & { password: string };
      accountId: string;
      otherAccountId: string;
      transferId: string;
    }
    let fixture: Fixture;
    const idempotency = () => ({ headers: { 'idempotency-key': randomUUID() } });

    before(async () => {
      const owner = await registerAndLogin(client);
      const open = async () => {
        const response = await client.post('/api/v1/accounts', { currency: 'EUR' }, { token: owner.accessToken });
        assert.equal(response.status, 201, response.text);
        return dataOf<{ id: string }>(response).id;
      };
      const [accountId, otherAccountId] = [await open(), await open()];
      const deposit = await client.post(`/api/v1/accounts/${accountId}/deposits`, { amount: 100_000 }, { token: admin.accessToken, ...idempotency() });
      assert.equal(deposit.status, 201, deposit.text);
      const transfer = await client.post('/api/v1/transfers', { fromAccountId: accountId, toAccountId: otherAccountId, amount: 100 }, { token: owner.accessToken, ...idempotency() });
      assert.equal(transfer.status, 201, transfer.text);
      fixture = { owner, accountId, otherAccountId, transferId: dataOf<{ id: string }>(transfer).id };
    });

    /** Each scope's routes, as requests a key with that scope makes successfully. */
    const routesOf = (): Record<ApiKeyScope, Array<{ name: string; send: (secret: string) => Promise<ApiResponse<unknown>>; status: number }>> => {
      const { owner, accountId, otherAccountId, transferId } = fixture;
      const pending = async (secret: string) => {
        const response = await client.post('/api/v1/transfers', { fromAccountId: accountId, toAccountId: otherAccountId, amount: 5, pending: true }, { token: secret, ...idempotency() });
        assert.equal(response.status, 201, response.text);
        return dataOf<{ id: string }>(response).id;
      };
      return {
        'users:read': [
          { name: 'GET /users/me', send: (secret) => client.get(ME, { token: secret }), status: 200 },
          { name: 'GET /users/:id', send: (secret) => client.get(`/api/v1/users/${owner.user.id}`, { token: secret }), status: 200 },
        ],
        'users:write': [
          { name: 'PATCH /users/:id', send: (secret) => client.patch(`/api/v1/users/${owner.user.id}`, { name: 'Renamed by key' }, { token: secret }), status: 200 },
        ],
        'ledger:read': [
          { name: 'GET /accounts', send: (secret) => client.get('/api/v1/accounts', { token: secret }), status: 200 },
          { name: 'GET /accounts/:id', send: (secret) => client.get(`/api/v1/accounts/${accountId}`, { token: secret }), status: 200 },
          { name: 'GET /accounts/:id/transfers', send: (secret) => client.get(`/api/v1/accounts/${accountId}/transfers`, { token: secret }), status: 200 },
          { name: 'GET /transfers/:id', send: (secret) => client.get(`/api/v1/transfers/${transferId}`, { token: secret }), status: 200 },
        ],
        'ledger:write': [
          { name: 'POST /accounts', send: (secret) => client.post('/api/v1/accounts', { currency: 'EUR' }, { token: secret }), status: 201 },
          { name: 'POST /accounts/:id/withdrawals', send: (secret) => client.post(`/api/v1/accounts/${accountId}/withdrawals`, { amount: 1 }, { token: secret, ...idempotency() }), status: 201 },
          { name: 'POST /transfers', send: (secret) => client.post('/api/v1/transfers', { fromAccountId: accountId, toAccountId: otherAccountId, amount: 1 }, { token: secret, ...idempotency() }), status: 201 },
          {
            name: 'POST /transfers/:id/post',
            send: async (secret) => client.post(`/api/v1/transfers/${await pending(fixture.owner.accessToken)}/post`, {}, { token: secret }),
            status: 201,
          },
          {
            name: 'POST /transfers/:id/void',
            send: async (secret) => client.post(`/api/v1/transfers/${await pending(fixture.owner.accessToken)}/void`, {}, { token: secret }),
            status: 201,
          },
        ],
      };
    };

    it("when a key has one scope, then that scope's routes answer as for its owner, and every other scope's routes are 403", async () => {
      const routes = routesOf();
      for (const scope of API_KEY_SCOPES) {
        const key = await createKey(fixture.owner.accessToken, { name: `only ${scope}`, scopes: [scope] });
        for (const [routeScope, entries] of Object.entries(routes) as [ApiKeyScope, (typeof routes)[ApiKeyScope]][]) {
          for (const route of entries) {
            const response = await route.send(key.secret);
            if (routeScope === scope) assert.equal(response.status, route.status, `${scope} key on ${route.name}: ${response.text}`);
            else expectError(response, 403, 'FORBIDDEN');
          }
        }
      }
    });

    it("when a key's scope covers a route, then someone else's resource is still 404 (the owner's role rules apply)", async () => {
      const key = await allScopes(fixture.owner.accessToken);
      expectError(await client.get(`/api/v1/users/${user.user.id}`, { token: key.secret }), 404, 'NOT_FOUND');
      const othersAccount = await client.post('/api/v1/accounts', { currency: 'EUR' }, { token: user.accessToken });
      expectError(await client.get(`/api/v1/accounts/${dataOf<{ id: string }>(othersAccount).id}`, { token: key.secret }), 404, 'NOT_FOUND');
      // Admin-only options of covered routes stay the admin's.
      expectError(await client.patch(`/api/v1/users/${fixture.owner.user.id}`, { role: 'admin' }, { token: key.secret }), 403, 'FORBIDDEN');
    });

    it('when a key with every scope (of a user, and of an admin) calls any other route that takes a token, then 403 FORBIDDEN: admin-only, /auth/*, /api-keys (every route in the OpenAPI document)', async () => {
      const documented = await client.get('/docs/json');
      assert.equal(documented.status, 200);
      const paths = (documented.body as { paths: Record<string, Record<string, { security?: unknown[] }>> }).paths;
      const covered = new Set([
        'GET /api/v1/users/me',
        'GET /api/v1/users/{id}',
        'PATCH /api/v1/users/{id}',
        'GET /api/v1/accounts',
        'POST /api/v1/accounts',
        'GET /api/v1/accounts/{id}',
        'POST /api/v1/accounts/{id}/withdrawals',
        'GET /api/v1/accounts/{id}/transfers',
        'POST /api/v1/transfers',
        'GET /api/v1/transfers/{id}',
        'POST /api/v1/transfers/{id}/post',
        'POST /api/v1/transfers/{id}/void',
      ]);
      // Bodies valid for the route, where its use case (not a hook) refuses keys after validation.
      const bodies: Record<string, unknown> = {
        'POST /api/v1/auth/password': { currentPassword: fixture.owner.password, newPassword: 'a-new-password-9' },
        'POST /api/v1/auth/mfa/totp/confirm': { code: '123456' },
        'DELETE /api/v1/auth/mfa/totp': { code: '123456' },
        'POST /api/v1/users': { email: uniqueEmail('by-key'), name: 'By Key', password: 'by-key-password-1' },
        'POST /api/v1/users/{id}/closure': {},
      };
      const secured = Object.entries(paths).flatMap(([path, operations]) =>
        Object.entries(operations)
          .filter(([, operation]) => Array.isArray(operation.security) && operation.security.length > 0)
          .map(([method, operation]) => ({ route: `${method.toUpperCase()} ${path}`, method: method.toUpperCase(), path, operation })),
      );
      const refused = secured.filter(({ route }) => !covered.has(route));
      for (const route of covered) assert.ok(secured.some((entry) => entry.route === route), `${route} is not documented any more`);
      for (const expected of ['POST /api/v1/auth/logout-all', 'POST /api/v1/auth/password', 'POST /api/v1/api-keys', 'GET /api/v1/api-keys', 'DELETE /api/v1/api-keys/{id}', 'DELETE /api/v1/users/{id}']) {
        assert.ok(refused.some((entry) => entry.route === expected), `${expected} missing from the document`);
      }

      const keys = [await allScopes(fixture.owner.accessToken, 'user, every scope'), await allScopes(admin.accessToken, 'admin, every scope')];
      for (const key of keys) {
        for (const { route, method, path } of refused) {
          const url = path.replace(/\{[A-Za-z]+\}/g, () => randomUUID());
          const body = bodies[route] ?? (method === 'POST' || method === 'PATCH' ? {} : undefined);
          const response = await client.request(method, url, body, { token: key.secret, headers: { 'idempotency-key': randomUUID() } });
          assert.equal(response.status, 403, `${key.name} on ${route}: ${response.status} ${response.text}`);
          expectError(response, 403, 'FORBIDDEN');
        }
      }
      // The owner's credentials were not touched by any of it.
      assert.equal((await client.get(ME, { token: fixture.owner.accessToken })).status, 200);
      await login(client, fixture.owner.user.email, fixture.owner.password);
    });
  });

  it('when a key has expired, then 401 (whether it expired by the clock or was found expired in the database)', async () => {
    const soon = await createKey(user.accessToken, { name: 'soon', scopes: ['users:read'], expiresAt: new Date(Date.now() + 1_500).toISOString() });
    assert.equal((await client.get(ME, { token: soon.secret })).status, 200);
    await sleep(Math.max(0, new Date(soon.expiresAt ?? 0).getTime() - Date.now()) + 50);
    expectError(await client.get(ME, { token: soon.secret }), 401, 'UNAUTHENTICATED');

    const dated = await createKey(user.accessToken, { name: 'dated', scopes: ['users:read'], expiresAt: daysFromNow(10) });
    await sql`update api_keys set expires_at = now() - interval '1 second' where id = ${dated.id}::uuid`.execute(server.app.database.db);
    expectError(await client.get(ME, { token: dated.secret }), 401, 'UNAUTHENTICATED');
  });

  it("when a key's owner is deleted, then the key is 401 at once and revoked in the deletion's transaction", async () => {
    const email = uniqueEmail('key-owner');
    const created = await client.post('/api/v1/users', { email, name: 'Owner', password: 'owner-password-1' }, { token: admin.accessToken });
    assert.equal(created.status, 201, created.text);
    const owner = await login(client, email, 'owner-password-1');
    const key = await allScopes(owner.accessToken);
    assert.equal((await client.get(ME, { token: key.secret })).status, 200);
    const deleted = await client.delete(`/api/v1/users/${owner.user.id}`, { token: admin.accessToken });
    assert.equal(deleted.status, 204, deleted.text);
    expectError(await client.get(ME, { token: key.secret }), 401, 'UNAUTHENTICATED');
    expectError(await client.get('/api/v1/accounts', { token: key.secret }), 401, 'UNAUTHENTICATED');
    assert.ok((await keyRow(key.id)).revoked_at instanceof Date);
    assert.deepEqual((await listKeys(admin.accessToken, `?ownerId=${owner.user.id}`)).data, []);
  });

  it('when a key is created for a user while that user is being deleted, then the key never works afterwards (creation locks the owner)', async () => {
    const outcomes = { createdThenRevoked: 0, refused: 0 };
    for (let round = 0; round < 5; round++) {
      const email = uniqueEmail('racing-owner');
      const created = await client.post('/api/v1/users', { email, name: 'Racing', password: 'racing-password-1' }, { token: admin.accessToken });
      const ownerId = dataOf<{ id: string }>(created).id;
      const [creation, deletion] = await Promise.all([
        client.post(KEYS, { name: 'racing', scopes: ['users:read'], ownerId }, { token: admin.accessToken }),
        client.delete(`/api/v1/users/${ownerId}`, { token: admin.accessToken }),
      ]);
      assert.equal(deletion.status, 204, deletion.text);
      if (creation.status === 201) {
        const key = expectApiKey(dataOf(creation), { withSecret: true });
        expectError(await client.get(ME, { token: key.secret }), 401, 'UNAUTHENTICATED');
        assert.ok((await keyRow(key.id)).revoked_at instanceof Date, 'a key created before the deletion is revoked by it');
        outcomes.createdThenRevoked++;
      } else {
        expectError(creation, 404, 'NOT_FOUND');
        outcomes.refused++;
      }
    }
    process.stdout.write(`# creation vs deletion: ${JSON.stringify(outcomes)}\n`);
  });

  it(`when a key makes more than API_KEY_RATE_LIMIT_MAX (${KEY_RATE_LIMIT}) requests in the window, then 429 RATE_LIMITED with Retry-After; its owner's other key and access token are not limited`, async () => {
    const key = await createKey(user.accessToken, { name: 'busy', scopes: ['users:read'] });
    for (let index = 0; index < KEY_RATE_LIMIT; index++) {
      const response = await client.get(ME, { token: key.secret });
      assert.equal(response.status, 200, `request ${index + 1}: ${response.text}`);
    }
    const refused = await client.get(ME, { token: key.secret });
    expectError(refused, 429, 'RATE_LIMITED');
    const retryAfter = Number(refused.headers.get('retry-after'));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After: ${refused.headers.get('retry-after')}`);
    assert.equal(refused.headers.get('ratelimit-limit'), String(KEY_RATE_LIMIT));
    assert.equal(refused.headers.get('ratelimit-remaining'), '0');
    const other = await createKey(user.accessToken, { name: 'idle', scopes: ['users:read'] });
    assert.equal((await client.get(ME, { token: other.secret })).status, 200);
    assert.equal((await client.get(ME, { token: user.accessToken })).status, 200);
  });

  it('when a key spends its budget over REST and GraphQL together, then both protocols refuse it: one budget per key, whatever the transport', async () => {
    const key = await createKey(user.accessToken, { name: 'two protocols', scopes: ['users:read'] });
    const meQuery = '{ me { id } }';
    for (let index = 0; index < KEY_RATE_LIMIT; index++) {
      if (index % 2 === 0) assert.equal((await client.get(ME, { token: key.secret })).status, 200, `REST request ${index + 1}`);
      else graphqlData(await gql(client, meQuery, {}, { token: key.secret }));
    }
    const error = errorOf(await gql(client, meQuery, {}, { token: key.secret }), 'RATE_LIMITED', 429);
    assert.ok(typeof error.extensions['retryAfterSeconds'] === 'number' && error.extensions['retryAfterSeconds'] >= 1, JSON.stringify(error));
    expectError(await client.get(ME, { token: key.secret }), 429, 'RATE_LIMITED');
  });

  it('when a key is used, then lastUsedAt is written by the next flush (not per request) and never moves back', async () => {
    const key = await createKey(user.accessToken, { name: 'used', scopes: ['users:read'] });
    await server.app.apiKeys.flushUsage();
    const usedFrom = Date.now();
    assert.equal((await client.get(ME, { token: key.secret })).status, 200);
    const usedUntil = Date.now();
    // Not written per request.
    assert.equal((await keyRow(key.id)).last_used_at, null);
    const listedBefore = (await listKeys(user.accessToken)).data.find((entry) => entry.id === key.id);
    assert.equal(listedBefore?.lastUsedAt, null);

    assert.ok((await server.app.apiKeys.flushUsage()) >= 1);
    const listed = (await listKeys(user.accessToken)).data.find((entry) => entry.id === key.id);
    assert.ok(listed?.lastUsedAt, 'lastUsedAt after the flush');
    const at = new Date(listed.lastUsedAt).getTime();
    assert.ok(at >= usedFrom - 5 && at <= usedUntil + 5, `lastUsedAt ${listed.lastUsedAt} outside the request's time`);

    // An older use (another instance's late flush) does not move it back.
    assert.equal(await recordLastUses(server.app.database.db, [{ id: key.id, usedAt: new Date(at - 60_000) }]), 1);
    assert.equal((await keyRow(key.id)).last_used_at?.getTime(), at);
  });

  it('when a key is created and revoked, then the audit log records api_key.created and api_key.revoked without the secret', async () => {
    const key = await allScopes(user.accessToken, 'audited');
    assert.equal((await client.delete(`${KEYS}/${key.id}`, { token: user.accessToken })).status, 204);
    for (const action of ['api_key.created', 'api_key.revoked']) {
      const response = await client.get(`/api/v1/audit?action=${action}&targetId=${key.id}`, { token: admin.accessToken });
      assert.equal(response.status, 200, response.text);
      const events = (response.body as { data: Array<{ action: string; actorId: string; targetId: string }> }).data;
      assert.equal(events.length, 1, `${action}: ${response.text}`);
      assert.equal(events[0]?.actorId, user.user.id);
      assert.ok(!response.text.includes(key.secret.slice(4)), 'the secret is in the audit log');
    }
  });
});
