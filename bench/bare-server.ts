// The baseline for bench/http.bench.ts: a bare Fastify 5 server with one route returning a small JSON
// object, no plugins, no logging. It prints {"port": N} on stdout once listening.
//
// Two more routes are diagnostics, each the same bare handler with one thing of the service's added:
// - /bare-headers answers with the response headers every /api/ answer of the service carries
//   (the API security set, the request id, the three RateLimit-* headers): what those headers cost, before
//   any of the service's own work;
// - /bare-coalesced writes its response the way the service does (coalesceWrite, in the check phase
//   of the event loop): what that technique gives a route that does nothing else.
// With BARE_GRPC_PORT, a third: bastion.v1.UserService/GetMe served by a bare @grpc/grpc-js server
// (through the service's own adapter, src/transports/grpc/native.ts), answering a fixed user (no
// auth, no database, no guard): the ceiling of gRPC through grpc-js on this machine, against which
// the service's gRPC row can be read. And /bare-graphql: Mercurius
// with a one-type schema whose `me` returns a constant (JIT on, as in the service): the ceiling of
// GraphQL through Mercurius, for the service's GraphQL row.
import * as grpc from '@grpc/grpc-js';
import Fastify from 'fastify';
import mercurius from 'mercurius';
import { Role, UserService } from '../src/transports/grpc/gen/bastion/v1/user_service_pb.js';
import { nativeService } from '../src/transports/grpc/native.js';
import { API_SECURITY_HEADERS } from '../src/transports/http/security-headers.js';
import { coalesceWrite } from '../src/transports/http/write-coalescing.js';

const app = Fastify({ logger: false });
const answer = async () => ({ status: 'ok', service: 'bare', n: 1 });
app.get('/bare', answer);

let requests = 0;
app.get(
  '/bare-headers',
  {
    onRequest: (_request, reply, done) => {
      requests++;
      void reply
        .headers(API_SECURITY_HEADERS)
        .header('x-request-id', `0123456789ab-${requests.toString(36)}`)
        .headers({ 'ratelimit-limit': 1_000_000_000, 'ratelimit-remaining': 1_000_000_000 - requests, 'ratelimit-reset': 1 });
      done();
    },
  },
  answer,
);
app.get('/bare-coalesced', { onSend: coalesceWrite }, answer);

const user = { id: '01a23df3-27af-7681-b2b6-1a8a69c0eb5e', email: 'bench@bastion.test', name: 'Bench', role: 'user', createdAt: '2026-12-03T00:00:00.000Z', updatedAt: '2026-12-03T00:00:00.000Z' };
await app.register(mercurius, {
  path: '/bare-graphql',
  schema: 'type User { id: ID! email: String! name: String! role: String! createdAt: String! updatedAt: String! } type Query { me: User }',
  resolvers: { Query: { me: async () => user } },
  jit: 1,
});

const grpcPort = process.env['BARE_GRPC_PORT'];
if (grpcPort) {
  const grpcUser = { id: user.id, email: user.email, name: user.name, role: Role.USER };
  const { definition, handlers } = nativeService(UserService, { getMe: async () => ({ user: grpcUser }) }, undefined);
  const server = new grpc.Server();
  server.addService(definition, handlers);
  server.bindAsync(`127.0.0.1:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (error) => {
    if (error) throw error;
  });
}

await app.listen({ port: Number(process.env['PORT'] ?? 0), host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);

const stop = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
