// Property-based fuzzing of the identity routes (API keys, MFA, email flows, OIDC, sessions, audit),
// with the shared kit (test/helpers/fuzz.ts). Whatever arrives -- arbitrary JSON, near-valid bodies
// with one field wrong, extra keys, raw non-JSON text, odd ids, hostile query strings and cursors,
// made-up API keys -- the service answers:
//   - never 5xx (an OIDC route may answer 503 for the provider whose issuer is down, in the contract's
//     shape with SERVICE_UNAVAILABLE and Retry-After; nothing else may);
//   - on 4xx, the contract's error body, with a code the contract lists for that status;
//   - no row of the identity tables appears without a 2xx (or authorize's 302) (counted around every request, after the
//     background token writes of the email flows have settled), and a 2xx adds at most what it should.
// FUZZ_RUNS scales every property (default from the kit); FUZZ_SEED replays a failure.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { sql } from 'kysely';
import { generate } from 'otplib';
import { login, loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import {
  assertContractResponse,
  bodies,
  describePayload,
  emailValue,
  field,
  nameValue,
  NUM_RUNS,
  numberLikeString,
  passwordValue,
  runOptions,
  encodeAll,
  encodeSome,
  shortText,
  type Payload,
} from '../helpers/fuzz.js';
import type { TestServer } from '../helpers/server.js';
import { startLocalIdp, type LocalIdp } from '../identity/oidc-idp.js';

// Each property runs a third of the kit's default: there are many of them, on two backends.
const RUNS = Math.max(10, Math.ceil(NUM_RUNS / 3));
const options = { ...runOptions, numRuns: RUNS };

const TABLES = [
  'users',
  'sessions',
  'refresh_tokens',
  'api_keys',
  'mfa_totp',
  'mfa_recovery_codes',
  'mfa_challenges',
  'email_tokens',
  'oidc_flows',
  'user_identities',
  'audit_events',
] as const;
type Table = (typeof TABLES)[number];
type Counts = Record<Table, number>;
/** The most rows each table may gain from one 2xx answer (absent: none). */
type Allowance = Partial<Record<Table, number>>;

const SCOPES = ['users:read', 'users:write', 'ledger:read', 'ledger:write'] as const;
const AUDIT_ACTIONS = ['auth.login', 'auth.login_failed', 'api_key.created', 'api_key.revoked', 'mfa.enabled', 'user.created', 'auth.session_revoked'];
const REDIRECT_URI = 'http://127.0.0.1:1/oidc-callback';

// ---------- generators ----------

const b64url = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');

/** Cursors: well-formed ones at odd instants (year 0000 to 9999), near misses, and junk. */
const isoAtEdges = fc.oneof(
  fc.date({ min: new Date('0000-01-01T00:00:00.000Z'), max: new Date('9999-12-31T23:59:59.999Z'), noInvalidDate: true }).map((date) => date.toISOString()),
  fc.constantFrom(
    '0000-01-01T00:00:00.000Z',
    '0001-01-01T00:00:00.000Z',
    '1970-01-01T00:00:00.000Z',
    '9999-12-31T23:59:59.999Z',
    '2026-02-30T00:00:00.000Z',
    '2026-13-01T00:00:00.000Z',
    '2026-12-04T25:00:00.000Z',
    '+275760-09-13T00:00:00.000Z',
    '2026-12-04T10:00:00Z',
  ),
);
const cursorValue = (realCursors: () => string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.tuple(isoAtEdges, fc.oneof(fc.uuid(), fc.uuid().map((id) => id.toUpperCase()), shortText)).map(([iso, id]) => b64url(`${iso}|${id}`)) },
    { weight: 1, arbitrary: fc.tuple(isoAtEdges, fc.uuid(), shortText).map(([iso, id, extra]) => b64url(`${iso}|${id}|${extra}`)) },
    { weight: 3, arbitrary: fc.nat().map((index) => realCursors()[index % Math.max(1, realCursors().length)] ?? 'x') },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.nat(), fc.nat(), fc.constantFrom(...'AZaz09-_=+/.')).map(([index, at, char]) => {
        const real = realCursors()[index % Math.max(1, realCursors().length)] ?? 'MjAyNg';
        const position = at % real.length;
        return `${real.slice(0, position)}${char}${real.slice(position + 1)}`;
      }),
    },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((value) => b64url(JSON.stringify(value) ?? '')) },
    { weight: 2, arbitrary: shortText },
    { weight: 1, arbitrary: fc.integer({ min: 190, max: 260 }).map((count) => 'A'.repeat(count)) },
  );

/**
 * A query string over the given keys: mostly a record of them (`required` always present, the rest
 * maybe) with perhaps a stray pair, else arbitrary pairs, else a fixed odd form.
 */
function queryOver(values: Record<string, fc.Arbitrary<string>>, required: readonly string[] = []): fc.Arbitrary<string> {
  const keys = Object.keys(values);
  const render = (pairs: ReadonlyArray<readonly [string, string]>): string => pairs.map(([key, value]) => `${encodeSome(key)}=${encodeSome(value)}`).join('&');
  const stray = fc.oneof(fc.tuple(fc.constantFrom(...keys), shortText), fc.tuple(shortText, shortText));
  const record = fc
    .tuple(fc.record(values, { requiredKeys: [...required] }), fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: stray }))
    .map(([known, extra]) => render([...Object.entries(known), ...(extra === null ? [] : [extra])]));
  const pair = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...keys).chain((key) => (values[key] ?? shortText).map((value): [string, string] => [key, value])) },
    { weight: 1, arbitrary: stray },
  );
  return fc.oneof(
    { weight: 5, arbitrary: record },
    { weight: 2, arbitrary: fc.array(pair, { maxLength: 4 }).map(render) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(...keys).chain((key) =>
        fc.constantFrom(key, `${key}=`, `${key}=%zz`, `${key}[]=1`, `${key}[a]=1`, `${key}=%00`, `${key}=1&${key}=2`, `__proto__=1`, `constructor=1`, '&&&', '=1'),
      ),
    },
  );
}

const limitValue = fc.oneof({ weight: 2, arbitrary: fc.integer({ min: 1, max: 100 }).map(String) }, { weight: 1, arbitrary: fc.integer({ min: -1, max: 101 }).map(String) }, { weight: 2, arbitrary: numberLikeString });

function idSegment(realIds: () => string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.nat().map((index) => { const ids = realIds(); return ids[index % Math.max(1, ids.length)] ?? ''; }) },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: fc.uuid().map((id) => id.toUpperCase()) },
    { weight: 2, arbitrary: shortText.map(encodeSome) },
    { weight: 1, arbitrary: shortText.map(encodeAll) },
    { weight: 1, arbitrary: fc.constantFrom('me', '..', '%2e%2e', '%00', '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff') },
  );
}

/** Header-safe text (fetch refuses CR, LF, NUL and code points above 0xFF in a header value). */
const headerText = (minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc.string({
    unit: fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map((code) => String.fromCharCode(code)) },
      { weight: 1, arbitrary: fc.integer({ min: 0xa0, max: 0xff }).map((code) => String.fromCharCode(code)) },
      { weight: 1, arbitrary: fc.constantFrom(' ', '\t') },
    ),
    minLength,
    maxLength,
  });

const sixDigits = fc.integer({ min: 0, max: 999_999 }).map((value) => String(value).padStart(6, '0'));
const mfaCodeValue = field(fc.oneof(sixDigits, fc.string({ minLength: 1, maxLength: 64 }), fc.constantFrom('0'.repeat(64), '0'.repeat(65), ' 123456', '123 456', '１２３４５６')));
const tokenValue = field(
  fc.oneof(
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes).toString('base64url')),
    fc.string({ minLength: 1, maxLength: 256 }),
    fc.constantFrom('x'.repeat(256), 'x'.repeat(257), '\u0000'),
  ),
);

const DAY_MS = 86_400_000;
const expiresAtValue = field(
  fc.oneof(
    fc.integer({ min: 60_000, max: 366 * DAY_MS - 60_000 }).map((ahead) => new Date(Date.now() + ahead).toISOString()),
    fc.integer({ min: -400 * DAY_MS, max: 800 * DAY_MS }).map((ahead) => new Date(Date.now() + ahead).toISOString()),
    isoAtEdges,
    fc.constantFrom('2026-12-04', '2027-06-01T00:00:00+14:00', '2027-06-01T00:00:00-12:00', '2027-06-01t00:00:00z', '2027-06-01 00:00:00Z', '2027-06-01T24:00:00Z', '2027-06-01T23:59:60Z', ''),
  ),
);
const scopesValue = field(
  fc.oneof(
    fc.uniqueArray(fc.constantFrom(...SCOPES), { minLength: 1, maxLength: 4 }),
    fc.array(fc.constantFrom(...SCOPES, 'admin', 'users:*', 'USERS:READ', 'users:read ', ''), { maxLength: 5 }),
  ),
);

// ---------- the suite ----------

describeOnBackends('fuzzing the identity routes', ({ it, before, startServer, defer }) => {
  let server: TestServer;
  let idp: LocalIdp;
  let admin: Session;
  let user: Session & { password: string };
  let other: Session & { password: string };
  /** Enrols (and re-enrols) TOTP under fuzz, never confirms it on purpose. */
  let enroller: Session & { password: string };
  /** TOTP active: the DELETE fuzz spends its wrong-code budget. */
  let mfaUser: Session & { password: string };
  /** TOTP active: the verify fuzz's challenges are this user's. */
  let verifyUser: Session & { password: string };
  /** Logged in several times: its other sessions are fair game for DELETE. */
  let sessionUser: Session & { password: string };
  const keyIds: string[] = [];
  const keySecrets: string[] = [];
  const revokedSecrets: string[] = [];
  const mfaTokens: string[] = [];
  const sessionIds: string[] = [];
  const otherSessionIds: string[] = [];
  const cursors: string[] = [];
  const oidcStates: string[] = [];

  const countRows = async (): Promise<Counts> => {
    const selects = TABLES.map((table) => `(select count(*) from ${table}) as ${table}`).join(', ');
    const { rows } = await sql.raw<Record<Table, string | number | bigint>>(`select ${selects}`).execute(server.app.database.db);
    const row = rows[0];
    assert.ok(row);
    return Object.fromEntries(TABLES.map((table) => [table, Number(row[table])])) as Counts;
  };

  const send = (method: string, path: string, payload: Payload, token?: string): Promise<ApiResponse> => {
    if (payload.kind === 'json') return server.client.request(method, path, payload.value, token ? { token } : {});
    return server.client.request(method, path, undefined, {
      raw: payload.text,
      ...(token ? { token } : {}),
      ...(payload.contentType === undefined ? {} : { headers: { 'content-type': payload.contentType } }),
    });
  };

  /** Statuses (and error codes) seen by the current property, reported as a diagnostic, so a run that never reached the service shows. */
  let seen = new Map<string, number>();
  const seenReport = (): string => [...seen.entries()].sort().map(([key, count]) => `${key}×${count}`).join(' ');

  const errorCode = (response: ApiResponse): string | undefined => (response.body as { error?: { code?: string } } | undefined)?.error?.code;

  /** A GET that does not follow redirects (the OIDC routes answer 302 to the provider). */
  const getManual = async (path: string): Promise<ApiResponse> => {
    const response = await fetch(`${server.baseUrl}${path}`, { redirect: 'manual' });
    const text = await response.text();
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: response.status, headers: response.headers, body, text };
  };

  /** A 503 where the contract allows one: its error shape, SERVICE_UNAVAILABLE and Retry-After. */
  const assertUnavailable = (response: ApiResponse, what: string): void => {
    const context = `${what} -> ${response.status} ${response.text.slice(0, 300)}`;
    const body = response.body as { error?: Record<string, unknown> } | undefined;
    assert.deepEqual(Object.keys(body ?? {}), ['error'], context);
    assert.deepEqual(Object.keys(body?.error ?? {}).sort(), ['code', 'message', 'requestId'], context);
    assert.equal(body?.error?.['code'], 'SERVICE_UNAVAILABLE', context);
    assert.equal(body?.error?.['requestId'], response.headers.get('x-request-id'), context);
    assert.ok(response.headers.get('retry-after'), `503 without Retry-After: ${context}`);
  };

  /**
   * Sends one request and checks the properties: on contract, an allowed status, and no table
   * grows without a 2xx (nor by more than `allowance` with one). `unavailableOk`: a 503 is allowed.
   */
  const probe = async (
    what: string,
    request: () => Promise<ApiResponse>,
    statuses: readonly number[],
    allowance: Allowance = {},
    unavailableOk = false,
  ): Promise<ApiResponse> => {
    await server.app.emailFlows.idle();
    const before = await countRows();
    const response = await request();
    if (unavailableOk && response.status === 503) assertUnavailable(response, what);
    else assertContractResponse(response, what);
    const label = `${response.status}${errorCode(response) === undefined ? '' : ` ${errorCode(response) ?? ''}`}`;
    seen.set(label, (seen.get(label) ?? 0) + 1);
    assert.ok(statuses.includes(response.status), `unexpected status: ${what} -> ${response.status} ${response.text.slice(0, 300)}`);
    await server.app.emailFlows.idle();
    const afterwards = await countRows();
    // a 302 is authorize's success (the redirect to the provider)
    const success = response.status >= 200 && response.status < 400;
    for (const table of TABLES) {
      const grew = afterwards[table] - before[table];
      const most = success ? (allowance[table] ?? 0) : 0;
      assert.ok(grew <= most, `${table} grew by ${grew} (at most ${most}): ${what} -> ${response.status} ${response.text.slice(0, 300)}`);
    }
    return response;
  };

  /** A property test: its statuses and codes are reported as a diagnostic line. */
  const fuzz = (name: string, body: () => Promise<void>): void =>
    it(name, async (context) => {
      seen = new Map();
      await body();
      context.diagnostic(`answers: ${seenReport()}`);
    });

  const totpNow = (secret: string): Promise<string> => generate({ secret, epoch: Math.floor(Date.now() / 1000) });

  before(async () => {
    idp = await startLocalIdp({ redirectUris: [REDIRECT_URI] });
    defer(() => idp.close());
    server = await startServer({
      LOGIN_MAX_FAILURES: '1000',
      KEY_ENCRYPTION_SECRET: 'fuzz-identity-key-encryption-secret-0123456789',
      OIDC_PROVIDERS: JSON.stringify([
        { name: 'up', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret },
        // Nothing listens on the discard port: discovery fails fast, and this provider answers 503.
        { name: 'down', issuer: 'http://127.0.0.1:9/', clientId: 'x', clientSecret: 'y' },
      ]),
      OIDC_REDIRECT_URIS: `${REDIRECT_URI},http://127.0.0.1:1/elsewhere`,
    });
    admin = await loginAdmin(server.client);
    [user, other, enroller, mfaUser, verifyUser, sessionUser] = await Promise.all([
      registerAndLogin(server.client),
      registerAndLogin(server.client),
      registerAndLogin(server.client),
      registerAndLogin(server.client),
      registerAndLogin(server.client),
      registerAndLogin(server.client),
    ]);

    // API keys: live ones to list and delete, and revoked ones whose secrets must stop working.
    for (const owner of [user, other, user, other, user, user]) {
      const created = await server.client.post<{ data: { id: string; secret: string } }>('/api/v1/api-keys', { name: 'seed', scopes: ['users:read'] }, { token: owner.accessToken });
      assert.equal(created.status, 201, created.text);
      keyIds.push(created.body.data.id);
      keySecrets.push(created.body.data.secret);
    }
    const revoked = await server.client.post<{ data: { id: string; secret: string } }>('/api/v1/api-keys', { name: 'revoked', scopes: ['users:read'] }, { token: user.accessToken });
    assert.equal((await server.client.delete(`/api/v1/api-keys/${revoked.body.data.id}`, { token: user.accessToken })).status, 204);
    revokedSecrets.push(revoked.body.data.secret);
    const page = await server.client.get<{ meta: { nextCursor: string | null } }>('/api/v1/api-keys?limit=2', { token: user.accessToken });
    if (page.body.meta.nextCursor) cursors.push(page.body.meta.nextCursor);
    const auditPage = await server.client.get<{ meta: { nextCursor: string | null } }>('/api/v1/audit?limit=3', { token: admin.accessToken });
    if (auditPage.body.meta.nextCursor) cursors.push(auditPage.body.meta.nextCursor);

    // MFA: two users with TOTP active, and challenges (mfaTokens) of one's logins.
    for (const session of [mfaUser, verifyUser]) {
      const enrolment = await server.client.post<{ data: { secret: string } }>('/api/v1/auth/mfa/totp', undefined, { token: session.accessToken });
      assert.equal(enrolment.status, 201, enrolment.text);
      const confirmed = await server.client.post('/api/v1/auth/mfa/totp/confirm', { code: await totpNow(enrolment.body.data.secret) }, { token: session.accessToken });
      assert.equal(confirmed.status, 200, confirmed.text);
    }
    for (let index = 0; index < 4; index++) {
      const challenge = await server.client.post<{ data: { mfaToken: string } }>('/api/v1/auth/login', { email: verifyUser.user.email, password: verifyUser.password });
      assert.equal(challenge.status, 200, challenge.text);
      mfaTokens.push(challenge.body.data.mfaToken);
    }

    // Sessions: sessionUser's extra logins (not the one the fuzz authenticates with), and other's.
    for (let index = 0; index < 4; index++) await login(server.client, sessionUser.user.email, sessionUser.password);
    const own = await server.client.get<{ data: Array<{ id: string; current: boolean }>; meta: { nextCursor: string | null } }>('/api/v1/auth/sessions?limit=2', { token: sessionUser.accessToken });
    if (own.body.meta.nextCursor) cursors.push(own.body.meta.nextCursor);
    const all = await server.client.get<{ data: Array<{ id: string; current: boolean }> }>('/api/v1/auth/sessions?limit=100', { token: sessionUser.accessToken });
    sessionIds.push(...all.body.data.filter((session) => !session.current).map((session) => session.id));
    assert.ok(sessionIds.length >= 4, all.text);
    const others = await server.client.get<{ data: Array<{ id: string }> }>('/api/v1/auth/sessions', { token: other.accessToken });
    otherSessionIds.push(...others.body.data.map((session) => session.id));

    // OIDC: live flows of the provider that is up, whose states the callback fuzz presents.
    for (let index = 0; index < 4; index++) {
      const started = await getManual(`/api/v1/auth/oidc/up/authorize?redirect_uri=${encodeURIComponent(REDIRECT_URI)}`);
      assert.equal(started.status, 302, started.text);
      const state = new URL(started.headers.get('location') ?? '').searchParams.get('state');
      assert.ok(state);
      oidcStates.push(state);
    }
  });

  // ---------- API keys ----------

  fuzz('when arbitrary bodies are POSTed to /api-keys by a user or an admin, then no 5xx and a key row only on 201', async () => {
    const ownerId = field(fc.oneof(fc.constantFrom(user.user.id, other.user.id, admin.user.id), fc.uuid()));
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        bodies({ name: nameValue, scopes: scopesValue, expiresAt: expiresAtValue, ownerId }),
        fc.oneof(bodies({ name: nameValue, scopes: scopesValue }), bodies({ name: nameValue, scopes: scopesValue, expiresAt: expiresAtValue })),
        async (asAdmin, withOwner, withoutOwner) => {
          const payload = asAdmin ? withOwner : withoutOwner;
          const what = `POST /api-keys as ${asAdmin ? 'admin' : 'user'} ${describePayload(payload)}`;
          const token = asAdmin ? admin.accessToken : user.accessToken;
          const response = await probe(what, () => send('POST', '/api/v1/api-keys', payload, token), [201, 400, 403, 404, 413, 415], { api_keys: 1, audit_events: 1 });
          if (response.status === 201) {
            const created = (response.body as { data: Record<string, unknown> }).data;
            assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'expiresAt', 'id', 'lastUsedAt', 'name', 'prefix', 'scopes', 'secret'], what);
            assert.match(String(created['secret']), /^bsk_/, what);
            assert.equal(response.headers.get('cache-control'), 'no-store', what);
          }
        },
      ),
      options,
    );
  });

  fuzz('when a user POSTs /api-keys with ownerId, then never a key: 403, or 400 for a body malformed anyway', async () => {
    await fc.assert(
      fc.asyncProperty(fc.record({ name: nameValue, scopes: scopesValue, expiresAt: expiresAtValue, ownerId: fc.oneof(fc.uuid(), fc.constant(user.user.id)) }), async (body) => {
        const what = `POST /api-keys as user ${JSON.stringify(body).slice(0, 300)}`;
        const response = await probe(what, () => server.client.post('/api/v1/api-keys', body, { token: user.accessToken }), [400, 403, 413]);
        // Validation (or the JSON parser, for a __proto__ key) may speak first for a body that is malformed anyway.
        if (response.status === 400) assert.ok(['VALIDATION_FAILED', 'INVALID_JSON'].includes(errorCode(response) ?? ''), what);
      }),
      { ...options, numRuns: Math.ceil(RUNS / 2) },
    );
  });

  fuzz('when arbitrary limit, cursor and ownerId queries hit GET /api-keys, then 200 with a sane page, 400, or 403 for a user naming an owner', async () => {
    const query = queryOver({
      limit: limitValue,
      cursor: cursorValue(() => cursors),
      ownerId: fc.oneof(fc.constantFrom(user.user.id, other.user.id), fc.uuid(), shortText),
    });
    await fc.assert(
      fc.asyncProperty(fc.boolean(), query, async (asAdmin, search) => {
        const path = `/api/v1/api-keys?${search}`;
        const what = `GET ${path} as ${asAdmin ? 'admin' : 'user'}`;
        const response = await probe(what, () => server.client.get(path, { token: asAdmin ? admin.accessToken : user.accessToken }), asAdmin ? [200, 400] : [200, 400, 403]);
        if (response.status === 200) {
          const body = response.body as { data: Array<Record<string, unknown>>; meta: { nextCursor: string | null } };
          assert.deepEqual(Object.keys(body).sort(), ['data', 'meta'], what);
          assert.ok(body.data.length <= 100, what);
          for (const key of body.data) assert.equal(key['secret'], undefined, `a listed key shows its secret: ${what}`);
          assert.ok(body.meta.nextCursor === null || typeof body.meta.nextCursor === 'string', what);
        }
      }),
      options,
    );
  });

  fuzz('when arbitrary ids hit DELETE /api-keys/:id, then 204 only for a key of the caller (admin: any), else 400 or 404', async () => {
    const userKeys = new Set([0, 2, 4, 5].map((index) => keyIds[index]));
    await fc.assert(
      fc.asyncProperty(fc.boolean(), idSegment(() => keyIds), async (asAdmin, id) => {
        const path = `/api/v1/api-keys/${id}`;
        const what = `DELETE ${path} as ${asAdmin ? 'admin' : 'user'}`;
        const response = await probe(what, () => server.client.delete(path, { token: asAdmin ? admin.accessToken : user.accessToken }), [204, 400, 404], { audit_events: 1 });
        if (response.status === 204) {
          assert.ok(asAdmin || userKeys.has(id), `a user revoked a key that is not theirs: ${what}`);
        }
      }),
      options,
    );
  });

  fuzz('when made-up `Bearer bsk_…` keys hit GET /users/me, then 401 UNAUTHENTICATED every time, never 5xx', async () => {
    const mutate = fc.tuple(fc.nat(), fc.nat(), fc.constantFrom(...'AZaz09-_')).map(([index, at, char]) => {
      const real = keySecrets[index % keySecrets.length] ?? 'bsk_';
      const position = 4 + (at % Math.max(1, real.length - 4));
      const swapped = real[position] === char ? (char === 'A' ? 'B' : 'A') : char;
      return `${real.slice(0, position)}${swapped}${real.slice(position + 1)}`;
    });
    const madeUp = fc.oneof(
      { weight: 2, arbitrary: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => `bsk_${Buffer.from(bytes).toString('base64url')}`) },
      { weight: 2, arbitrary: headerText(0, 120).map((rest) => `bsk_${rest}`) },
      { weight: 3, arbitrary: mutate },
      { weight: 1, arbitrary: fc.nat().map((index) => (keySecrets[index % keySecrets.length] ?? '').slice(0, 4 + (index % 40))) },
      { weight: 1, arbitrary: fc.tuple(fc.nat(), headerText(1, 20)).map(([index, extra]) => `${keySecrets[index % keySecrets.length] ?? ''}${extra}`) },
      { weight: 1, arbitrary: fc.nat().map((index) => `${(keySecrets[index % keySecrets.length] ?? '').slice(0, 12)}${'A'.repeat(35)}`) },
      { weight: 1, arbitrary: fc.constantFrom(...revokedSecrets) },
      { weight: 1, arbitrary: fc.integer({ min: 200, max: 8000 }).map((count) => `bsk_${'a'.repeat(count)}`) },
      { weight: 1, arbitrary: fc.constantFrom('bsk_', 'bsk_\t', 'BSK_abc', 'bsk-abc', `bsk_${'%00'.repeat(10)}`, "bsk_' or '1'='1", 'bsk_..%2F..%2F') },
      // HTTP drops a header value's surrounding whitespace: a real key plus a trailing space is the real key
    ).filter((key) => !keySecrets.includes(key.trim()));
    await fc.assert(
      fc.asyncProperty(madeUp, async (key) => {
        const what = `GET /users/me with Bearer ${JSON.stringify(key.length > 120 ? `${key.slice(0, 120)}… (${key.length})` : key)}`;
        const response = await probe(what, () => server.client.get('/api/v1/users/me', { headers: { authorization: `Bearer ${key}` } }), [401]);
        assert.equal(errorCode(response), 'UNAUTHENTICATED', what);
      }),
      options,
    );
    // the real keys still work
    const real = await server.client.get('/api/v1/users/me', { headers: { authorization: `Bearer ${keySecrets[1] ?? ''}` } });
    assert.ok([200, 401].includes(real.status), real.text); // keys[1] may have been revoked by the DELETE fuzz
  });

  // ---------- MFA ----------

  fuzz('when arbitrary bodies are POSTed to /auth/mfa/totp, then no 5xx and at most one pending secret', async () => {
    await fc.assert(
      fc.asyncProperty(bodies({}), async (payload) => {
        const what = `POST /auth/mfa/totp ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/mfa/totp', payload, enroller.accessToken), [201, 400, 413, 415], { mfa_totp: 1 });
        if (response.status === 201) assert.equal(response.headers.get('cache-control'), 'no-store', what);
      }),
      options,
    );
    const rows = await server.app.database.db.selectFrom('mfa_totp').selectAll().where('user_id', '=', enroller.user.id).execute();
    assert.ok(rows.length <= 1, `one pending enrolment per user, found ${rows.length}`);
  });

  fuzz('when arbitrary codes are POSTed to /auth/mfa/totp/confirm, then no 5xx and nothing is activated', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), bodies({ code: mfaCodeValue }), async (pending, payload) => {
        // enroller has a pending enrolment (from the test above, or made here); user never enrolled
        const token = pending ? enroller.accessToken : other.accessToken;
        const what = `POST /auth/mfa/totp/confirm (${pending ? 'pending' : 'not enrolled'}) ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/mfa/totp/confirm', payload, token), [200, 400, 404, 413, 415, 429], {
          mfa_recovery_codes: 10,
          audit_events: 1,
        });
        if (response.status === 400 && payload.kind === 'json') {
          assert.ok(['VALIDATION_FAILED', 'INVALID_JSON', 'INVALID_MFA_CODE'].includes(errorCode(response) ?? ''), what);
        }
        if (response.status === 404) assert.ok(!pending || errorCode(response) === 'NOT_FOUND', what);
      }),
      options,
    );
  });

  fuzz('when arbitrary codes and passwords are sent to DELETE /auth/mfa/totp, then no 5xx and the second factor stays on', async () => {
    const body = fc.oneof(bodies({ code: mfaCodeValue }), bodies({ password: fc.oneof(passwordValue, fc.constant(`${mfaUser.password}x`)) }), bodies({ code: mfaCodeValue, password: passwordValue }));
    await fc.assert(
      fc.asyncProperty(body, async (payload) => {
        const what = `DELETE /auth/mfa/totp ${describePayload(payload)}`;
        await probe(what, () => send('DELETE', '/api/v1/auth/mfa/totp', payload, mfaUser.accessToken), [400, 403, 413, 415, 429]);
      }),
      options,
    );
    const challenge = await server.client.post<{ data: Record<string, unknown> }>('/api/v1/auth/login', { email: mfaUser.user.email, password: mfaUser.password });
    assert.equal(challenge.status, 200, challenge.text);
    assert.equal(challenge.body.data['mfaRequired'], true, 'MFA is still required');
  });

  fuzz('when arbitrary mfaTokens and codes are POSTed to /auth/mfa/verify, then 400, 401 or 429 and never a session', async () => {
    const mfaToken = field(
      fc.oneof(
        { weight: 3, arbitrary: fc.nat().map((index) => mfaTokens[index % mfaTokens.length] ?? '') },
        { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 512 }) },
        { weight: 1, arbitrary: fc.constantFrom('x'.repeat(512), 'x'.repeat(513), `${mfaTokens[0] ?? ''}x`, (mfaTokens[0] ?? '').slice(0, -1)) },
      ),
    );
    const code = field(fc.oneof({ weight: 3, arbitrary: sixDigits }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 64 }) }, { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9]{4,6}-[a-z0-9]{4,6}$/) }));
    await fc.assert(
      fc.asyncProperty(bodies({ mfaToken, code }), async (payload) => {
        const what = `POST /auth/mfa/verify ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/mfa/verify', payload), [400, 401, 413, 415, 429]);
        if (response.status === 401) assert.ok(['INVALID_MFA_CODE', 'UNAUTHENTICATED'].includes(errorCode(response) ?? ''), what);
      }),
      options,
    );
  });

  // ---------- email verification and password reset ----------

  fuzz('when arbitrary tokens are POSTed to /auth/verify-email, then 400 (INVALID_TOKEN or validation) and nothing changes', async () => {
    await fc.assert(
      fc.asyncProperty(bodies({ token: tokenValue }), async (payload) => {
        const what = `POST /auth/verify-email ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/verify-email', payload), [400, 413, 415]);
        if (response.status === 400) assert.ok(['VALIDATION_FAILED', 'INVALID_JSON', 'INVALID_TOKEN'].includes(errorCode(response) ?? ''), what);
      }),
      options,
    );
  });

  fuzz('when arbitrary bodies are POSTed to /auth/verify-email/resend, then 202 with at most one token, or a contract 4xx', async () => {
    await fc.assert(
      fc.asyncProperty(bodies({}), async (payload) => {
        const what = `POST /auth/verify-email/resend ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/verify-email/resend', payload, user.accessToken), [202, 400, 413, 415, 429], { email_tokens: 1 });
        if (response.status === 202) assert.deepEqual(response.body, { data: {} }, what);
      }),
      { ...options, numRuns: Math.ceil(RUNS / 2) },
    );
  });

  fuzz('when arbitrary emails are POSTed to /auth/password-reset, then 202 {data: {}} alike for known and unknown, at most one token', async () => {
    const known = fc.constantFrom(user.user.email, ` ${other.user.email.toUpperCase()} `, admin.user.email);
    await fc.assert(
      fc.asyncProperty(bodies({ email: fc.oneof(emailValue, known) }), async (payload) => {
        const what = `POST /auth/password-reset ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/password-reset', payload), [202, 400, 413, 415, 429], { email_tokens: 1 });
        if (response.status === 202) assert.deepEqual(response.body, { data: {} }, what);
      }),
      options,
    );
  });

  fuzz('when arbitrary tokens and passwords are POSTed to /auth/password-reset/confirm, then 400 and no password changes', async () => {
    await fc.assert(
      fc.asyncProperty(bodies({ token: tokenValue, newPassword: passwordValue }), async (payload) => {
        const what = `POST /auth/password-reset/confirm ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/password-reset/confirm', payload), [400, 413, 415, 429]);
        if (response.status === 400) assert.ok(['VALIDATION_FAILED', 'INVALID_JSON', 'INVALID_TOKEN'].includes(errorCode(response) ?? ''), what);
      }),
      options,
    );
    assert.equal((await server.client.get('/api/v1/users/me', { token: user.accessToken })).status, 200, 'nobody was logged out');
  });

  // ---------- OpenID Connect ----------

  const providerSegment = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom('up', 'down') },
    { weight: 1, arbitrary: fc.constantFrom('UP', 'nobody', 'up-', 'a'.repeat(64), 'a'.repeat(65), '%00', 'up%2F', '..', '__proto__', 'constructor') },
    { weight: 1, arbitrary: shortText.map(encodeSome) },
  );

  fuzz('when arbitrary providers and query strings hit GET /auth/oidc/:provider/authorize, then 302 (one flow), 400, 404, or 503 for the provider that is down', async () => {
    const query = queryOver({
      redirect_uri: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom(REDIRECT_URI, 'http://127.0.0.1:1/elsewhere') },
        { weight: 2, arbitrary: fc.constantFrom(`${REDIRECT_URI}/`, `${REDIRECT_URI}?x=1`, `${REDIRECT_URI}#x`, REDIRECT_URI.toUpperCase(), ` ${REDIRECT_URI}`, 'https://evil.example/cb', 'javascript:alert(1)', '//evil.example') },
        { weight: 1, arbitrary: shortText },
        { weight: 1, arbitrary: fc.webUrl() },
        { weight: 1, arbitrary: fc.integer({ min: 2040, max: 2100 }).map((count) => `${REDIRECT_URI}?${'x'.repeat(count)}`) },
      ),
    }, ['redirect_uri']);
    await fc.assert(
      fc.asyncProperty(providerSegment, query, async (provider, search) => {
        const path = `/api/v1/auth/oidc/${provider}/authorize?${search}`;
        const what = `GET ${path}`;
        const response = await probe(what, () => getManual(path), [302, 400, 404, 503], { oidc_flows: 1 }, provider === 'down');
        if (response.status === 302) {
          assert.equal(provider, 'up', what);
          const location = new URL(response.headers.get('location') ?? '');
          assert.equal(location.origin, new URL(idp.issuer).origin, `redirected elsewhere than the provider: ${what}`);
          assert.equal(location.searchParams.get('code_challenge_method'), 'S256', what);
          assert.ok(location.searchParams.get('state') && location.searchParams.get('nonce'), what);
          assert.equal(response.headers.get('cache-control'), 'no-store', what);
        }
      }),
      options,
    );
  });

  fuzz('when arbitrary providers, codes and states hit GET /auth/oidc/:provider/callback, then 400, 401 OIDC_FAILED, 404, or 503 for the provider that is down, and no login', async () => {
    const stateValue = fc.oneof(fc.nat().map((index) => oidcStates[index % oidcStates.length] ?? ''), shortText, fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes).toString('base64url')), fc.constant('s'.repeat(513)));
    const query = queryOver({
      state: stateValue,
      code: fc.oneof(fc.string({ minLength: 1, maxLength: 60 }), shortText, fc.constant('c'.repeat(4097))),
      iss: fc.oneof(fc.constant(idp.issuer), shortText),
      error: fc.oneof(fc.constantFrom('access_denied', 'server_error'), shortText),
      error_description: shortText,
      session_state: shortText,
    }, ['state']);
    await fc.assert(
      fc.asyncProperty(providerSegment, query, async (provider, search) => {
        const path = `/api/v1/auth/oidc/${provider}/callback?${search}`;
        const what = `GET ${path}`;
        const response = await probe(what, () => getManual(path), [400, 401, 404, 503], {}, provider === 'down');
        if (response.status === 401) assert.equal(errorCode(response), 'OIDC_FAILED', what);
      }),
      options,
    );
  });

  // ---------- sessions ----------

  fuzz('when arbitrary limit and cursor queries hit GET /auth/sessions, then 200 with only the caller\'s sessions, or 400', async () => {
    const query = queryOver({ limit: limitValue, cursor: cursorValue(() => cursors) });
    await fc.assert(
      fc.asyncProperty(query, async (search) => {
        const path = `/api/v1/auth/sessions?${search}`;
        const what = `GET ${path}`;
        const response = await probe(what, () => server.client.get(path, { token: sessionUser.accessToken }), [200, 400]);
        if (response.status === 200) {
          const body = response.body as { data: Array<{ id: string; current: boolean }>; meta: { nextCursor: string | null } };
          assert.ok(body.data.length <= 100, what);
          for (const session of body.data) assert.ok(!otherSessionIds.includes(session.id), `another user's session listed: ${what}`);
          assert.ok(body.data.filter((session) => session.current).length <= 1, what);
        }
      }),
      options,
    );
  });

  fuzz('when arbitrary ids hit DELETE /auth/sessions/:id, then 204 only for the caller\'s own session, else 400 or 404', async () => {
    const own = new Set(sessionIds);
    await fc.assert(
      fc.asyncProperty(idSegment(() => [...sessionIds, ...otherSessionIds]), async (id) => {
        const path = `/api/v1/auth/sessions/${id}`;
        const what = `DELETE ${path}`;
        const response = await probe(what, () => server.client.delete(path, { token: sessionUser.accessToken }), [204, 400, 404], { audit_events: 1 });
        if (response.status === 204) assert.ok(own.has(id), `deleted a session that is not the caller's: ${what}`);
      }),
      options,
    );
    assert.equal((await server.client.get('/api/v1/users/me', { token: sessionUser.accessToken })).status, 200, 'the current session survived');
    assert.equal((await server.client.get('/api/v1/users/me', { token: other.accessToken })).status, 200, "the other user's session survived");
  });

  // ---------- audit ----------

  fuzz('when arbitrary filters hit GET /audit, then an admin gets 200 or 400 and a user always 403', async () => {
    const query = queryOver({
      action: fc.oneof(fc.constantFrom(...AUDIT_ACTIONS, 'AUTH.LOGIN', 'auth.*', 'auth.login '), shortText),
      actorId: fc.oneof(fc.constantFrom(user.user.id, admin.user.id), fc.uuid(), shortText),
      targetId: fc.oneof(fc.constantFrom(user.user.id, keyIds[0] ?? ''), fc.uuid(), shortText),
      limit: limitValue,
      cursor: cursorValue(() => cursors),
    });
    await fc.assert(
      fc.asyncProperty(fc.boolean(), query, async (asAdmin, search) => {
        const path = `/api/v1/audit?${search}`;
        const what = `GET ${path} as ${asAdmin ? 'admin' : 'user'}`;
        const response = await probe(what, () => server.client.get(path, { token: asAdmin ? admin.accessToken : user.accessToken }), asAdmin ? [200, 400] : [403]);
        if (response.status === 200) {
          const body = response.body as { data: Array<Record<string, unknown>>; meta: { nextCursor: string | null } };
          assert.ok(body.data.length <= 100, what);
          const params = new URLSearchParams(search);
          const action = params.get('action');
          if (action !== null) for (const event of body.data) assert.equal(event['action'], action, `filter ignored: ${what}`);
        }
      }),
      options,
    );
  });

  // Found by the cursor fuzz: ISO 8601 (and JavaScript) have a year 0000, PostgreSQL's timestamps do
  // not; PGlite gets the Date as its ISO string and fails "date/time field value out of range".
  it('when a cursor names the year 0000 (a valid ISO 8601 instant), then every identity list answers 400 or an empty page, not 500', async () => {
    const problems: string[] = [];
    for (const iso of ['0000-01-01T00:00:00.000Z', '0000-12-31T23:59:59.999Z', '0001-01-01T00:00:00.000Z']) {
      const cursor = b64url(`${iso}|00000000-0000-1000-8000-000000000000`);
      for (const path of ['/api/v1/auth/sessions', '/api/v1/api-keys', '/api/v1/audit']) {
        const what = `GET ${path}?cursor=${cursor} (${iso}) as admin`;
        await probe(what, () => server.client.get(`${path}?cursor=${cursor}`, { token: admin.accessToken }), [200, 400]).catch((error: Error) =>
          problems.push(error.message.split('\n')[0] ?? what),
        );
      }
    }
    assert.deepEqual(problems, []);
  });

  it('when the fuzzing is over, then the seeded users still work and nothing was polluted', async () => {
    assert.equal(({} as Record<string, unknown>)['role'], undefined);
    for (const session of [user, other, enroller, sessionUser, admin]) {
      assert.equal((await server.client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
    }
  });
});
