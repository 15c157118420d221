// Property-based fuzzing of every body and query of the auth and users routes. Whatever arrives --
// arbitrary JSON, near-valid bodies with one field wrong, extra keys, huge or unicode strings, NUL
// bytes, numbers as strings, raw non-JSON text under any content type -- the service answers:
//   - never 5xx;
//   - on 4xx, the contract's error body, with a code the contract lists for that status;
//   - rows are created only by a 2xx (users and refresh_tokens are counted around every request).
// Well-formed inputs may legitimately succeed; the properties hold either way.
// A second fuzzer sends malformed requests (bad percent-encodings, overlong segments, odd id forms,
// encoded slashes and NULs, odd methods and content types, lone surrogates, broken HTTP/1.1) and checks
// that every answer, including those Fastify's router and Node's parser give, is on contract.
import assert from 'node:assert/strict';
import http from 'node:http';
import fc from 'fast-check';
import { loginAdmin, registerAndLogin, type Session } from '../helpers/auth.js';
import type { ApiResponse } from '../helpers/client.js';
import { rawExchange } from '../helpers/raw-http.js';
import { apiHeaderProblems } from '../helpers/security-headers.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import {
  anyValue,
  CODES_BY_STATUS,
  NUM_RUNS,
  SEED,
  assertContractResponse,
  bodies,
  contentType,
  describePayload,
  emailValue,
  nameValue,
  numberLikeString,
  passwordValue,
  rawText,
  refreshTokenValue,
  roleValue,
  runOptions,
  encodeAll,
  encodeSome,
  shortText,
  type Payload,
} from '../helpers/fuzz.js';


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

// ---------- malformed requests ----------

const MALFORMED_RUNS = Number(process.env['FUZZ_MALFORMED_RUNS'] ?? 10_000);
const MALFORMED_CONCURRENCY = 16;

/** What each status may carry on a malformed request (more routes are reached than above). */
const MALFORMED_CODES: Readonly<Record<number, readonly string[]>> = {
  ...CODES_BY_STATUS,
  409: ['EMAIL_TAKEN', 'IDEMPOTENCY_IN_PROGRESS', 'PENDING_ALREADY_POSTED', 'PENDING_ALREADY_VOIDED', 'PENDING_EXPIRED', 'ACCOUNT_NOT_EMPTY'],
  417: ['EXPECTATION_FAILED'],
  422: ['INSUFFICIENT_FUNDS', 'CURRENCY_MISMATCH', 'IDEMPOTENCY_KEY_REUSED', 'AMOUNT_EXCEEDS_PENDING', 'BALANCE_LIMIT_EXCEEDED'],
  431: ['HEADERS_TOO_LARGE'],
};

/** Sent with node:http over keep-alive connections, or as raw bytes on a connection of its own. */
type MalformedRequest =
  | {
      readonly kind: 'http';
      readonly method: string;
      readonly target: string;
      readonly headers: Readonly<Record<string, string>>;
      readonly body: Buffer | undefined;
    }
  | { readonly kind: 'raw'; readonly wire: string };

const BAD_PERCENT = [
  '%', '%z', '%zz', '%g0', '%0', '%%', '%%30', '%E0%A4', '%ED%A0%80', '%ED%B0%80', '%C0%AF', '%FF', '%C3', '%F0%9F%92',
  '%u0041', 'a%', 'a%2', '%2', '%00', '%2F', '%2f', '%5C', '%2e%2e', '..%2F', '%252F', '%0A', '%0D%0A', '%09', '%7F', '%25',
];

const oddUuid: fc.Arbitrary<string> = fc.uuid().chain((id) =>
  fc.constantFrom(
    id,
    id.toUpperCase(),
    `urn:uuid:${id}`,
    `URN:UUID:${id}`,
    `urn:uuid:${id.toUpperCase()}`,
    `{${id}}`,
    `%7B${id}%7D`,
    id.replace(/-/g, ''),
    id.replace(/-/g, '%2D'),
    `${id}x`,
    `x${id}`,
    `${id}%00`,
    `${id}%20`,
    `%20${id}`,
    `${id}%2F`,
    `${id}%2Fx`,
    `${id}.json`,
    `${id};x=1`,
    `${id},${id}`,
    `${id}0`,
    id.slice(0, 35),
    id.replace(/[0-9a-f]/, 'g'),
    `${id.slice(0, 8)}-${id.slice(9)}`.replace('-', ''),
  ),
);

const overlongSegment: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: 95, max: 400 }).map((count) => 'a'.repeat(count)),
  fc.integer({ min: 30, max: 140 }).map((count) => '%41'.repeat(count)),
  fc.integer({ min: 3, max: 12 }).chain((count) => fc.uuid().map((id) => id.repeat(count))),
  fc.integer({ min: 2, max: 6 }).chain((count) => fc.uuid().map((id) => `urn:uuid:${id}`.repeat(count))),
);

function malformedSegment(realIds: readonly string[]): fc.Arbitrary<string> {
  const realIdForms =
    realIds.length === 0
      ? oddUuid
      : fc.constantFrom(...realIds).chain((id) => fc.constantFrom(id, id.toUpperCase(), `urn:uuid:${id}`, `{${id}}`, `${id}%00`));
  return fc.oneof(
    { weight: 4, arbitrary: oddUuid },
    { weight: 1, arbitrary: realIdForms },
    { weight: 3, arbitrary: fc.constantFrom(...BAD_PERCENT) },
    { weight: 2, arbitrary: fc.tuple(oddUuid, fc.constantFrom(...BAD_PERCENT)).map(([id, junk]) => `${id}${junk}`) },
    { weight: 2, arbitrary: overlongSegment },
    { weight: 2, arbitrary: shortText.map(encodeSome) },
    { weight: 1, arbitrary: shortText.map(encodeAll) },
    { weight: 1, arbitrary: fc.constantFrom('me', '', '.', '..', '~', '*', '{}', '{id}', ':id', 'null', 'undefined', '0', '-1') },
  );
}

const ID_ROUTES = [
  '/api/v1/users/:id',
  '/api/v1/accounts/:id',
  '/api/v1/transfers/:id',
  '/api/v1/accounts/:id/transfers',
  '/api/v1/accounts/:id/deposits',
  '/api/v1/accounts/:id/withdrawals',
  '/api/v1/transfers/:id/post',
  '/api/v1/transfers/:id/void',
  '/api/v1/webhooks/:id',
  '/api/v1/webhooks/:id/deliveries',
  '/api/v1/webhooks/:id/rotate-secret',
  '/api/v1/webhooks/:id/deliveries/:id/redeliver',
  '/api/v1/users/:id/:id',
  '/api/v1/:id',
  '/api/:id/users/me',
  '/:id',
  '/health/:id',
];
const FIXED_PATHS = [
  '/api/v1/users',
  '/api/v1/users/me',
  '/api/v1/accounts',
  '/api/v1/transfers',
  '/api/v1/webhooks',
  '/api/v1/auth/login',
  '/api/v1/auth/register',
  '/api/v1/auth/refresh',
  '/health',
  '//api/v1/users',
  '/api/v1/users/',
  '/API/V1/USERS',
  '/api/v1/users;x=1',
  '/api/v1/./users',
  '/api/v1/users/../users/me',
  '/api/v1/users%2Fme',
  '/api/v1%2Fusers%2Fme',
  '/api/v1/users/me%00',
  '/api/v1/users/me%2500',
  '/api/v1/users\\me',
  '/api/v1/users/me/',
  '/api/v1/users/me.json',
];

function malformedPath(realIds: readonly string[]): fc.Arbitrary<string> {
  const segment = malformedSegment(realIds);
  return fc.oneof(
    { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...ID_ROUTES), segment, segment).map(([route, first, second]) => route.replace(':id', first).replace(':id', second)) },
    { weight: 2, arbitrary: fc.constantFrom(...FIXED_PATHS) },
  );
}

const malformedQuery: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: queryString.map((query) => `?${query}`) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('ownerId', 'page', 'limit', 'cursor', 'system'), malformedSegment([])).map(([key, value]) => `?${key}=${value}`) },
  { weight: 1, arbitrary: fc.constantFrom('?', '??', '?%zz', '?a=%', '?system=maybe', '?cursor=%00', '#frag', '?#', '?page=1#x') },
);

const LONE_SURROGATES = ['\ud800', 'a\udbffb', '\udc00', 'x\udfff', '\ud800\ud800', '\udc00\ud800', `${'y'.repeat(99)}\ud800`];
const loneSurrogateText = fc.constantFrom(...LONE_SURROGATES);

/** JSON bodies, each with a lone surrogate (or another fault) in a stored or checked field. */
const malformedJsonBody: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({ email: fc.emailAddress(), name: loneSurrogateText, password: fc.constant('password-123') }),
  fc.record({ email: loneSurrogateText.map((text) => `a${text}@example.com`), name: fc.constant('x'), password: fc.constant('password-123') }),
  fc.record({ name: loneSurrogateText }),
  fc.record({ currency: fc.constantFrom('USD', 'EUR', 'usd', '\ud800SD'), name: loneSurrogateText }),
  fc.record({ fromAccountId: oddUuid, toAccountId: oddUuid, amount: fc.constantFrom(1, 10, 0, -1, 1.5, '10'), description: loneSurrogateText }),
  fc.record({ amount: fc.constantFrom(1, '1', 1e300, -0, null) }),
  fc.record({ refreshToken: loneSurrogateText }),
  fc.record({ email: fc.emailAddress(), password: loneSurrogateText }),
  fc.dictionary(loneSurrogateText, anyValue, { minKeys: 1, maxKeys: 2 }),
  fc.jsonValue({ maxDepth: 2 }),
);

const malformedBody: fc.Arbitrary<Buffer | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 4, arbitrary: malformedJsonBody.map((value) => Buffer.from(JSON.stringify(value) ?? 'null', 'utf8')) },
  { weight: 2, arbitrary: rawText.filter((text) => text.length < 50_000).map((text) => Buffer.from(text, 'utf8')) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      Buffer.from([0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d]), // {"name":"<CESU surrogate>"}
      Buffer.from([0xff, 0xfe, 0x7b, 0x7d]),
      Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
      Buffer.from('{"name":"\\ud800"}', 'utf8'),
      Buffer.from('{"description":"\\udfff"}', 'utf8'),
    ),
  },
);

const malformedContentType = fc.oneof(
  contentType,
  fc.constantFrom(
    'application/json; charset=utf-16',
    'application/json;;',
    'application/',
    '*/*',
    'application/json, text/html',
    'application/json\t',
    'APPLICATION/JSON; CHARSET=UTF-8',
    'application/json; charset="utf-8"',
    'application/merge-patch+json',
    'application/problem+json; q=1',
    'text/json',
    'json',
    ';',
    '',
  ),
);

const GOOD_METHODS = ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE', 'PUT', 'OPTIONS'] as const;
const ODD_METHODS = ['PROPFIND', 'TRACE', 'PURGE', 'SEARCH', 'LOCK', 'MKCOL', 'COPY', 'M-SEARCH', 'FOO', 'BREW', 'GETS', 'X'] as const;

function malformedHttpRequest(realIds: readonly string[], tokens: readonly string[]): fc.Arbitrary<MalformedRequest> {
  return fc
    .record({
      method: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...GOOD_METHODS) }, { weight: 1, arbitrary: fc.constantFrom(...ODD_METHODS) }),
      path: malformedPath(realIds),
      query: malformedQuery,
      authorization: fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...tokens).map((token) => `Bearer ${token}`) },
        { weight: 1, arbitrary: fc.constantFrom('', 'Bearer', 'Bearer x', 'Basic Zm9vOmJhcg==', `Bearer ${tokens[0] ?? ''}x`, 'bearer  a.b.c') },
      ),
      withAuthorization: fc.boolean(),
      contentType: fc.option(malformedContentType, { freq: 4 }),
      requestId: fc.option(fc.constantFrom('fuzz-id.1', 'A'.repeat(128), 'A'.repeat(129), 'has space', 'ümlaut', ''), { freq: 2 }),
      acceptEncoding: fc.option(fc.constantFrom('gzip', 'br', 'deflate', '*;q=0', 'identity;q=0', 'x'), { freq: 3 }),
      idempotencyKey: fc.option(fc.constantFrom('k', 'x'.repeat(255), 'x'.repeat(256), ' '), { freq: 2 }),
      body: malformedBody,
    })
    .map(({ method, path, query, authorization, withAuthorization, contentType: type, requestId, acceptEncoding, idempotencyKey, body }) => {
      const headers: Record<string, string> = {};
      if (withAuthorization && authorization !== '') headers['authorization'] = authorization;
      if (type !== null && type !== undefined) headers['content-type'] = type;
      if (requestId !== null && requestId !== '') headers['x-request-id'] = requestId;
      if (acceptEncoding !== null) headers['accept-encoding'] = acceptEncoding;
      if (idempotencyKey !== null) headers['idempotency-key'] = idempotencyKey;
      return { kind: 'http', method, target: `${path}${query}`, headers, body };
    });
}

/** Raw bytes that node:http would refuse to send: broken request lines, headers and framing. */
function malformedRawRequest(realIds: readonly string[]): fc.Arbitrary<MalformedRequest> {
  const target = fc.oneof(
    malformedPath(realIds),
    fc.constantFrom(
      '/api/v1/users/\u0000',
      '/api/v1/users/a b',
      '/api/v1/users/\t',
      '/api/v1/users/\u00e9\u00ff',
      '/api/v1/users/\u007f',
      '*',
      'http://evil.example/api/v1/users/me',
      'api/v1/users',
      '',
      '/health#frag',
      `/api/v1/users/${'a'.repeat(20_000)}`,
    ),
  );
  const requestLine = fc.oneof(
    { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...GOOD_METHODS, ...ODD_METHODS), target).map(([method, path]) => `${method} ${path} HTTP/1.1`) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom('HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'HTTPS/1.1', 'http/1.1', 'HTTP/1.1 ', 'HTTP/11', ''), target)
        .map(([version, path]) => `GET ${path} ${version}`.trimEnd()),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom('BLAH', 'GET', 'GET /', ' GET / HTTP/1.1', 'G@T / HTTP/1.1', 'GET  / HTTP/1.1', '\u0000', 'CONNECT example.com:443 HTTP/1.1'),
    },
  );
  const headerBlock = fc.constantFrom<readonly string[]>(
    ['Host: x'],
    [],
    ['Host: x', 'Host: y'],
    ['Host: a b'],
    ['Host: x', 'X-No-Colon'],
    ['Host: x', 'Bad Name: v'],
    ['Host: x', 'X-Fold: a', ' b'],
    ['Host: x', 'X-Ctl: a\u0001b'],
    ['Host: x', 'X-Nul: a\u0000b'],
    ['Host: x', 'Content-Length: 2', 'Transfer-Encoding: chunked'],
    ['Host: x', 'Transfer-Encoding: gzip'],
    ['Host: x', 'Content-Length: -1'],
    ['Host: x', 'Content-Length: abc'],
    ['Host: x', 'Content-Length: 1', 'Content-Length: 2'],
    ['Host: x', `X-Big: ${'a'.repeat(20_000)}`],
    ['Host: x', 'Expect: 200-ok'],
    ['Host: x', 'Expect: 100-continue', 'Content-Length: 0'],
    ['Host: x', 'Upgrade: websocket', 'Connection: Upgrade'],
    ['Host: x', 'Content-Type: application/json', 'Content-Length: 17', '', '{"name":"\\ud800"}'],
  );
  return fc.tuple(requestLine, headerBlock).map(([line, headers]) => {
    const bodyStart = headers.indexOf('');
    const head = bodyStart === -1 ? headers : headers.slice(0, bodyStart);
    const body = bodyStart === -1 ? '' : headers.slice(bodyStart + 1).join('');
    return { kind: 'raw', wire: `${[line, ...head, 'Connection: close'].join('\r\n')}\r\n\r\n${body}` };
  });
}

const describeMalformed = (request: MalformedRequest): string => {
  const shown =
    request.kind === 'raw'
      ? `raw ${JSON.stringify(request.wire)}`
      : `${request.method} ${request.target} ${JSON.stringify(request.headers)} body=${JSON.stringify(request.body?.toString('utf8') ?? null)}`;
  return shown.length > 400 ? `${shown.slice(0, 400)}… (${shown.length} chars)` : shown;
};

/**
 * Sends one request over `agent`'s keep-alive connections (`false`: a connection of its own); what
 * node:http refuses to send goes out raw.
 */
function sendMalformed(baseUrl: string, agent: http.Agent | false, request: MalformedRequest): Promise<ApiResponse> {
  if (request.kind === 'raw') return rawExchange(baseUrl, request.wire);
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    let outgoing: http.ClientRequest;
    try {
      outgoing = http.request({
        host: hostname,
        port: Number(port),
        agent,
        method: request.method,
        path: request.target,
        headers: { ...request.headers, ...(request.body === undefined ? {} : { 'content-length': String(request.body.length) }) },
        timeout: 15_000,
      });
    } catch {
      const head = Object.entries(request.headers).map(([name, value]) => `${name}: ${value}`);
      const wire = `${[`${request.method} ${request.target} HTTP/1.1`, 'Host: x', ...head, 'Connection: close'].join('\r\n')}\r\n\r\n`;
      resolve(rawExchange(baseUrl, wire));
      return;
    }
    outgoing.on('response', (response) => {
      const parts: Buffer[] = [];
      response.on('data', (part: Buffer) => parts.push(part));
      response.on('error', reject);
      response.on('end', () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (typeof value === 'string') headers.set(name, value);
          else if (Array.isArray(value)) for (const item of value) headers.append(name, item);
        }
        const text = Buffer.concat(parts).toString('utf8');
        let body: unknown;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: response.statusCode ?? 0, headers, body, text });
      });
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error('no answer within 15 s')));
    outgoing.on('error', reject);
    outgoing.end(request.body);
  });
}

/** Every way an answer to a malformed request is off contract (empty: on contract). */
function malformedAnswerProblems(request: MalformedRequest, response: ApiResponse): string[] {
  if (response.status === 0) return ['no answer'];
  const problems: string[] = [];
  if (response.status >= 500) problems.push(`status ${response.status}`);
  const requestId = response.headers.get('x-request-id');
  if (!requestId || !/^[A-Za-z0-9._-]{1,128}$/.test(requestId)) problems.push(`X-Request-Id: ${String(requestId)}`);
  problems.push(...apiHeaderProblems(response.headers));
  const isHead = request.kind === 'http' ? request.method === 'HEAD' : /^HEAD /.test(request.wire);
  if (response.status < 400 || isHead) return problems;
  if (!/^application\/json/.test(response.headers.get('content-type') ?? '')) problems.push(`content-type ${String(response.headers.get('content-type'))}`);
  const body = response.body as { error?: Record<string, unknown> } | undefined;
  const error = body?.error;
  if (!body || typeof body !== 'object' || Object.keys(body).join() !== 'error' || !error || typeof error !== 'object') {
    return [...problems, 'not {"error": {...}}'];
  }
  const extra = Object.keys(error).filter((key) => !['code', 'message', 'requestId', 'errors'].includes(key));
  if (extra.length > 0) problems.push(`extra keys ${extra.join(',')}`);
  const code = String(error['code']);
  if (!MALFORMED_CODES[response.status]?.includes(code)) problems.push(`code ${code} for ${response.status}`);
  if (typeof error['message'] !== 'string' || error['message'] === '') problems.push('no message');
  const replayed = response.headers.get('idempotent-replayed') === 'true';
  if (!replayed && error['requestId'] !== requestId) problems.push(`requestId ${String(error['requestId'])} is not X-Request-Id ${String(requestId)}`);
  if (error['errors'] !== undefined && (code !== 'VALIDATION_FAILED' || !Array.isArray(error['errors']) || error['errors'].length === 0)) {
    problems.push('errors only (and non-empty) for VALIDATION_FAILED');
  }
  if (/\bat [^\s]+ \(|node_modules|\/src\/|\.ts:\d+|syntax error at|SQLSTATE|FST_ERR/i.test(response.text)) problems.push('internals leaked');
  return problems;
}

/** Runs `task` over `items` with at most `concurrency` in flight. */
async function inPool<T>(items: readonly T[], concurrency: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

// ---------- checks ----------

describeOnBackends('fuzzing bodies and queries', ({ it, before, startServer }) => {
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
    assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'name', 'role', 'updatedAt']);
    assert.equal(created['email'], sent.email.trim().toLowerCase(), 'emails are trimmed and lower-cased');
    assert.equal(created['role'], role ?? sent.role ?? 'user');
  };

  before(async () => {
    prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort();
    server = await startServer({ LOGIN_MAX_FAILURES: '1000' });
    admin = await loginAdmin(server.client);
    user = await registerAndLogin(server.client);
    target = await registerAndLogin(server.client);
    passwordUser = await registerAndLogin(server.client);
  });

  it('when arbitrary bodies are POSTed to /auth/register, then no 5xx and a user row only on 201', async () => {
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

  it('when arbitrary bodies are POSTed to /auth/login, then no 5xx and no session without 200', async () => {
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

  it('when arbitrary bodies are POSTed to /auth/refresh, then no 5xx and no token row without 200', async () => {
    await fc.assert(
      fc.asyncProperty(bodies({ refreshToken: refreshTokenValue }), async (payload) => {
        const what = `POST /auth/refresh ${describePayload(payload)}`;
        const response = await probe(what, () => send('POST', '/api/v1/auth/refresh', payload), { refreshTokens: 1 });
        assert.ok([400, 401, 413, 415].includes(response.status), `unexpected status: ${what} -> ${response.status}`);
      }),
      runOptions,
    );
  });

  it('when arbitrary bodies are POSTed to /auth/logout, then no 5xx and nothing is created', async () => {
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

  it('when arbitrary bodies are POSTed to /auth/password, then no 5xx and the password is unchanged', async () => {
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

  it('when arbitrary bodies are POSTed to /users as admin, then no 5xx and a user row only on 201', async () => {
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

  it('when arbitrary bodies are POSTed to /users as a non-admin, then 403 or 4xx and never a row', async () => {
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

  it('when arbitrary ids and bodies are PATCHed to /users/:id, then no 5xx and no row is created', async () => {
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

  it('when arbitrary page and limit queries hit GET /users, then 200 with a sane page or a 400', async () => {
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

  it('when arbitrary ids hit GET /users/:id, then 200 for a visible user, else 400 or 404', async () => {
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

  it('when fixed adversarial bodies hit every body route, then each answers a contract 4xx', async () => {
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
      ['POST', '/api/v1/webhooks', admin.accessToken],
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

  it('when a name contains a NUL character, then register, create and update answer 4xx, not 500', async () => {
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

  it('when page is far past any row (1e308, 1e20, 2^53+1), then 400 or an empty page for that page, not 500', async () => {
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

  it(`when ${MALFORMED_RUNS} malformed requests arrive (paths, encodings, id forms, methods, content types, lone surrogates, broken HTTP), then none is 5xx and every answer is on contract`, { timeout: 240_000 }, async () => {
    const victim = await registerAndLogin(server.client);
    const account = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, { token: victim.accessToken });
    assert.equal(account.status, 201, account.text);
    const realIds = [victim.user.id, account.body.data.id];
    const tokens = [admin.accessToken, victim.accessToken];
    const seed = SEED ?? Date.now() ^ (Math.random() * 0x7fffffff);
    const requests = fc.sample(
      fc.oneof({ weight: 9, arbitrary: malformedHttpRequest(realIds, tokens) }, { weight: 1, arbitrary: malformedRawRequest(realIds) }),
      { numRuns: MALFORMED_RUNS, seed },
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: MALFORMED_CONCURRENCY });
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    try {
      await inPool(requests, MALFORMED_CONCURRENCY, async (request) => {
        let problems: string[];
        let response: ApiResponse | undefined;
        try {
          // A reused keep-alive socket can be closed by the server just as it is reused (after an
          // answer that left a body unread): that request alone is retried on a connection of its own.
          response = await sendMalformed(server.baseUrl, agent, request).catch(() => sendMalformed(server.baseUrl, false, request));
          problems = malformedAnswerProblems(request, response);
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        } catch (error) {
          problems = [`request failed: ${(error as Error).message}`];
        }
        if (problems.length > 0 && failures.length < 25) {
          failures.push(`${describeMalformed(request)}\n    -> ${response?.status ?? '-'} ${response?.text.slice(0, 200) ?? ''}\n    ${problems.join('; ')}`);
        }
      });
    } finally {
      agent.destroy();
    }
    assert.deepEqual(failures, [], `seed ${seed} (FUZZ_SEED=${seed} reproduces); statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
    process.stdout.write(`# malformed requests: ${requests.length}, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}\n`);
  });

  it('when the fuzzing is over, then no prototype was polluted and every session still works', async () => {
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys);
    assert.equal(({} as Record<string, unknown>)['role'], undefined);
    for (const session of [admin, user, target]) {
      assert.equal((await server.client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
    }
    const me = await server.client.get<{ data: { role: string } }>('/api/v1/users/me', { token: user.accessToken });
    assert.equal(me.body.data.role, 'user', 'no fuzzed request made the user an admin');
  });
});
