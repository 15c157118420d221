// The baseline for bench/http.bench.ts: a bare Fastify 5 server with one route returning a small JSON
// object, no plugins, no logging. It prints {"port": N} on stdout once listening.
//
// A second route, /bare-headers, is a diagnostic: the same bare handler, but answering with the
// response headers every /api/ answer of the service carries (helmet's set, the request id, the three
// RateLimit-* headers). The gap between it and /bare is what those headers cost, before any of the
// service's own work.
import Fastify from 'fastify';
import { helmetHeaders } from '../src/transports/http.js';

const app = Fastify({ logger: false });
app.get('/bare', async () => ({ status: 'ok', service: 'bare', n: 1 }));

const securityHeaders = helmetHeaders();
let requests = 0;
app.get(
  '/bare-headers',
  {
    onRequest: (_request, reply, done) => {
      requests++;
      void reply
        .headers(securityHeaders)
        .header('x-request-id', `0123456789ab-${requests.toString(36)}`)
        .headers({ 'ratelimit-limit': 1_000_000_000, 'ratelimit-remaining': 1_000_000_000 - requests, 'ratelimit-reset': 1 });
      done();
    },
  },
  async () => ({ status: 'ok', service: 'bare', n: 1 }),
);

await app.listen({ port: Number(process.env['PORT'] ?? 0), host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);

const stop = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
