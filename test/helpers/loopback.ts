// A test client that connects FROM a loopback address of its choosing (any of 127.0.0.0/8 works on
// Linux). The service keys its rate limits and login throttle by the client address, and with Redis
// that state outlives a test run; a fresh address per run makes every run a new client.
import { randomInt } from 'node:crypto';
import http from 'node:http';
import { clientFrom, type ApiResponse, type Client, type RequestOptions } from './client.js';

/** A random address in 127.0.0.0/8 outside 127.0.0.0/16 (which real services use). */
export const randomLoopbackAddress = (): string => `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;

export interface LoopbackClient extends Client {
  readonly localAddress: string;
  /** Closes the kept-alive connections. */
  close(): void;
}

/**
 * A Client (same interface as createClient) over node:http with keep-alive, sending from
 * `localAddress`. Network failures reject, as with fetch.
 */
export function createLoopbackClient(baseUrl: string, localAddress: string, options: { timeoutMs?: number } = {}): LoopbackClient {
  const target = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true });
  const request = <T>(method: string, path: string, body?: unknown, requestOptions: RequestOptions = {}): Promise<ApiResponse<T>> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...requestOptions.headers };
      if (requestOptions.token) headers['authorization'] = `Bearer ${requestOptions.token}`;
      let payload: string | undefined;
      if (requestOptions.raw !== undefined) payload = requestOptions.raw;
      else if (body !== undefined) {
        payload = JSON.stringify(body);
        headers['content-type'] ??= 'application/json';
      }
      if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
      const req = http.request(
        {
          host: target.hostname,
          port: target.port,
          method,
          path,
          headers,
          agent,
          localAddress,
          timeout: options.timeoutMs ?? 15_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('error', reject);
          res.on('end', () => {
            const responseHeaders = new Headers();
            for (const [name, value] of Object.entries(res.headers)) {
              if (value === undefined) continue;
              for (const item of Array.isArray(value) ? value : [value]) responseHeaders.append(name, item);
            }
            let parsed: unknown;
            try {
              parsed = text === '' ? undefined : JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: responseHeaders, body: parsed as T, text });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within the client timeout`)));
      req.on('error', reject);
      req.end(payload);
    });
  return { ...clientFrom(baseUrl, request), localAddress, close: () => agent.destroy() };
}
