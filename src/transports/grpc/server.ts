// The gRPC transport on GRPC_PORT: bastion.v1's UserService, AuthService, LedgerService and ApiKeyService,
// grpc.health.v1.Health and grpc.reflection.v1.ServerReflection, from one set of service impls
// (./users.ts, ./auth.ts, ./ledger.ts, ./api-keys.ts, ...) served two ways, chosen per connection by its first bytes:
// - HTTP/2 (the connection preface, "PRI * HTTP/2.0"): native gRPC through @grpc/grpc-js (./native.ts),
//   what grpc-go/grpc-java/grpc-js clients, grpcurl and Kubernetes' gRPC probes speak;
// - HTTP/1.1: Connect's node handler, answering gRPC-Web and the Connect protocol (what browsers and
//   curl speak; gRPC itself needs HTTP/2).
// Built by the application, listened on by main (as HTTP is), closed with the application. Every
// bastion.v1 call passes the same guard on both: the per-client rate limit REST's /api/ routes use
// (the same limiter, the same key: the client's address), its request id, and the one error mapper
// (./errors.ts).
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import type { DescMethod, DescService } from '@bufbuild/protobuf';
import { createContextValues, type ConnectRouter, type ContextValues, type Interceptor } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import * as grpc from '@grpc/grpc-js';
import type { ApiKeysService } from '../../components/api-keys/index.js';
import type { AuthService } from '../../components/auth/index.js';
import type { LedgerService } from '../../components/ledger/index.js';
import type { UsersService } from '../../components/users/index.js';
import { DomainError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import type { Gcra, GcraDecision } from '../../platform/rate-limit.js';
import { createRequestIds } from '../http/request-id.js';
import { apiKeyServiceImpl } from './api-keys.js';
import { authServiceImpl } from './auth.js';
import { clientIpKey, requestIdKey } from './call-context.js';
import { toConnectError } from './errors.js';
import { ApiKeyService } from './gen/bastion/v1/api_key_service_pb.js';
import { AuthService as AuthServiceDesc } from './gen/bastion/v1/auth_service_pb.js';
import { LedgerService as LedgerServiceDesc } from './gen/bastion/v1/ledger_service_pb.js';
import { UserService } from './gen/bastion/v1/user_service_pb.js';
import { Health } from './gen/grpc/health/v1/health_pb.js';
import { ServerReflection } from './gen/grpc/reflection/v1/reflection_pb.js';
import { healthServiceImpl } from './health.js';
import { ledgerServiceImpl } from './ledger.js';
import { nativeService, type CallGuard } from './native.js';
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
  readonly apiKeys: ApiKeysService;
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
  /** Stops accepting; lets calls in flight finish (GOAWAY to every HTTP/2 connection), then resolves. */
  close(): Promise<void>;
  /** Shutdown's deadline passed: drops every connection at once. */
  destroyConnections(): void;
}

export const BASTION_SERVICES = [UserService.typeName, AuthServiceDesc.typeName, LedgerServiceDesc.typeName, ApiKeyService.typeName] as const;


/** What the guard needs of a call, on either protocol. */
interface GuardedCall {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly requestHeader: Headers;
  readonly values: ContextValues;
}

/** The first bytes of an HTTP/2 connection; "PRI " tells it from every HTTP/1.1 method (POST, PUT, PATCH ...). */
const HTTP2_PREFACE_START = Buffer.from('PRI ');
/** A connection that sends nothing to tell its protocol by is closed after this long. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;

export function createGrpcServer(deps: GrpcDependencies): GrpcServer {
  const requestIds = createRequestIds();
  const shutdown = new AbortController();

  /**
   * For bastion.v1 calls: the request id (left in the call's values, echoed by each protocol in the
   * response header x-request-id), the rate limit (as REST's rate-limit hook: RESOURCE_EXHAUSTED
   * RATE_LIMITED with retry-after), and every error through the mapper. Health checks and reflection
   * are not guarded (as REST's /health).
   */
  const guard = async <T>(call: GuardedCall, run: () => Promise<T>): Promise<T> => {
    const claimed = call.requestHeader.get('x-request-id');
    const requestId = claimed !== null && REQUEST_ID_PATTERN.test(claimed) ? claimed : requestIds.next();
    call.values.set(requestIdKey, requestId);
    try {
      const clientIp = call.values.get(clientIpKey);
      let decision: GcraDecision | Promise<GcraDecision> = deps.rateLimiter.take(clientIp, deps.rateLimitMax, deps.rateLimitWindowMs);
      // A Redis failure lets the call through, as on REST.
      if (decision instanceof Promise) decision = await decision.catch(() => ({ allowed: true, remaining: 0, waitMs: 0 }));
      if (!decision.allowed) {
        throw new DomainError('RATE_LIMITED', 'Too many requests; retry later', {
          retryAfterSeconds: Math.max(1, Math.ceil(decision.waitMs / 1000)),
        });
      }
      return await run();
    } catch (error) {
      const mapped = toConnectError(error, requestId);
      if (mapped.unexpected) {
        deps.logger.error({ err: error, requestId, rpc: `${call.service.typeName}/${call.method.name}` }, 'grpc: unexpected error');
      }
      mapped.error.metadata.set('x-request-id', requestId);
      throw mapped.error;
    }
  };
  const nativeGuard: CallGuard = async (context, run) => {
    const result = await guard(context, run);
    context.responseHeader.set('x-request-id', context.values.get(requestIdKey));
    return result;
  };

  const services = [
    { desc: UserService, impl: userServiceImpl(deps.users, deps.auth), guarded: true },
    { desc: AuthServiceDesc, impl: authServiceImpl(deps.auth, deps.users), guarded: true },
    { desc: LedgerServiceDesc, impl: ledgerServiceImpl(deps.ledger, deps.auth), guarded: true },
    { desc: ApiKeyService, impl: apiKeyServiceImpl(deps.apiKeys, deps.auth), guarded: true },
    {
      desc: Health,
      impl: healthServiceImpl({
        services: ['', ...BASTION_SERVICES],
        isReady: async () => !deps.isShuttingDown() && (await deps.isReady()),
        shutdownSignal: shutdown.signal,
      }),
      guarded: false,
    },
    { desc: ServerReflection, impl: reflectionServiceImpl([UserService, AuthServiceDesc, LedgerServiceDesc, ApiKeyService, Health, ServerReflection]), guarded: false },
  ] as const;

  // HTTP/2: grpc-js, fed the connections the listener below hands it.
  const native = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    // The server's own connection housekeeping: a client that opens many connections and leaves
    // them idle does not keep them forever.
    'grpc.max_connection_idle_ms': 5 * 60_000,
  });
  for (const { desc, impl, guarded } of services) {
    const { definition, handlers } = nativeService(desc, impl, guarded ? nativeGuard : undefined);
    native.addService(definition, handlers);
  }
  const injector = native.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  // HTTP/1.1: Connect (gRPC-Web, Connect protocol), the same impls behind the same guard.
  const interceptor: Interceptor = (next) => async (request) => {
    if (!request.service.typeName.startsWith('bastion.')) return next(request);
    const call = { service: request.service, method: request.method, requestHeader: request.header, values: request.contextValues };
    const response = await guard(call, () => next(request));
    response.header.set('x-request-id', request.contextValues.get(requestIdKey));
    return response;
  };
  const connectHandler = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      for (const { desc, impl } of services) router.service(desc, impl as never);
    },
    interceptors: [interceptor],
    readMaxBytes: MAX_MESSAGE_BYTES,
    contextValues: (request) => createContextValues().set(clientIpKey, request.socket.remoteAddress ?? ''),
  });
  const http1 = http.createServer(connectHandler);
  /** HTTP/1.1 connections, with their requests in flight, so that close can end the idle ones at once and the rest after their answer. */
  const http1Sockets = new Map<Socket, number>();
  http1.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
    const socket = request.socket;
    http1Sockets.set(socket, (http1Sockets.get(socket) ?? 0) + 1);
    if (shutdown.signal.aborted) response.shouldKeepAlive = false;
    response.once('close', () => {
      const inFlight = (http1Sockets.get(socket) ?? 1) - 1;
      if (!http1Sockets.has(socket)) return;
      http1Sockets.set(socket, inFlight);
      if (inFlight === 0 && shutdown.signal.aborted) socket.end();
    });
  });
  // A malformed HTTP/1.1 request gets a 400 and the connection closes (node's default), never a crash.
  http1.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy(error);
  });

  // The port: each connection goes to grpc-js or to Connect by its first bytes, which are handed
  // over unread (unshifted) with the socket.
  const sockets = new Set<Socket>();
  const listener = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      http1Sockets.delete(socket);
    });
    // A reset before or after the handover is the client's problem, never a crash.
    socket.on('error', (error) => deps.logger.debug({ err: error }, 'grpc: connection error'));
    const silent = () => socket.destroy();
    socket.setTimeout(FIRST_BYTES_TIMEOUT_MS, silent);
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const known = Math.min(head.length, HTTP2_PREFACE_START.length);
      const mayBeHttp2 = head.subarray(0, known).equals(HTTP2_PREFACE_START.subarray(0, known));
      if (mayBeHttp2 && known < HTTP2_PREFACE_START.length) return;
      socket.off('data', onData);
      // The protocol's server owns the socket's timeouts from here (node:http's keep-alive uses them).
      socket.setTimeout(0);
      socket.off('timeout', silent);
      socket.pause();
      socket.unshift(head);
      if (mayBeHttp2) {
        injector.injectConnection(socket);
      } else {
        http1Sockets.set(socket, 0);
        http1.emit('connection', socket);
        // node:http reads the socket natively from here on; the unshifted bytes wait in the stream's
        // buffer until it flows again.
        socket.resume();
      }
    };
    socket.on('data', onData);
  });

  let port: number | undefined;
  return {
    get port() {
      return port;
    },
    async listen(requestedPort, host) {
      listener.listen(requestedPort, host);
      await once(listener, 'listening');
      port = (listener.address() as AddressInfo).port;
      return port;
    },
    async close() {
      shutdown.abort();
      const stopped = listener.listening ? new Promise<void>((resolve) => listener.close(() => resolve())) : Promise.resolve();
      // HTTP/2: GOAWAY to every connection; grpc-js waits for the calls in flight.
      const nativeDone = new Promise<void>((resolve) => native.tryShutdown(() => resolve()));
      // HTTP/1.1: idle connections end now, busy ones after their answer (request handler above).
      for (const [socket, inFlight] of http1Sockets) if (inFlight === 0) socket.end();
      await Promise.all([stopped, nativeDone]);
      while (http1Sockets.size > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    destroyConnections() {
      native.forceShutdown();
      for (const socket of sockets) socket.destroy();
    },
  };
}
