// Property-based fuzzing of every body and query of the auth and users routes. Whatever arrives --
// arbitrary JSON, near-valid bodies with one field wrong, extra keys, huge or unicode strings, NUL
// bytes, numbers as strings, raw non-JSON text under any content type -- the service answers:
//   - never 5xx;
//   - on 4xx, the contract's error body, with a code the contract lists for that status;
//   - rows are created only by a 2xx (users and refresh_tokens are counted around every request).
// Well-formed inputs may legitimately succeed; the properties hold either way.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import { backends } from '../helpers/backends.js';
import type { ApiResponse } from '../helpers/client.js';
import { startServer, type TestServer } from '../helpers/server.js';

const NUM_RUNS = Number(process.env['FUZZ_RUNS'] ?? 150);
const SEED = process.env['FUZZ_SEED'] === undefined ? undefined : Number(process.env['FUZZ_SEED']);
const runOptions = { numRuns: NUM_RUNS, ...(SEED === undefined ? {} : { seed: SEED }) };

/** The codes the contract allows for each status. */
const CODES_BY_STATUS: Readonly<Record<number, readonly string[]>> = {
  400: ['VALIDATION_FAILED', 'INVALID_JSON'],
  401: ['UNAUTHENTICATED', 'INVALID_CREDENTIALS', 'INVALID_REFRESH_TOKEN', 'TOKEN_REUSED'],
  403: ['FORBIDDEN', 'INVALID_CURRENT_PASSWORD'],
  404: ['NOT_FOUND', 'ROUTE_NOT_FOUND'],
  409: ['EMAIL_TAKEN'],
  413: ['PAYLOAD_TOO_LARGE'],
  415: ['UNSUPPORTED_MEDIA_TYPE'],
  429: ['RATE_LIMITED'],
};

type Payload =
  | { readonly kind: 'json'; readonly value: unknown }
  | { readonly kind: 'raw'; readonly text: string; readonly contentType: string | undefined };

// ---------- generators ----------

const SPECIAL_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  'name with a NUL \u0000 inside',
  '\ud800',
  'lone \udfff surrogate',
  '\u202e\u0041\u202c',
  '\ufeff',
  '💥🔥',
  '１２３',
  '10',
  '-1',
  '1e3',
  'NaN',
  'null',
  'true',
  '[]',
  '{}',
  "' or '1'='1",
  "'; drop table users; --",
  '%00',
  '../../etc/passwd',
  '<script>alert(1)</script>',
  '${jndi:ldap://x/a}',
  '__proto__',
  'constructor',
  'admin@bastion.test',
  ' ADMIN@Bastion.TEST ',
];

const text: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 3, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom('a', 'é', '💥', '\u0000', '"'), fc.integer({ min: 100, max: 200_000 }))
      .map(([unit, count]) => unit.repeat(count)),
  },
);

const numberLikeString: fc.Arbitrary<string> = fc.oneof(
  fc.integer().map(String),
  fc.integer({ min: -5, max: 200 }).map(String),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(String),
  fc.double().map(String),
  fc.constantFrom('1e308', '1e20', '9007199254740993', '2147483648', '-0', '0', '1.0', '1.5', ' 1', '0x10', '+1', 'Infinity', '-Infinity', 'NaN', ''),
);

const json = fc.jsonValue({ maxDepth: 3 });
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: text },
  { weight: 2, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), numberLikeString) },
  { weight: 1, arbitrary: fc.array(json, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), json, { maxKeys: 4 }) },
  { weight: 1, arbitrary: text.map((value) => [value]) },
  { weight: 1, arbitrary: text.map((value) => ({ value })) },
);

/** A field: mostly a well-typed value (so validation is passed and the service is reached), else anything. */
const field = (wellTyped: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 3, arbitrary: wellTyped }, { weight: 1, arbitrary: anyValue });

const hex12 = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 12, maxLength: 12 });
const emailValue = field(
  fc.oneof(
    { weight: 3, arbitrary: fc.emailAddress() },
    { weight: 1, arbitrary: fc.emailAddress().map((email) => `  ${email.toUpperCase()} `) },
    { weight: 2, arbitrary: hex12.map((suffix) => `fuzz-${suffix}@example.com`) },
    { weight: 1, arbitrary: text.map((local) => `${local}@example.com`) },
  ),
);
const nameValue = field(
  fc.oneof(
    fc.string({ minLength: 1, maxLength: 100 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 100 }),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
    fc.constantFrom(...SPECIAL_STRINGS.filter((value) => value.length > 0)),
  ),
);
const passwordValue = field(
  fc.oneof(
    fc.string({ minLength: 8, maxLength: 128 }),
    fc.string({ unit: 'binary', minLength: 8, maxLength: 128 }),
    fc.string({ minLength: 1, maxLength: 10 }),
    fc.constantFrom('x'.repeat(128), 'x'.repeat(129), 'pass\u0000word!', '\u0000'.repeat(8)),
  ),
);
const refreshTokenValue = field(
  fc.oneof(
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes).toString('base64url')),
    fc.string({ minLength: 1, maxLength: 512 }),
    fc.constantFrom('x'.repeat(512), 'x'.repeat(513), '\u0000'),
  ),
);
const roleValue = field(fc.constantFrom('user', 'admin', 'Admin', 'ADMIN', 'root', 'superuser', ''));

const contentType = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'application/vnd.api+json',
  'application/json; charset=latin1',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/xml',
  undefined,
);
const rawText: fc.Arbitrary<string> = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  // truncated JSON
  json.map((value) => JSON.stringify(value) ?? '').chain((full) => fc.nat({ max: full.length }).map((cut) => full.slice(0, cut))),
  fc.constantFrom(
    '{"__proto__":{"role":"admin"}}',
    '{"constructor":{"prototype":{"role":"admin"}}}',
    '{"email":"a@example.com","email":"b@example.com"}',
    'null',
    '[]',
    '""',
    '0',
    '{',
    '{"a":',
    '\u0000',
    'NaN',
    '{"a":1}garbage',
    '{"email":"x@example.com","password":"\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000"}',
    `${'['.repeat(20_000)}${']'.repeat(20_000)}`,
    `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`,
  ),
);

const raw: fc.Arbitrary<Payload> = fc.record({ text: rawText, contentType }).map(({ text: body, contentType: type }) => ({
  kind: 'raw',
  text: body,
  contentType: type,
}));

/** Bodies for an endpoint with the given fields: complete, partial with extra keys, any JSON, raw text. */
function bodies(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Payload> {
  const extraKeys = fc.dictionary(
    fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom('role', 'id', 'isAdmin', 'password_hash', 'passwordHash', 'tokenVersion', 'deletedAt', 'Email'),
    ),
    anyValue,
    { minKeys: 1, maxKeys: 2 },
  );
  const partial = fc
    .tuple(fc.record(fields, { requiredKeys: [] }), fc.option(extraKeys, { freq: 2 }))
    .map(([known, extra]) => (extra === null ? known : { ...extra, ...known }));
  return fc.oneof(
    { weight: 5, arbitrary: fc.record(fields).map((value): Payload => ({ kind: 'json', value })) },
    { weight: 3, arbitrary: partial.map((value): Payload => ({ kind: 'json', value })) },
    { weight: 2, arbitrary: fc.jsonValue().map((value): Payload => ({ kind: 'json', value })) },
    { weight: 2, arbitrary: raw },
  );
}

/** Percent-encodes every byte, so any string (lone surrogates included) makes a valid URL. */
const encodeAll = (value: string): string =>
  [...Buffer.from(value, 'utf8')].map((byte) => `%${byte.toString(16).padStart(2, '0').toUpperCase()}`).join('');
const encodeSome = (value: string): string => {
  try {
    return encodeURIComponent(value);
  } catch {
    return encodeAll(value);
  }
};

const shortText = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom(...SPECIAL_STRINGS));

/** A path segment for :id. */
function idSegment(realIds: () => string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.nat().map((index) => { const ids = realIds(); return ids[index % ids.length] ?? ''; }) },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: fc.uuid().map((id) => id.toUpperCase()) },
    { weight: 2, arbitrary: shortText.map(encodeSome) },
    { weight: 1, arbitrary: shortText.map(encodeAll) },
    { weight: 1, arbitrary: fc.constantFrom('me', '..', '.', '%2e%2e', '%00', '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff') },
  );
}

const queryString: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .array(
        fc.tuple(
          fc.oneof({ weight: 4, arbitrary: fc.constantFrom('page', 'limit') }, { weight: 1, arbitrary: shortText }),
          fc.oneof({ weight: 3, arbitrary: numberLikeString }, { weight: 1, arbitrary: shortText }),
        ),
        { maxLength: 4 },
      )
      .map((pairs) => pairs.map(([key, value]) => `${encodeSome(key)}=${encodeSome(value)}`).join('&')),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'page',
      'page=',
      '=1',
      '&&&',
      'page=1&page=2',
      'limit=%zz',
      'page[]=1',
      'page[a]=1',
      'page=%00',
      'limit=1e2',
      'limit=0x10',
      'page=%2B1',
      'page=1e308',
      'page=99999999999999999999',
      'page=9007199254740993&limit=100',
      'page=1000000000000&limit=100',
      'limit=100&limit=1',
      'page=__proto__',
      '__proto__=1',
      'constructor=1',
    ),
  },
);

// ---------- checks ----------

const describePayload = (payload: Payload): string => {
  const shown = payload.kind === 'json' ? JSON.stringify(payload.value) ?? 'undefined' : `raw(${String(payload.contentType)}) ${payload.text}`;
  return shown.length > 300 ? `${shown.slice(0, 300)}… (${shown.length} chars)` : shown;
};

function assertContractResponse(response: ApiResponse, what: string): void {
  const context = `${what} -> ${response.status} ${response.text.slice(0, 500)}`;
  assert.ok(response.status < 500, `5xx: ${context}`);
  assert.ok(response.headers.get('x-request-id'), `no X-Request-Id: ${context}`);
  if (response.status < 400) return;
  const body = response.body as { error?: Record<string, unknown> } | undefined;
  assert.ok(body && typeof body === 'object' && !Array.isArray(body), `error body is not an object: ${context}`);
  assert.deepEqual(Object.keys(body), ['error'], `error body has other keys: ${context}`);
  const error = body.error;
  assert.ok(error && typeof error === 'object', `no error object: ${context}`);
  for (const key of Object.keys(error)) {
    assert.ok(['code', 'message', 'requestId', 'errors'].includes(key), `unexpected error key ${key}: ${context}`);
  }
  assert.equal(typeof error['code'], 'string', context);
  assert.match(String(error['code']), /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/, context);
  const allowed = CODES_BY_STATUS[response.status];
  assert.ok(allowed?.includes(String(error['code'])), `code ${String(error['code'])} is not the contract's for ${response.status}: ${context}`);
  assert.ok(typeof error['message'] === 'string' && error['message'].length > 0, context);
  assert.equal(error['requestId'], response.headers.get('x-request-id'), `requestId differs from X-Request-Id: ${context}`);
  if (error['errors'] !== undefined) {
    assert.equal(error['code'], 'VALIDATION_FAILED', `errors only for validation: ${context}`);
    assert.ok(Array.isArray(error['errors']) && error['errors'].length > 0, context);
    for (const item of error['errors'] as unknown[]) {
      const entry = item as Record<string, unknown>;
      assert.ok(typeof entry['path'] === 'string' && typeof entry['message'] === 'string', context);
      assert.deepEqual(Object.keys(entry).sort(), ['message', 'path'], context);
    }
  }
  assert.doesNotMatch(response.text, /\bat [^\s]+ \(|node_modules|\/src\/|\.ts:\d+|syntax error at|violates|relation "|pg_|SQLSTATE/i, `internals leaked: ${context}`);
}

for (const backend of backends) {
  describe(`fuzzing bodies and queries [${backend.name}]`, async () => {
    const skip = await backend.skipReason();
    let server: TestServer;
    let admin: Session;
    let user: Session & { password: string };
    let target: Session;
    let passwordUser: Session & { password: string };
    let prototypeKeys: string[];

    const countRows = async () => {
      const db = server.app.database.db;
      const users = await db.selectFrom('users').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      const tokens = await db.selectFrom('refresh_tokens').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
      return { users: Number(users.n), refreshTokens: Number(tokens.n) };
    };

    const send = (method: string, path: string, payload: Payload, token?: string) => {
      if (payload.kind === 'json') return server.client.request(method, path, payload.value, token ? { token } : {});
      return server.client.request(method, path, undefined, {
        raw: payload.text,
        ...(token ? { token } : {}),
        ...(payload.contentType === undefined ? {} : { headers: { 'content-type': payload.contentType } }),
      });
    };

    /**
     * Sends one request and checks the three properties. `createsOnSuccess`: rows a 2xx adds.
     * Returns the response for endpoint-specific checks.
     */
    const probe = async (
      what: string,
      request: () => Promise<ApiResponse>,
      createsOnSuccess: { users?: number; refreshTokens?: number } = {},
    ): Promise<ApiResponse> => {
      const before = await countRows();
      const response = await request();
      assertContractResponse(response, what);
      const afterwards = await countRows();
      const success = response.status >= 200 && response.status < 300;
      assert.equal(
        afterwards.users - before.users,
        success ? (createsOnSuccess.users ?? 0) : 0,
        `users rows changed by ${afterwards.users - before.users}: ${what} -> ${response.status} ${response.text.slice(0, 300)}`,
      );
      assert.equal(
        afterwards.refreshTokens - before.refreshTokens,
        success ? (createsOnSuccess.refreshTokens ?? 0) : 0,
        `refresh_tokens rows changed: ${what} -> ${response.status} ${response.text.slice(0, 300)}`,
      );
      return response;
    };

    const assertCreatedUser = (response: ApiResponse, payload: Payload, role: 'user' | 'admin' | undefined) => {
      if (response.status !== 201 || payload.kind !== 'json') return;
      const sent = payload.value as { email: string; role?: string };
      const created = (response.body as { data: Record<string, unknown> }).data;
      assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'email', 'id', 'name', 'role', 'updatedAt']);
      assert.equal(created['email'], sent.email.trim().toLowerCase(), 'emails are trimmed and lower-cased');
      assert.equal(created['role'], role ?? sent.role ?? 'user');
    };

    before(async () => {
      if (skip) return;
      prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort();
      server = await startServer(backend, { LOGIN_MAX_FAILURES: '1000' });
      admin = await loginAdmin(server.client);
      user = await registerAndLogin(server.client);
      target = await registerAndLogin(server.client);
      passwordUser = await registerAndLogin(server.client);
    });
    after(async () => server?.stop());

    it('when arbitrary bodies are POSTed to /auth/register, then no 5xx and a user row only on 201', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(bodies({ email: emailValue, name: nameValue, password: passwordValue }), async (payload) => {
          const what = `POST /auth/register ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/auth/register', payload), { users: 1 });
          assert.ok([201, 400, 409, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
          assertCreatedUser(response, payload, 'user');
        }),
        runOptions,
      );
    });

    it('when arbitrary bodies are POSTed to /auth/login, then no 5xx and no session without 200', { skip }, async () => {
      const known = fc.constantFrom(user.user.email, target.user.email, ` ${user.user.email.toUpperCase()} `);
      await fc.assert(
        fc.asyncProperty(bodies({ email: fc.oneof(emailValue, known), password: passwordValue }), async (payload) => {
          const what = `POST /auth/login ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/auth/login', payload), { refreshTokens: 1 });
          assert.ok([200, 400, 401, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
        }),
        runOptions,
      );
    });

    it('when arbitrary bodies are POSTed to /auth/refresh, then no 5xx and no token row without 200', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(bodies({ refreshToken: refreshTokenValue }), async (payload) => {
          const what = `POST /auth/refresh ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/auth/refresh', payload), { refreshTokens: 1 });
          assert.ok([400, 401, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
        }),
        runOptions,
      );
    });

    it('when arbitrary bodies are POSTed to /auth/logout, then no 5xx and nothing is created', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(bodies({ refreshToken: refreshTokenValue }), async (payload) => {
          const what = `POST /auth/logout ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/auth/logout', payload));
          assert.ok([204, 400, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
        }),
        runOptions,
      );
      // the fuzzing logged nobody out
      assert.equal((await server.client.get('/api/v1/users/me', { token: user.accessToken })).status, 200);
    });

    it('when arbitrary bodies are POSTed to /auth/password, then no 5xx and the password is unchanged', { skip }, async () => {
      const currentPassword = fc.oneof(passwordValue, fc.constant(`${passwordUser.password}x`), fc.constant(passwordUser.password.toUpperCase()));
      await fc.assert(
        fc.asyncProperty(bodies({ currentPassword, newPassword: passwordValue }), async (payload) => {
          const what = `POST /auth/password ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/auth/password', payload, passwordUser.accessToken), {
            refreshTokens: 1,
          });
          assert.ok([400, 403, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
        }),
        runOptions,
      );
      const check = await server.client.post('/api/v1/auth/login', { email: passwordUser.user.email, password: passwordUser.password });
      assert.equal(check.status, 200, 'the real password still works');
    });

    it('when arbitrary bodies are POSTed to /users as admin, then no 5xx and a user row only on 201', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            bodies({ email: emailValue, name: nameValue, password: passwordValue }),
            bodies({ email: emailValue, name: nameValue, password: passwordValue, role: roleValue }),
          ),
          async (payload) => {
            const what = `POST /users ${describePayload(payload)}`;
            const response = await probe(what, () => send('POST', '/api/v1/users', payload, admin.accessToken), { users: 1 });
            assert.ok([201, 400, 409, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
            assertCreatedUser(response, payload, undefined);
          },
        ),
        runOptions,
      );
    });

    it('when arbitrary bodies are POSTed to /users as a non-admin, then 403 or 4xx and never a row', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(bodies({ email: emailValue, name: nameValue, password: passwordValue, role: roleValue }), async (payload) => {
          const what = `POST /users as user ${describePayload(payload)}`;
          const response = await probe(what, () => send('POST', '/api/v1/users', payload, user.accessToken));
          // Body parsing (size, media type, JSON syntax) precedes authorisation; validation does not.
          assert.ok([400, 403, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
          if (response.status === 400) {
            assert.equal((response.body as { error: { code: string } }).error.code, 'INVALID_JSON', `${what}: a non-admin must get 403, not validation`);
          }
        }),
        { ...runOptions, numRuns: Math.ceil(NUM_RUNS / 3) },
      );
    });

    it('when arbitrary ids and bodies are PATCHed to /users/:id, then no 5xx and no row is created', { skip }, async () => {
      const actor = fc.constantFrom<'self' | 'admin'>('self', 'admin');
      await fc.assert(
        fc.asyncProperty(
          actor,
          idSegment(() => [user.user.id, target.user.id]),
          bodies({ name: nameValue, email: emailValue, role: roleValue }),
          async (who, id, payload) => {
            // a user patches themselves (or tries others); the admin patches the target user, never itself
            const token = who === 'self' ? user.accessToken : admin.accessToken;
            const path = `/api/v1/users/${who === 'admin' && id === user.user.id ? target.user.id : id}`;
            const what = `PATCH ${path} as ${who} ${describePayload(payload)}`;
            const response = await probe(what, () => send('PATCH', path, payload, token));
            assert.ok([200, 400, 403, 404, 409, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
          },
        ),
        runOptions,
      );
      assert.equal((await server.client.get('/api/v1/users/me', { token: admin.accessToken })).status, 200, 'the admin is intact');
    });

    it('when arbitrary page and limit queries hit GET /users, then 200 with a sane page or a 400', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(queryString, async (query) => {
          const path = `/api/v1/users?${query}`;
          const response = await probe(`GET ${path}`, () => server.client.get(path, { token: admin.accessToken }));
          assert.ok([200, 400].includes(response.status), `unexpected status: GET ${path} -> ${response.status} ${response.text.slice(0, 300)}`);
          if (response.status === 200) {
            const body = response.body as { data: unknown[]; meta: { page: number; limit: number; total: number; totalPages: number } };
            assert.ok(Number.isSafeInteger(body.meta.page) && body.meta.page >= 1, `page: ${path} -> ${response.text.slice(0, 300)}`);
            assert.ok(Number.isInteger(body.meta.limit) && body.meta.limit >= 1 && body.meta.limit <= 100, `limit: ${path}`);
            assert.ok(body.data.length <= body.meta.limit, `data longer than limit: ${path}`);
            assert.equal(body.meta.totalPages, Math.ceil(body.meta.total / body.meta.limit));
          }
        }),
        runOptions,
      );
    });

    it('when arbitrary ids hit GET /users/:id, then 200 for a visible user, else 400 or 404', { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(fc.boolean(), idSegment(() => [user.user.id, target.user.id, admin.user.id]), async (asAdmin, id) => {
          const path = `/api/v1/users/${id}`;
          const response = await probe(`GET ${path}`, () => server.client.get(path, { token: asAdmin ? admin.accessToken : user.accessToken }));
          assert.ok([200, 400, 404].includes(response.status), `unexpected status: GET ${path} -> ${response.status}`);
          if (response.status === 200 && !asAdmin) {
            assert.equal((response.body as { data: { id: string } }).data.id, user.user.id, `a user saw someone else: ${path}`);
          }
        }),
        runOptions,
      );
    });

    it('when fixed adversarial bodies hit every body route, then each answers a contract 4xx', { skip }, async () => {
      const bigString = 'a'.repeat(1024 * 1024);
      const adversarial: Array<[string, Payload]> = [
        ['body over 1 MiB', { kind: 'json', value: { email: 'big@example.com', name: bigString, password: bigString } }],
        ['deep array nesting', { kind: 'raw', text: `${'['.repeat(100_000)}${']'.repeat(100_000)}`, contentType: 'application/json' }],
        ['deep object nesting', { kind: 'raw', text: `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`, contentType: 'application/json' }],
        ['__proto__ pollution', { kind: 'raw', text: '{"__proto__":{"role":"admin","isAdmin":true}}', contentType: 'application/json' }],
        ['constructor.prototype pollution', { kind: 'raw', text: '{"constructor":{"prototype":{"role":"admin"}}}', contentType: 'application/json' }],
        ['empty body with JSON type', { kind: 'raw', text: '', contentType: 'application/json' }],
        ['whitespace body', { kind: 'raw', text: ' \n\t ', contentType: 'application/json' }],
        ['form body', { kind: 'raw', text: 'email=a%40b.co&password=12345678', contentType: 'application/x-www-form-urlencoded' }],
        ['text/plain JSON', { kind: 'raw', text: '{"refreshToken":"x"}', contentType: 'text/plain' }],
      ];
      const routes: Array<[string, string, string | undefined]> = [
        ['POST', '/api/v1/auth/register', undefined],
        ['POST', '/api/v1/auth/login', undefined],
        ['POST', '/api/v1/auth/refresh', undefined],
        ['POST', '/api/v1/auth/logout', undefined],
        ['POST', '/api/v1/auth/password', passwordUser.accessToken],
        ['POST', '/api/v1/users', admin.accessToken],
        ['PATCH', `/api/v1/users/${target.user.id}`, admin.accessToken],
      ];
      for (const [method, path, token] of routes) {
        for (const [name, payload] of adversarial) {
          const what = `${method} ${path} ${name}`;
          const response = await probe(what, () => send(method, path, payload, token));
          assert.ok(response.status >= 400, `${what} -> ${response.status} ${response.text.slice(0, 300)}`);
          if (name === 'body over 1 MiB') assert.equal(response.status, 413, what);
        }
      }
    });

    it('when a name contains a NUL character, then register, create and update answer 4xx, not 500', { skip }, async () => {
      const problems: string[] = [];
      for (const name of ['\u0000', 'a\u0000b', `${'x'.repeat(50)}\u0000`]) {
        const email = `nul-${Math.random().toString(16).slice(2, 10)}@example.com`;
        const cases: Array<[string, string, string, unknown, string | undefined, { users?: number }]> = [
          ['register', 'POST', '/api/v1/auth/register', { email, name, password: 'password-123' }, undefined, { users: 1 }],
          ['admin create', 'POST', '/api/v1/users', { email: `a-${email}`, name, password: 'password-123' }, admin.accessToken, { users: 1 }],
          ['self update', 'PATCH', `/api/v1/users/${user.user.id}`, { name }, user.accessToken, {}],
          ['admin update', 'PATCH', `/api/v1/users/${target.user.id}`, { name }, admin.accessToken, {}],
        ];
        for (const [label, method, path, body, token, creates] of cases) {
          const what = `${label} with name ${JSON.stringify(name)}`;
          await probe(what, () => send(method, path, { kind: 'json', value: body }, token), creates).catch((error: Error) =>
            problems.push(error.message.split('\n')[0] ?? what),
          );
        }
      }
      assert.deepEqual(problems, []);
    });

    it('when page is far past any row (1e308, 1e20, 2^53+1), then 400 or an empty page for that page, not 500', { skip }, async () => {
      const problems: string[] = [];
      for (const query of ['page=1e308', 'page=1e20', 'page=9007199254740993', 'page=9007199254740991&limit=100', 'page=92233720368547758&limit=100']) {
        const path = `/api/v1/users?${query}`;
        try {
          const response = await probe(`GET ${path}`, () => server.client.get(path, { token: admin.accessToken }));
          assert.ok([200, 400].includes(response.status), `GET ${path} -> ${response.status} ${response.text}`);
          if (response.status === 200) {
            const body = response.body as { data: unknown[]; meta: { page: number } };
            assert.deepEqual(body.data, [], `GET ${path}: a page past the end is empty`);
            assert.equal(String(body.meta.page), new URLSearchParams(query).get('page'), `GET ${path}: meta.page is the page asked for: ${response.text}`);
          }
        } catch (error) {
          problems.push((error as Error).message.split('\n')[0] ?? path);
        }
      }
      assert.deepEqual(problems, []);
    });

    it('when the fuzzing is over, then no prototype was polluted and every session still works', { skip }, async () => {
      assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys);
      assert.equal(({} as Record<string, unknown>)['role'], undefined);
      for (const session of [admin, user, target]) {
        assert.equal((await server.client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
      }
      const me = await server.client.get<{ data: { role: string } }>('/api/v1/users/me', { token: user.accessToken });
      assert.equal(me.body.data.role, 'user', 'no fuzzed request made the user an admin');
    });
  });
}
