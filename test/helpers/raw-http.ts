// Bytes on a socket, for what neither fetch nor node:http will send: malformed request lines, control
// characters in the target, unknown methods, missing Host, oversized headers. One connection per call;
// the answer is read until the server closes it (send `Connection: close` on a well-formed request).
import net from 'node:net';
import type { ApiResponse } from './client.js';

/** Parses one HTTP/1.1 response (Content-Length or chunked body). `status` is 0 when nothing came back. */
export function parseRawResponse(received: Buffer): ApiResponse<unknown> {
  let wire = received;
  // Interim answers (100 Continue) precede the final one.
  while (/^HTTP\/1\.[01] 1\d\d /.test(wire.toString('latin1', 0, 13))) {
    const end = wire.indexOf('\r\n\r\n');
    if (end === -1) break;
    wire = wire.subarray(end + 4);
  }
  const text = wire.toString('latin1');
  const headEnd = text.indexOf('\r\n\r\n');
  const head = headEnd === -1 ? text : text.slice(0, headEnd);
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers = new Headers();
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  let body = headEnd === -1 ? Buffer.alloc(0) : wire.subarray(Buffer.byteLength(text.slice(0, headEnd + 4), 'latin1'));
  if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) body = dechunk(body);
  else if (headers.has('content-length')) body = body.subarray(0, Number(headers.get('content-length')));
  const bodyText = body.toString('utf8');
  let parsed: unknown;
  try {
    parsed = bodyText === '' ? undefined : JSON.parse(bodyText);
  } catch {
    parsed = undefined;
  }
  return { status, headers, body: parsed, text: bodyText };
}

function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const lineEnd = body.indexOf('\r\n', offset);
    if (lineEnd === -1) break;
    const size = Number.parseInt(body.subarray(offset, lineEnd).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
    offset = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Writes `wire` (latin1 bytes) to a fresh connection and parses what comes back before it closes. */
export function rawExchange(baseUrl: string, wire: string | Buffer, timeoutMs = 5_000): Promise<ApiResponse<unknown>> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(Number(port), hostname);
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.once('connect', () => socket.write(typeof wire === 'string' ? Buffer.from(wire, 'latin1') : wire));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // The server may close while the request is still being written (a 431 mid-header): not an error here.
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(parseRawResponse(Buffer.concat(chunks)));
    });
  });
}
