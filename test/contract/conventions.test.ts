// Contract: "Conventions" — what every endpoint shares: JSON-only bodies, strict validation, the one
// error shape, request ids, security headers, CORS and the per-client rate limit on /api/.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { gunzipSync } from 'node:zlib';
import { describe } from 'node:test';
import type { ApiResponse } from '../helpers/client.js';
import { loginAdmin, registerAndLogin, uniqueEmail } from '../helpers/auth.js';
import { expectError, pathsOf } from '../helpers/errors.js';
import { parseRawResponse, rawExchange } from '../helpers/raw-http.js';
import { expectApiHeaders } from '../helpers/security-headers.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';

const ONE_MIB = 1024 * 1024;
const ALLOWED_ORIGIN = 'https://app.example.com';
const OTHER_ALLOWED_ORIGIN = 'https://admin.example.com';
const FOREIGN_ORIGIN = 'https://evil.example.net';
const REGISTER = '/api/v1/auth/register';

/** node:http, for what fetch cannot send: a body without any content-type, or a chunked body. */
function rawRequest(
  baseUrl: string,
  options: { method: string; path: string; headers?: Record<string, string>; chunks: readonly string[] },
): Promise<ApiResponse<unknown>> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${baseUrl}${options.path}`, { method: options.method, headers: options.headers ?? {} }, (response) => {
      const parts: Buffer[] = [];
      response.on('data', (part: Buffer) => parts.push(part));
      response.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (typeof value === 'string') headers.set(name, value);
          else if (Array.isArray(value)) headers.set(name, value.join(', '));
        }
        let body: unknown;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: response.statusCode ?? 0, headers, body, text });
      });
      response.on('error', reject);
    });
    // The server may answer (413) and stop reading before the whole body is written.
    request.on('error', reject);
    for (const chunk of options.chunks) request.write(chunk);
    request.end();
  });
}

describeOnBackends('conventions', ({ it, before, startServer }) => {
  let server: TestServer;
  /** RATE_LIMIT_MAX=5 behind a trusted proxy: each test is its own client via X-Forwarded-For. */
  let limited: TestServer;
  /** RATE_LIMIT_MAX=5 without TRUST_PROXY: X-Forwarded-For must not change who the client is. */
  let limitedUntrusted: TestServer;

  before(async () => {
    [server, limited, limitedUntrusted] = await Promise.all([
      startServer({ ALLOWED_ORIGINS: `${ALLOWED_ORIGIN},${OTHER_ALLOWED_ORIGIN}` }),
      startServer({ RATE_LIMIT_MAX: '5', TRUST_PROXY: '127.0.0.1' }),
      startServer({ RATE_LIMIT_MAX: '5' }),
    ]);
  });
  const usersWithEmail = async (email: string): Promise<number> => {
    const row = await server.app.database.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  };
  const validRegistration = () => ({ email: uniqueEmail('conv'), name: 'Conventions', password: 'correct-horse-1' });

  describe('content types', () => {
    it('when a JSON-looking body is sent as text/plain, then 415 UNSUPPORTED_MEDIA_TYPE and nothing is created', async () => {
      const input = validRegistration();
      const response = await server.client.post(REGISTER, undefined, {
        raw: JSON.stringify(input),
        headers: { 'content-type': 'text/plain' },
      });
      expectError(response, 415, 'UNSUPPORTED_MEDIA_TYPE');
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when a body is sent as form data, then 415 UNSUPPORTED_MEDIA_TYPE', async () => {
      const response = await server.client.post(REGISTER, undefined, {
        raw: 'email=a%40example.com&name=A&password=correct-horse-1',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expectError(response, 415, 'UNSUPPORTED_MEDIA_TYPE');
    });

    it('when a body comes without any content-type header, then 415 UNSUPPORTED_MEDIA_TYPE and nothing is created', async () => {
      const input = validRegistration();
      const payload = JSON.stringify(input);
      const response = await rawRequest(server.baseUrl, {
        method: 'POST',
        path: REGISTER,
        headers: { 'content-length': String(Buffer.byteLength(payload)) },
        chunks: [payload],
      });
      expectError(response, 415, 'UNSUPPORTED_MEDIA_TYPE');
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when the content type is application/json with a charset, then the body is accepted', async () => {
      const input = validRegistration();
      const response = await server.client.post(REGISTER, undefined, {
        raw: JSON.stringify(input),
        headers: { 'content-type': 'application/json; charset=utf-8' },
      });
      assert.equal(response.status, 201, response.text);
      assert.equal(await usersWithEmail(input.email), 1);
    });
  });

  describe('malformed and oversized bodies', () => {
    it('when the JSON is malformed, then 400 INVALID_JSON without field errors', async () => {
      for (const raw of ['{"email": "a@example.com",', '{email: 1}', "{'a': 1}", '[1, 2', 'nul']) {
        const response = await server.client.post(REGISTER, undefined, {
          raw,
          headers: { 'content-type': 'application/json' },
        });
        expectError(response, 400, 'INVALID_JSON');
      }
    });

    it('when the body is larger than 1 MiB, then 413 PAYLOAD_TOO_LARGE and nothing is created', async () => {
      const input = validRegistration();
      const raw = JSON.stringify({ ...input, name: 'x'.repeat(ONE_MIB + 10) });
      const response = await server.client.post(REGISTER, undefined, {
        raw,
        headers: { 'content-type': 'application/json' },
      });
      expectError(response, 413, 'PAYLOAD_TOO_LARGE');
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when a body of over 1 MiB is streamed without a length (chunked), then 413 PAYLOAD_TOO_LARGE', async () => {
      const chunk = 'x'.repeat(64 * 1024);
      const chunks = ['{"email":"chunked@example.com","password":"correct-horse-1","name":"'];
      for (let written = 0; written <= ONE_MIB; written += chunk.length) chunks.push(chunk);
      chunks.push('"}');
      const response = await rawRequest(server.baseUrl, {
        method: 'POST',
        path: REGISTER,
        headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        chunks,
      });
      expectError(response, 413, 'PAYLOAD_TOO_LARGE');
    });

    it('when the body is exactly 1 MiB, then it is not rejected for its size (400 for the too-long name instead)', async () => {
      const prefix = '{"email":"exact@example.com","password":"correct-horse-1","name":"';
      const suffix = '"}';
      const raw = prefix + 'x'.repeat(ONE_MIB - prefix.length - suffix.length) + suffix;
      assert.equal(Buffer.byteLength(raw), ONE_MIB);
      const response = await server.client.post(REGISTER, undefined, {
        raw,
        headers: { 'content-type': 'application/json' },
      });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).includes('name'), JSON.stringify(error.errors));
    });
  });

  describe('validation', () => {
    it('when a body has an unknown field, then 400 VALIDATION_FAILED naming it and nothing is created', async () => {
      const input = { ...validRegistration(), nickname: 'sneaky' };
      const response = await server.client.post(REGISTER, input);
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).includes('nickname'), JSON.stringify(error.errors));
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when a number is sent for a string, then 400 VALIDATION_FAILED (no coercion to "10")', async () => {
      const input = { ...validRegistration(), name: 10 };
      const response = await server.client.post(REGISTER, input);
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.deepEqual(pathsOf(error), ['name']);
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when ["a"] is sent for a string, then 400 VALIDATION_FAILED (no unwrapping of arrays)', async () => {
      const input = { ...validRegistration(), name: ['a'] };
      const response = await server.client.post(REGISTER, input);
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.deepEqual(pathsOf(error), ['name']);
      assert.equal(await usersWithEmail(input.email), 0);
    });

    it('when true or null is sent for a string, then 400 VALIDATION_FAILED', async () => {
      for (const name of [true, null]) {
        const input = { ...validRegistration(), name };
        const response = await server.client.post(REGISTER, input);
        const error = expectError(response, 400, 'VALIDATION_FAILED');
        assert.deepEqual(pathsOf(error), ['name']);
        assert.equal(await usersWithEmail(input.email), 0);
      }
    });

    it('when "10" is sent for an integer query parameter, then it is parsed as its declared type', async () => {
      // Bodies are never coerced, but query parameters are: ?limit=2 is the integer 2.
      const admin = await loginAdmin(server.client);
      const response = await server.client.get<{ meta: { limit: number; page: number } }>('/api/v1/users?limit=2&page=1', {
        token: admin.accessToken,
      });
      assert.equal(response.status, 200, response.text);
      assert.equal(response.body.meta.limit, 2);
      assert.equal(response.body.meta.page, 1);
    });

    it('when several fields are wrong, then every one is listed in errors', async () => {
      const response = await server.client.post(REGISTER, { email: 10, name: ['a'], password: 12345678, extra: 1 });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      const paths = pathsOf(error);
      for (const path of ['email', 'name', 'password', 'extra']) assert.ok(paths.includes(path), `${path} missing in ${paths.join(',')}`);
    });

    it('when a required field is missing, then 400 VALIDATION_FAILED naming it', async () => {
      const { email, name } = validRegistration();
      const response = await server.client.post(REGISTER, { email, name });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.deepEqual(pathsOf(error), ['password']);
      assert.equal(await usersWithEmail(email), 0);
    });

    it('when an operation that takes no body gets one with fields, then 400 VALIDATION_FAILED and nothing happens', async () => {
      // POST /auth/logout-all has no body fields, so every field sent to it is unknown.
      const session = await registerAndLogin(server.client);
      const response = await server.client.post('/api/v1/auth/logout-all', { everywhere: true }, { token: session.accessToken });
      const error = expectError(response, 400, 'VALIDATION_FAILED');
      assert.ok(pathsOf(error).includes('everywhere'), JSON.stringify(error.errors));
      assert.equal((await server.client.get('/api/v1/users/me', { token: session.accessToken })).status, 200);
    });

    it('when the body is JSON but not an object, then 400', async () => {
      for (const raw of ['"just a string"', '[]', '42']) {
        const response = await server.client.post(REGISTER, undefined, { raw, headers: { 'content-type': 'application/json' } });
        expectError(response, 400, 'VALIDATION_FAILED');
      }
    });
  });

  describe('unknown routes', () => {
    it('when a route does not exist, then 404 ROUTE_NOT_FOUND in the error shape', async () => {
      expectError(await server.client.get('/api/v1/nope'), 404, 'ROUTE_NOT_FOUND');
      expectError(await server.client.get('/definitely/not/here?x=1'), 404, 'ROUTE_NOT_FOUND');
      expectError(await server.client.post('/api/v1/nope', { a: 1 }), 404, 'ROUTE_NOT_FOUND');
      expectError(await server.client.get('/api/v2/users/me'), 404, 'ROUTE_NOT_FOUND');
    });

    it('when an existing path is called with a method it does not have, then 404 ROUTE_NOT_FOUND', async () => {
      expectError(await server.client.request('PUT', '/api/v1/users/me', { name: 'x' }), 404, 'ROUTE_NOT_FOUND');
      expectError(await server.client.delete('/api/v1/auth/login'), 404, 'ROUTE_NOT_FOUND');
    });
  });

  describe('request ids', () => {
    it('when the client sends a valid X-Request-Id, then success and error responses echo it and the error body carries it', async () => {
      const id = 'Req.ID_with-all.allowed_chars-0123456789';
      const ok = await server.client.get('/health', { headers: { 'x-request-id': id } });
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('x-request-id'), id);
      const failed = await server.client.post(REGISTER, {}, { headers: { 'x-request-id': id } });
      assert.equal(failed.headers.get('x-request-id'), id);
      assert.equal(expectError(failed, 400, 'VALIDATION_FAILED').requestId, id);
      const unauthenticated = await server.client.get('/api/v1/users/me', { headers: { 'x-request-id': id } });
      assert.equal(expectError(unauthenticated, 401, 'UNAUTHENTICATED').requestId, id);
    });

    it('when the client X-Request-Id is 1 or 128 allowed characters, then it is echoed', async () => {
      for (const id of ['a', 'A'.repeat(128), '.', '-_-']) {
        const response = await server.client.get('/nope', { headers: { 'x-request-id': id } });
        assert.equal(response.headers.get('x-request-id'), id);
        assert.equal(expectError(response, 404, 'ROUTE_NOT_FOUND').requestId, id);
      }
    });

    it('when the client X-Request-Id is too long or has other characters, then a new one is generated', async () => {
      for (const id of ['A'.repeat(129), 'has space', 'slash/inside', 'semi;colon', 'quote"', 'ümlaut', '']) {
        const response = await server.client.get('/nope', { headers: { 'x-request-id': id } });
        const generated = response.headers.get('x-request-id');
        assert.ok(generated, 'X-Request-Id missing');
        assert.notEqual(generated, id);
        assert.match(generated, /^[A-Za-z0-9._-]{1,128}$/);
        assert.equal(expectError(response, 404, 'ROUTE_NOT_FOUND').requestId, generated);
      }
    });

    it('when no X-Request-Id is sent, then every response gets a distinct one', async () => {
      const responses = await Promise.all([
        server.client.get('/health'),
        server.client.get('/health'),
        server.client.get('/api/v1/users/me'),
        server.client.get('/nope'),
      ]);
      const ids = responses.map((response) => response.headers.get('x-request-id'));
      for (const id of ids) assert.ok(id && id.length > 0);
      assert.equal(new Set(ids).size, ids.length);
    });

    // Responses are written at the end of the event-loop turn that handled them (coalesceWrite):
    // requests that arrive in one read, answered by fast and slow paths alike, must still be
    // answered each once, in order, with its own status and body.
    it('when 12 requests arrive pipelined in one write, then each is answered once, in order, with its own status and id', async () => {
      const paths = ['/health', '/api/v1/users/me', '/nope', '/health/ready'];
      const sent = Array.from({ length: 12 }, (_, index) => ({ path: paths[index % paths.length] ?? '/health', id: `pipelined-${index}` }));
      const wire = sent
        .map(({ path, id }, index) => `GET ${path} HTTP/1.1\r\nHost: bastion.test\r\nX-Request-Id: ${id}\r\n${index === sent.length - 1 ? 'Connection: close\r\n' : ''}\r\n`)
        .join('');
      const { port } = new URL(server.baseUrl);
      const received = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(wire));
        let text = '';
        socket.setEncoding('latin1').on('data', (chunk: string) => (text += chunk));
        socket.once('end', () => resolve(text));
        socket.once('error', reject);
      });
      const answers = [...received.matchAll(/HTTP\/1\.1 (\d{3}) [^\r]*\r\n([\s\S]*?)\r\n\r\n/g)].map(([, status, head]) => ({
        status: Number(status),
        id: /^x-request-id: (\S+)$/im.exec(head ?? '')?.[1],
      }));
      const expectedStatus: Record<string, number> = { '/health': 200, '/api/v1/users/me': 401, '/nope': 404, '/health/ready': 200 };
      assert.deepEqual(
        answers,
        sent.map(({ path, id }) => ({ status: expectedStatus[path], id })),
      );
    });
  });

  describe('security headers', () => {
    it('when any API answer is sent (success, token body, personal data, API error, unknown route), then it carries exactly the API set and Cache-Control: no-store', async () => {
      const admin = await loginAdmin(server.client);
      const registration = validRegistration();
      const answers: Array<[string, ApiResponse<unknown>]> = [
        ['GET /health', await server.client.get('/health')],
        ['POST register (201, personal data)', await server.client.post(REGISTER, registration)],
        ['POST login (200, tokens)', await server.client.post('/api/v1/auth/login', { email: registration.email, password: registration.password })],
        ['GET /users/me (200, personal data)', await server.client.get('/api/v1/users/me', { token: admin.accessToken })],
        ['GET /users/me (401)', await server.client.get('/api/v1/users/me')],
        ['POST register (400)', await server.client.post(REGISTER, {})],
        ['GET /nope (404)', await server.client.get('/nope')],
        ['GET /openapi.json', await server.client.get('/openapi.json')],
      ];
      for (const [what, response] of answers) {
        assert.ok(response.status < 500, `${what}: ${response.status}`);
        expectApiHeaders(response.headers, what);
      }
    });

    it('when the JWKS is fetched, then it carries the API set and stays cacheable (public keys, no personal data)', async () => {
      const response = await server.client.get('/.well-known/jwks.json');
      assert.equal(response.status, 200);
      expectApiHeaders(response.headers, 'GET /.well-known/jwks.json', 'public, max-age=300');
    });

    it('when /docs is fetched, then it keeps the HTML policy Swagger UI needs, not the API\'s default-src \'none\'', async () => {
      const response = await server.client.get('/docs');
      assert.equal(response.status, 200);
      const csp = response.headers.get('content-security-policy') ?? '';
      assert.match(csp, /script-src 'self'/, csp);
      assert.doesNotMatch(csp, /default-src 'none'/, csp);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(response.headers.get('x-powered-by'), null);
    });
  });

  // Answers Fastify's router and Node's HTTP parser give before any route or hook runs: each must
  // still be the contract's error, with the request id and the security headers.
  describe('framework and parser errors', () => {
    const CLIENT_ID = 'client-chosen.id_1';

    it('when a path has a bad percent-encoding, then 400 VALIDATION_FAILED with the request id and the API headers', async () => {
      for (const path of ['/api/v1/users/%zz', '/api/v1/users/%', '/api/v1/accounts/%E0%A4/transfers', '/api/v1/users/%ED%A0%80', '/nope/%zz']) {
        const response = await server.client.get(path, { headers: { 'x-request-id': CLIENT_ID } });
        assert.equal(expectError(response, 400, 'VALIDATION_FAILED').requestId, CLIENT_ID, path);
        expectApiHeaders(response.headers, `GET ${path}`);
      }
    });

    it('when a path segment is longer than 100 characters, then 400 VALIDATION_FAILED (not Fastify\'s 414) with the request id and the API headers', async () => {
      for (const path of [`/api/v1/users/${'a'.repeat(101)}`, `/api/v1/accounts/${'b'.repeat(5000)}/transfers`]) {
        const response = await server.client.get(path, { headers: { 'x-request-id': CLIENT_ID } });
        assert.equal(expectError(response, 400, 'VALIDATION_FAILED').requestId, CLIENT_ID, path);
        expectApiHeaders(response.headers, `GET ${path.slice(0, 40)}…`);
      }
    });

    it('when HEAD meets a bad percent-encoding, then 400 with the request id and the API headers, and no body', async () => {
      const response = await server.client.request('HEAD', '/api/v1/users/%zz', undefined, { headers: { 'x-request-id': CLIENT_ID } });
      assert.equal(response.status, 400);
      assert.equal(response.headers.get('x-request-id'), CLIENT_ID);
      expectApiHeaders(response.headers, 'HEAD /api/v1/users/%zz');
      assert.equal(response.text, '');
    });

    const parserCases: Array<[string, string, number, string]> = [
      ['a malformed request line', 'BLAH\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['a method Node does not know', 'FOO /health HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['a NUL in the request target', 'GET /api/v1/users/\u0000 HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['a control character in a header', 'GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\u0001b\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['both Content-Length and Transfer-Encoding', 'POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['an HTTP/1.1 request without Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n', 400, 'VALIDATION_FAILED'],
      ['headers over 16 KiB', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      ['a request target over 16 KiB', `GET /api/v1/users/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
      ['an expectation other than 100-continue', 'POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}', 417, 'EXPECTATION_FAILED'],
      ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 404, 'ROUTE_NOT_FOUND'],
    ];
    for (const [what, wire, status, code] of parserCases) {
      it(`when the HTTP parser meets ${what}, then ${status} ${code} in the contract's shape with a request id and the API headers`, async () => {
        const response = await rawExchange(server.baseUrl, wire);
        const error = expectError(response, status, code);
        assert.match(error.requestId, /^[A-Za-z0-9._-]{1,128}$/);
        expectApiHeaders(response.headers, what);
      });
    }
  });

  describe('while closing', () => {
    it('when a request arrives on an open connection after shutdown began, then 503 SERVICE_UNAVAILABLE in the contract\'s shape with the API headers', async () => {
      const closing = await startServer();
      const { port } = new URL(closing.baseUrl);
      const body = JSON.stringify({ email: 'nobody@example.com', password: 'not-the-password' });
      const socket = net.connect(Number(port), '127.0.0.1');
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.on('error', () => undefined);
      const ended = new Promise((resolve) => socket.once('close', resolve));
      // The first request's body is held back, so the connection is busy (not idle) when closing starts.
      const seen = new Promise((resolve) => closing.app.http.server.once('request', resolve));
      socket.write(`POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
      await seen;
      const stopped = closing.stop();
      socket.write(`${body.slice(5)}GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: late-1\r\n\r\n`);
      await ended;
      await stopped;
      const wire = Buffer.concat(received);
      const second = wire.indexOf('HTTP/1.1 ', 1);
      assert.ok(second > 0, `one answer only: ${wire.toString('latin1').slice(0, 300)}`);
      const late = parseRawResponse(wire.subarray(second));
      assert.equal(expectError(late, 503, 'SERVICE_UNAVAILABLE').requestId, 'late-1');
      assert.equal(late.headers.get('connection'), 'close');
      expectApiHeaders(late.headers, 'the late request');
    });
  });

  // Ids are plain 8-4-4-4-12 hex in either case; stored text is well-formed UTF-16 without NUL.
  describe('ids and stored text', () => {
    const uuid = '0190c0de-7e57-7000-8000-00000000abcd';
    const oddIds = [`urn:uuid:${uuid}`, `URN:UUID:${uuid}`, `{${uuid}}`, uuid.replace(/-/g, ''), `${uuid}x`, `${uuid}%00`, `${uuid}%20`];

    it('when an id is in urn:uuid:, braced, unhyphenated or trailing-junk form, then 400 VALIDATION_FAILED on every route that takes one, never 500', async () => {
      const admin = await loginAdmin(server.client);
      const token = { token: admin.accessToken };
      const problems: string[] = [];
      const check = (what: string, response: ApiResponse<unknown>) => {
        try {
          expectError(response, 400, 'VALIDATION_FAILED');
        } catch (error) {
          problems.push(`${what} -> ${response.status} ${response.text.slice(0, 200)}`);
          void error;
        }
      };
      for (const id of oddIds) {
        const segment = id;
        check(`GET /users/${id}`, await server.client.get(`/api/v1/users/${segment}`, token));
        check(`PATCH /users/${id}`, await server.client.patch(`/api/v1/users/${segment}`, { name: 'x' }, token));
        check(`DELETE /users/${id}`, await server.client.delete(`/api/v1/users/${segment}`, token));
        check(`GET /accounts/${id}`, await server.client.get(`/api/v1/accounts/${segment}`, token));
        check(`GET /accounts/${id}/transfers`, await server.client.get(`/api/v1/accounts/${segment}/transfers`, token));
        check(`GET /transfers/${id}`, await server.client.get(`/api/v1/transfers/${segment}`, token));
        check(`GET /accounts?ownerId=${id}`, await server.client.get(`/api/v1/accounts?ownerId=${encodeURIComponent(id)}`, token));
        check(
          `POST /accounts/${id}/deposits`,
          await server.client.post(`/api/v1/accounts/${segment}/deposits`, { amount: 1 }, { ...token, headers: { 'idempotency-key': `odd-${id}` } }),
        );
        check(`POST /accounts ownerId=${id}`, await server.client.post('/api/v1/accounts', { currency: 'USD', ownerId: id }, token));
        check(
          `POST /transfers fromAccountId=${id}`,
          await server.client.post('/api/v1/transfers', { fromAccountId: id, toAccountId: uuid, amount: 1 }, { ...token, headers: { 'idempotency-key': `odd-t-${id}` } }),
        );
      }
      assert.deepEqual(problems, []);
    });

    it('when an id is a real one in upper case, then it names the same resource', async () => {
      const admin = await loginAdmin(server.client);
      const session = await registerAndLogin(server.client);
      const response = await server.client.get<{ data: { id: string } }>(`/api/v1/users/${session.user.id.toUpperCase()}`, { token: admin.accessToken });
      assert.equal(response.status, 200, response.text);
      assert.equal(response.body.data.id, session.user.id);
    });

    const loneSurrogates = ['\ud800', 'a\udbffb', '\udc00', 'x\udfff', '\ud800\ud800', '\udc00\ud800'];

    it('when a name has a lone surrogate, then register, admin create and update answer 400 VALIDATION_FAILED naming it, and nothing is stored', async () => {
      const admin = await loginAdmin(server.client);
      const session = await registerAndLogin(server.client, { name: 'Unchanged' });
      for (const name of loneSurrogates) {
        const registration = { ...validRegistration(), name };
        assert.deepEqual(pathsOf(expectError(await server.client.post(REGISTER, registration), 400, 'VALIDATION_FAILED')), ['name'], JSON.stringify(name));
        assert.equal(await usersWithEmail(registration.email), 0);
        const created = { ...validRegistration(), name };
        assert.deepEqual(
          pathsOf(expectError(await server.client.post('/api/v1/users', created, { token: admin.accessToken }), 400, 'VALIDATION_FAILED')),
          ['name'],
        );
        assert.equal(await usersWithEmail(created.email), 0);
        for (const token of [session.accessToken, admin.accessToken]) {
          const patched = await server.client.patch(`/api/v1/users/${session.user.id}`, { name }, { token });
          assert.deepEqual(pathsOf(expectError(patched, 400, 'VALIDATION_FAILED')), ['name']);
        }
      }
      const row = await server.app.database.db.selectFrom('users').select('name').where('id', '=', session.user.id).executeTakeFirstOrThrow();
      assert.equal(row.name, 'Unchanged');
    });

    it('when an email has a lone surrogate, then 400 VALIDATION_FAILED naming it', async () => {
      const registration = { ...validRegistration(), email: 'lone\ud800@example.com' };
      assert.deepEqual(pathsOf(expectError(await server.client.post(REGISTER, registration), 400, 'VALIDATION_FAILED')), ['email']);
    });

    it('when an account name or a transfer description has a lone surrogate, then 400 VALIDATION_FAILED and no money moves; a valid pair is kept', async () => {
      const admin = await loginAdmin(server.client);
      const owner = await registerAndLogin(server.client);
      const token = { token: owner.accessToken };
      const createAccount = async () => {
        const response = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, token);
        assert.equal(response.status, 201, response.text);
        return response.body.data.id;
      };
      const [from, to] = [await createAccount(), await createAccount()];
      const deposit = await server.client.post(`/api/v1/accounts/${from}/deposits`, { amount: 1_000 }, {
        token: admin.accessToken,
        headers: { 'idempotency-key': `surrogate-${from}` },
      });
      assert.equal(deposit.status, 201, deposit.text);
      const accountsBefore = await server.client.get<{ meta: { total: number } }>('/api/v1/accounts', token);
      for (const [index, text] of loneSurrogates.entries()) {
        const account = await server.client.post('/api/v1/accounts', { currency: 'USD', name: text }, token);
        assert.deepEqual(pathsOf(expectError(account, 400, 'VALIDATION_FAILED')), ['name'], JSON.stringify(text));
        for (const pending of [false, true]) {
          const transfer = await server.client.post(
            '/api/v1/transfers',
            { fromAccountId: from, toAccountId: to, amount: 10, description: text, ...(pending ? { pending } : {}) },
            { ...token, headers: { 'idempotency-key': `surrogate-${pending}-${index}-${from}` } },
          );
          assert.deepEqual(pathsOf(expectError(transfer, 400, 'VALIDATION_FAILED')), ['description'], JSON.stringify(text));
        }
      }
      const accountsAfter = await server.client.get<{ meta: { total: number } }>('/api/v1/accounts', token);
      assert.equal(accountsAfter.body.meta.total, accountsBefore.body.meta.total, 'no account was created');
      const balance = await server.client.get<{ data: { balance: number } }>(`/api/v1/accounts/${from}`, token);
      assert.equal(balance.body.data.balance, 1_000, 'no money moved');

      const kept = await server.client.post<{ data: { description: string } }>(
        '/api/v1/transfers',
        { fromAccountId: from, toAccountId: to, amount: 10, description: 'pair 💥 ok' },
        { ...token, headers: { 'idempotency-key': `surrogate-pair-${from}` } },
      );
      assert.equal(kept.status, 201, kept.text);
      assert.equal(kept.body.data.description, 'pair 💥 ok');
    });
  });

  describe('compression', () => {
    /** GET with Accept-Encoding: gzip over node:http, which (unlike fetch) leaves the body as sent. */
    const getGzip = (path: string, token: string) =>
      new Promise<{ status: number; encoding: string | undefined; body: Buffer }>((resolve, reject) => {
        const request = http.get(`${server.baseUrl}${path}`, { headers: { authorization: `Bearer ${token}`, 'accept-encoding': 'gzip' } }, (response) => {
          const parts: Buffer[] = [];
          response.on('data', (part: Buffer) => parts.push(part));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, encoding: response.headers['content-encoding'], body: Buffer.concat(parts) }));
          response.on('error', reject);
        });
        request.on('error', reject);
      });

    it('when a client accepts gzip and a list is over 1 KiB, then it is sent gzipped; one user (always small) is sent as is', async () => {
      const admin = await loginAdmin(server.client);
      for (let index = 0; index < 8; index++) {
        assert.equal((await server.client.post(REGISTER, validRegistration())).status, 201);
      }
      const list = await getGzip('/api/v1/users?limit=100', admin.accessToken);
      assert.equal(list.status, 200);
      assert.equal(list.encoding, 'gzip');
      const users = (JSON.parse(gunzipSync(list.body).toString('utf8')) as { data: unknown[] }).data;
      assert.ok(users.length >= 9, `listed ${users.length} users`);
      const me = await getGzip('/api/v1/users/me', admin.accessToken);
      assert.equal(me.status, 200);
      assert.equal(me.encoding, undefined);
      assert.equal((JSON.parse(me.body.toString('utf8')) as { data: { email: string } }).data.email, admin.user.email);
    });
  });

  describe('CORS', () => {
    it('when an allowed origin calls, then it gets Access-Control-Allow-Origin for it', async () => {
      for (const origin of [ALLOWED_ORIGIN, OTHER_ALLOWED_ORIGIN]) {
        const response = await server.client.get('/health', { headers: { origin } });
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('access-control-allow-origin'), origin);
        assert.match(response.headers.get('vary') ?? '', /origin/i);
      }
    });

    it('when an allowed origin gets an error, then the error is readable cross-origin too', async () => {
      const response = await server.client.get('/api/v1/users/me', { headers: { origin: ALLOWED_ORIGIN } });
      expectError(response, 401, 'UNAUTHENTICATED');
      assert.equal(response.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
    });

    it('when an allowed origin sends a preflight, then it is allowed with the API\'s methods and headers', async () => {
      const response = await server.client.request('OPTIONS', '/api/v1/auth/login', undefined, {
        headers: {
          origin: ALLOWED_ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type,authorization',
        },
      });
      assert.ok(response.status === 204 || response.status === 200, `preflight status ${response.status}`);
      assert.equal(response.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
      assert.match(response.headers.get('access-control-allow-methods') ?? '', /POST/);
      assert.match(response.headers.get('access-control-allow-headers') ?? '', /authorization/i);
    });

    it('when a foreign origin calls or sends a preflight, then it gets no Access-Control-Allow-Origin', async () => {
      const simple = await server.client.get('/health', { headers: { origin: FOREIGN_ORIGIN } });
      assert.equal(simple.status, 200);
      assert.equal(simple.headers.get('access-control-allow-origin'), null);
      const preflight = await server.client.request('OPTIONS', '/api/v1/auth/login', undefined, {
        headers: { origin: FOREIGN_ORIGIN, 'access-control-request-method': 'POST' },
      });
      assert.equal(preflight.headers.get('access-control-allow-origin'), null);
      // An allowed origin's prefix or suffix is not the origin.
      for (const origin of [`${ALLOWED_ORIGIN}.evil.net`, 'https://evil-app.example.com', 'http://app.example.com']) {
        const lookalike = await server.client.get('/health', { headers: { origin } });
        assert.equal(lookalike.headers.get('access-control-allow-origin'), null, origin);
      }
    });

    it('when ALLOWED_ORIGINS is unset, then no origin gets CORS headers', async () => {
      const response = await limitedUntrusted.client.get('/health', { headers: { origin: ALLOWED_ORIGIN } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('access-control-allow-origin'), null);
    });
  });

  describe('rate limit on /api/ (RATE_LIMIT_MAX=5)', () => {
    const asClient = (ip: string) => ({ headers: { 'x-forwarded-for': ip } });

    it('when a client exceeds 5 requests, then the 6th is 429 RATE_LIMITED with Retry-After', async () => {
      const client = asClient('198.51.100.1');
      for (let attempt = 1; attempt <= 5; attempt++) {
        expectError(await limited.client.get('/api/v1/users/me', client), 401, 'UNAUTHENTICATED');
      }
      const limitedResponse = await limited.client.get('/api/v1/users/me', client);
      expectError(limitedResponse, 429, 'RATE_LIMITED');
      const retryAfter = limitedResponse.headers.get('retry-after');
      assert.match(retryAfter ?? '', /^\d+$/, `Retry-After: ${retryAfter}`);
      assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 900, `Retry-After: ${retryAfter}`);
      // Every /api/ route counts, whatever its body or credentials.
      expectError(await limited.client.post(REGISTER, validRegistration(), client), 429, 'RATE_LIMITED');
      expectError(await limited.client.post('/api/v1/auth/login', { email: 'a@example.com', password: 'x' }, client), 429, 'RATE_LIMITED');
    });

    it('when /api/ answers, then RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset tell the client its budget', async () => {
      const client = asClient('198.51.100.5');
      const remaining: (string | null)[] = [];
      for (let attempt = 1; attempt <= 5; attempt++) {
        const response = await limited.client.get('/api/v1/users/me', client);
        assert.equal(response.status, 401);
        assert.equal(response.headers.get('ratelimit-limit'), '5', `headers: ${[...response.headers.keys()].join(', ')}`);
        assert.ok(response.headers.get('ratelimit-reset'), 'RateLimit-Reset missing');
        remaining.push(response.headers.get('ratelimit-remaining'));
      }
      assert.deepEqual(remaining, ['4', '3', '2', '1', '0']);
      const limitedResponse = await limited.client.get('/api/v1/users/me', client);
      assert.equal(limitedResponse.status, 429);
      assert.equal(limitedResponse.headers.get('ratelimit-limit'), '5');
      assert.equal(limitedResponse.headers.get('ratelimit-remaining'), '0');
      assert.ok(limitedResponse.headers.get('ratelimit-reset'), 'RateLimit-Reset missing');
    });

    it('when a client is rate limited, then /health is still answered', async () => {
      const client = asClient('198.51.100.2');
      for (let attempt = 1; attempt <= 5; attempt++) await limited.client.get('/api/v1/users/me', client);
      expectError(await limited.client.get('/api/v1/users/me', client), 429, 'RATE_LIMITED');
      for (let attempt = 1; attempt <= 10; attempt++) {
        const health = await limited.client.get('/health', client);
        assert.equal(health.status, 200, `health request ${attempt}: ${health.status}`);
      }
    });

    it('when one client is rate limited, then another client (behind the trusted proxy) still has its own 5', async () => {
      const first = asClient('198.51.100.3');
      for (let attempt = 1; attempt <= 5; attempt++) await limited.client.get('/api/v1/users/me', first);
      expectError(await limited.client.get('/api/v1/users/me', first), 429, 'RATE_LIMITED');
      const other = asClient('198.51.100.4');
      for (let attempt = 1; attempt <= 5; attempt++) {
        expectError(await limited.client.get('/api/v1/users/me', other), 401, 'UNAUTHENTICATED');
      }
      expectError(await limited.client.get('/api/v1/users/me', other), 429, 'RATE_LIMITED');
    });

    it('when TRUST_PROXY is unset, then changing X-Forwarded-For does not escape the limit', async () => {
      for (let attempt = 1; attempt <= 5; attempt++) {
        const response = await limitedUntrusted.client.get('/api/v1/users/me', asClient(`203.0.113.${attempt}`));
        expectError(response, 401, 'UNAUTHENTICATED');
      }
      const sixth = await limitedUntrusted.client.get('/api/v1/users/me', asClient('203.0.113.99'));
      expectError(sixth, 429, 'RATE_LIMITED');
      assert.ok(Number(sixth.headers.get('retry-after')) >= 1);
      expectError(await limitedUntrusted.client.get('/api/v1/users/me'), 429, 'RATE_LIMITED');
      assert.equal((await limitedUntrusted.client.get('/health')).status, 200);
    });
  });
});
