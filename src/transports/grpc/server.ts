// The gRPC transport: one Connect handler on an HTTP/2 cleartext (h2c) server serves the gRPC,
// gRPC-Web and Connect protocols for bastion.v1's UserService, AuthService and LedgerService,
// grpc.health.v1.Health and grpc.reflection.v1.ServerReflection. Built by the application, listened
// on by main (as HTTP is), closed with the application. Every bastion.v1 call passes the per-client
// rate limit REST's /api/ routes use (the same limiter, the same key: the client's address), and
// every failure leaves through the one error mapper (./errors.ts).
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { createContextValues, type ConnectRouter, type Interceptor } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { AuthService } from '../../components/auth/index.js';
import type { LedgerService } from '../../components/ledger/index.js';
import type { UsersService } from '../../components/users/index.js';
import { DomainError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import type { Gcra, GcraDecision } from '../../platform/rate-limit.js';
import { createRequestIds } from '../http/request-id.js';
import { authServiceImpl } from './auth.js';
import { clientIpKey, requestIdKey } from './call-context.js';
import { toConnectError } from './errors.js';
import { AuthService as AuthServiceDesc } from './gen/bastion/v1/auth_service_pb.js';
import { LedgerService as LedgerServiceDesc } from './gen/bastion/v1/ledger_service_pb.js';
import { UserService } from './gen/bastion/v1/user_service_pb.js';
import { Health } from './gen/grpc/health/v1/health_pb.js';
import { ServerReflection } from './gen/grpc/reflection/v1/reflection_pb.js';
import { healthServiceImpl } from './health.js';
import { ledgerServiceImpl } from './ledger.js';
import { reflectionServiceImpl } from './reflection.js';
import { userServiceImpl } from './users.js';

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
/** Messages are small; REST refuses bodies over 1 MiB, gRPC the same. */
const MAX_MESSAGE_BYTES = 1024 * 1024;

export interface GrpcDependencies {
  readonly logger: Logger;
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  readonly rateLimiter: Gcra;
  readonly rateLimitMax: number;
  readonly rateLimitWindowMs: number;
  /** Readiness (the database answers); the health service reports NOT_SERVING otherwise. */
  readonly isReady: () => Promise<boolean>;
  readonly isShuttingDown: () => boolean;
}

export interface GrpcServer {
  /** Listens on host:port (0: any free port); resolves with the port bound. */
  listen(port: number, host: string): Promise<number>;
  /** The bound port, once listening. */
  readonly port: number | undefined;
  /** Stops accepting; lets calls in flight finish (GOAWAY to every connection), then resolves. */
  close(): Promise<void>;
  /** Shutdown's deadline passed: drops every connection at once. */
  destroyConnections(): void;
}

export const BASTION_SERVICES = [UserService.typeName, AuthServiceDesc.typeName, LedgerServiceDesc.typeName] as const;

export function createGrpcServer(deps: GrpcDependencies): GrpcServer {
  const requestIds = createRequestIds();
  const shutdown = new AbortController();

  /**
   * For bastion.v1 calls: the request id (echoed in the response header x-request-id), the rate
   * limit (as REST's rate-limit hook: RESOURCE_EXHAUSTED RATE_LIMITED with retry-after), and every
   * error through the mapper. Health checks are not rate limited (as REST's /health).
   */
  const interceptor: Interceptor = (next) => async (request) => {
    if (!request.service.typeName.startsWith('bastion.')) return next(request);
    const claimed = request.header.get('x-request-id');
    const requestId = claimed !== null && REQUEST_ID_PATTERN.test(claimed) ? claimed : requestIds.next();
    request.contextValues.set(requestIdKey, requestId);
    try {
      const clientIp = request.contextValues.get(clientIpKey);
      let decision: GcraDecision | Promise<GcraDecision> = deps.rateLimiter.take(clientIp, deps.rateLimitMax, deps.rateLimitWindowMs);
      // A Redis failure lets the call through, as on REST.
      if (decision instanceof Promise) decision = await decision.catch(() => ({ allowed: true, remaining: 0, waitMs: 0 }));
      if (!decision.allowed) {
        throw new DomainError('RATE_LIMITED', 'Too many requests; retry later', {
          retryAfterSeconds: Math.max(1, Math.ceil(decision.waitMs / 1000)),
        });
      }
      const response = await next(request);
      response.header.set('x-request-id', requestId);
      return response;
    } catch (error) {
      const mapped = toConnectError(error, requestId);
      if (mapped.unexpected) {
        deps.logger.error({ err: error, requestId, rpc: `${request.service.typeName}/${request.method.name}` }, 'grpc: unexpected error');
      }
      mapped.error.metadata.set('x-request-id', requestId);
      throw mapped.error;
    }
  };

  const handler = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      router.service(UserService, userServiceImpl(deps.users, deps.auth));
      router.service(AuthServiceDesc, authServiceImpl(deps.auth, deps.users));
      router.service(LedgerServiceDesc, ledgerServiceImpl(deps.ledger, deps.auth));
      router.service(
        Health,
        healthServiceImpl({
          services: ['', ...BASTION_SERVICES],
          isReady: async () => !deps.isShuttingDown() && (await deps.isReady()),
          shutdownSignal: shutdown.signal,
        }),
      );
      router.service(ServerReflection, reflectionServiceImpl([UserService, AuthServiceDesc, LedgerServiceDesc, Health, ServerReflection]));
    },
    interceptors: [interceptor],
    readMaxBytes: MAX_MESSAGE_BYTES,
    contextValues: (request) => createContextValues().set(clientIpKey, request.socket.remoteAddress ?? ''),
  });

  const server = http2.createServer({}, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  // Small frames (a unary answer is a few hundred bytes) go out at once, not after Nagle's wait for
  // the previous segment's ACK: node:http2 leaves Nagle on (node:http turns it off).
  server.on('connection', (socket: Socket) => socket.setNoDelay(true));
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  // A broken connection is the client's problem, never a crash.
  server.on('sessionError', (error) => deps.logger.debug({ err: error }, 'grpc: session error'));

  let port: number | undefined;
  return {
    get port() {
      return port;
    },
    async listen(requestedPort, host) {
      server.listen(requestedPort, host);
      await once(server, 'listening');
      port = (server.address() as AddressInfo).port;
      return port;
    },
    async close() {
      shutdown.abort();
      if (!server.listening) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      await closed;
    },
    destroyConnections() {
      for (const session of sessions) session.destroy();
    },
  };
}
