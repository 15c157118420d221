// The baseline for bench/http.bench.ts: a bare Fastify 5 server with one route returning a small JSON
// object, no plugins, no logging. It prints {"port": N} on stdout once listening.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/bare', async () => ({ status: 'ok', service: 'bare', n: 1 }));

await app.listen({ port: Number(process.env['PORT'] ?? 0), host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);

const stop = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
