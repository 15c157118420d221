// Property-based fuzzing kit shared by the fuzz suites: value generators that are near-valid,
// hostile or plain random, request bodies built from them (complete, partial with extra keys, any
// JSON, raw text under any content type), and the check every answer must pass: no 5xx, and on 4xx
// the contract's error body with a code the contract lists for that status.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ApiResponse } from './client.js';

export const NUM_RUNS = Number(process.env['FUZZ_RUNS'] ?? 150);
export const SEED = process.env['FUZZ_SEED'] === undefined ? undefined : Number(process.env['FUZZ_SEED']);
export const runOptions = { numRuns: NUM_RUNS, ...(SEED === undefined ? {} : { seed: SEED }) };

/** The codes the contract allows for each status. */
export const CODES_BY_STATUS: Readonly<Record<number, readonly string[]>> = {
  400: ['VALIDATION_FAILED', 'INVALID_JSON', 'INVALID_TOKEN', 'INVALID_MFA_CODE'],
  // MFA_REQUIRED is left out: only gRPC and GraphQL logins throw it; over REST a login with MFA is a 200 challenge.
  401: ['UNAUTHENTICATED', 'INVALID_CREDENTIALS', 'INVALID_REFRESH_TOKEN', 'TOKEN_REUSED', 'INVALID_MFA_CODE', 'OIDC_FAILED'],
  403: ['FORBIDDEN', 'INVALID_CURRENT_PASSWORD'],
  404: ['NOT_FOUND', 'ROUTE_NOT_FOUND'],
  409: ['EMAIL_TAKEN', 'MFA_ALREADY_ENABLED'],
  413: ['PAYLOAD_TOO_LARGE'],
  415: ['UNSUPPORTED_MEDIA_TYPE'],
  429: ['RATE_LIMITED'],
};

export type Payload =
  | { readonly kind: 'json'; readonly value: unknown }
  | { readonly kind: 'raw'; readonly text: string; readonly contentType: string | undefined };

// ---------- generators ----------

export const SPECIAL_STRINGS = [
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

export const text: fc.Arbitrary<string> = fc.oneof(
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

export const numberLikeString: fc.Arbitrary<string> = fc.oneof(
  fc.integer().map(String),
  fc.integer({ min: -5, max: 200 }).map(String),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(String),
  fc.double().map(String),
  fc.constantFrom('1e308', '1e20', '9007199254740993', '2147483648', '-0', '0', '1.0', '1.5', ' 1', '0x10', '+1', 'Infinity', '-Infinity', 'NaN', ''),
);

export const json = fc.jsonValue({ maxDepth: 3 });
export const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: text },
  { weight: 2, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), numberLikeString) },
  { weight: 1, arbitrary: fc.array(json, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), json, { maxKeys: 4 }) },
  { weight: 1, arbitrary: text.map((value) => [value]) },
  { weight: 1, arbitrary: text.map((value) => ({ value })) },
);

/** A field: mostly a well-typed value (so validation is passed and the service is reached), else anything. */
export const field = (wellTyped: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 3, arbitrary: wellTyped }, { weight: 1, arbitrary: anyValue });

export const hex12 = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 12, maxLength: 12 });
export const emailValue = field(
  fc.oneof(
    { weight: 3, arbitrary: fc.emailAddress() },
    { weight: 1, arbitrary: fc.emailAddress().map((email) => `  ${email.toUpperCase()} `) },
    { weight: 2, arbitrary: hex12.map((suffix) => `fuzz-${suffix}@example.com`) },
    { weight: 1, arbitrary: text.map((local) => `${local}@example.com`) },
  ),
);
export const nameValue = field(
  fc.oneof(
    fc.string({ minLength: 1, maxLength: 100 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 100 }),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
    fc.constantFrom(...SPECIAL_STRINGS.filter((value) => value.length > 0)),
  ),
);
export const passwordValue = field(
  fc.oneof(
    fc.string({ minLength: 8, maxLength: 128 }),
    fc.string({ unit: 'binary', minLength: 8, maxLength: 128 }),
    fc.string({ minLength: 1, maxLength: 10 }),
    fc.constantFrom('x'.repeat(128), 'x'.repeat(129), 'pass\u0000word!', '\u0000'.repeat(8)),
  ),
);
export const refreshTokenValue = field(
  fc.oneof(
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes).toString('base64url')),
    fc.string({ minLength: 1, maxLength: 512 }),
    fc.constantFrom('x'.repeat(512), 'x'.repeat(513), '\u0000'),
  ),
);
export const roleValue = field(fc.constantFrom('user', 'admin', 'Admin', 'ADMIN', 'root', 'superuser', ''));

export const contentType = fc.constantFrom(
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
export const rawText: fc.Arbitrary<string> = fc.oneof(
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

export const raw: fc.Arbitrary<Payload> = fc.record({ text: rawText, contentType }).map(({ text: body, contentType: type }) => ({
  kind: 'raw',
  text: body,
  contentType: type,
}));

/** Bodies for an endpoint with the given fields: complete, partial with extra keys, any JSON, raw text. */
export function bodies(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Payload> {
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


export const describePayload = (payload: Payload): string => {
  const shown = payload.kind === 'json' ? JSON.stringify(payload.value) ?? 'undefined' : `raw(${String(payload.contentType)}) ${payload.text}`;
  return shown.length > 300 ? `${shown.slice(0, 300)}… (${shown.length} chars)` : shown;
};

export function assertContractResponse(response: ApiResponse, what: string): void {
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
  // A validation item's path echoes the client's own field name (a key "Pg_" is the client's,
  // not a leak), so the paths are blanked before the body is searched for internals.
  const withoutEchoedPaths = JSON.stringify({
    ...error,
    ...(Array.isArray(error['errors']) ? { errors: (error['errors'] as Array<Record<string, unknown>>).map((entry) => ({ ...entry, path: '' })) } : {}),
  });
  assert.doesNotMatch(withoutEchoedPaths, /\bat [^\s]+ \(|node_modules|\/src\/|\.ts:\d+|syntax error at|violates|relation "|pg_|SQLSTATE/i, `internals leaked: ${context}`);
}

/** Percent-encodes every byte, so any string (lone surrogates included) makes a valid URL. */
export const encodeAll = (value: string): string =>
  [...Buffer.from(value, 'utf8')].map((byte) => `%${byte.toString(16).padStart(2, '0').toUpperCase()}`).join('');
export const encodeSome = (value: string): string => {
  try {
    return encodeURIComponent(value);
  } catch {
    return encodeAll(value);
  }
};

export const shortText = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom(...SPECIAL_STRINGS));
