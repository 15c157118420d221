// Answers on the socket for what never becomes a Fastify request: Node's HTTP parser errors,
// CONNECT, and an Expect other than 100-continue. The contract's error body and the API headers all
// the same, then the connection is closed.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { clientErrorPayload, errorBody, rawErrorResponse, type ErrorPayload } from '../http-errors.js';
import type { RequestIds } from './request-id.js';
import { API_SECURITY_HEADERS } from './security-headers.js';

/** A complete error response on a socket no Fastify reply exists for; then the connection is closed. */
function writeAndClose(socket: Socket, payload: ErrorPayload, requestId: string): void {
  socket.write(rawErrorResponse(payload, requestId, API_SECURITY_HEADERS));
  socket.destroy();
}

/**
 * Fastify's `clientErrorHandler`: a malformed request line or header, headers over 16 KiB, a
 * timeout. The error gets a new request id (no request, so no client id, exists).
 */
export function answerClientError(requestIds: RequestIds) {
  return (error: Error & { code?: string }, socket: Socket): void => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    // A response already under way on this connection cannot be followed by another one.
    const inProgress = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!socket.writable || inProgress?.headersSent) return void socket.destroy();
    writeAndClose(socket, clientErrorPayload(error), requestIds.next());
  };
}

/**
 * The two answers Node's HTTP server gives on its own: to CONNECT (without a listener it closes the
 * socket without a word) and to an `Expect` other than 100-continue (an empty 417).
 */
export function answerConnectAndExpect(server: Server, requestIds: RequestIds): void {
  server.on('connect', (raw: IncomingMessage, socket: Socket) =>
    writeAndClose(socket, { status: 404, code: 'ROUTE_NOT_FOUND', message: 'CONNECT is not supported' }, requestIds.of(raw)),
  );
  server.on('checkExpectation', (raw: IncomingMessage, response: ServerResponse) => {
    const requestId = requestIds.of(raw);
    const body = JSON.stringify(
      errorBody({ status: 417, code: 'EXPECTATION_FAILED', message: 'Only Expect: 100-continue is supported' }, requestId),
    );
    response.writeHead(417, {
      ...API_SECURITY_HEADERS,
      'x-request-id': requestId,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    });
    response.end(body);
  });
}

/**
 * Requests with `Upgrade:` (websocket, h2c, anything) go to the 'upgrade' listeners, never to Node's
 * HTTP parser again, once the WebSocket plugin behind GraphQL subscriptions listens. The plugin
 * routes them through Fastify, but no body is ever read and nobody ends the connection after the
 * answer, and a closing server was seen waiting forever after a fuzzed mix of them. So only
 * `GET <path>` without a body is handed on (it may become a WebSocket; if not, its connection is
 * ended after the answer); any other request asking for an upgrade is refused on the socket (400,
 * the contract's body) and its connection closed. Call after the plugin registered: its listeners
 * are wrapped.
 */
export function answerUpgradeRequests(app: FastifyInstance, path: string, requestIds: RequestIds): void {
  const server = app.server;
  const listeners = server.listeners('upgrade') as Array<(request: IncomingMessage, socket: Socket, head: Buffer) => void>;
  server.removeAllListeners('upgrade');
  server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
    const length = request.headers['content-length'];
    const hasBody = request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
    let pathname: string | undefined;
    try {
      pathname = new URL(request.url ?? '', 'http://localhost').pathname;
    } catch {
      pathname = undefined;
    }
    if (request.method === 'GET' && pathname === path && !hasBody && listeners.length > 0) {
      for (const listener of listeners) listener.call(server, request, socket, head);
      return;
    }
    socket.on('error', () => socket.destroy());
    writeAndClose(socket, { status: 400, code: 'VALIDATION_FAILED', message: `Upgrade is served at GET ${path} only (WebSocket); send this request without it` }, requestIds.next());
  });
  app.addHook('onResponse', (request, _reply, done) => {
    // Answered, not upgraded, yet it came through the 'upgrade' event: end its connection.
    if ((request.raw as IncomingMessage & { upgrade?: boolean }).upgrade === true) {
      const socket = request.raw.socket;
      socket.end();
      setTimeout(() => socket.destroy(), 1_000).unref();
    }
    done();
  });
}
