// An independent gRPC client for the tests: @grpc/grpc-js with stubs loaded by @grpc/proto-loader
// from the committed .proto files (not Connect's, not the generated code), as a third party would.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_DIR = fileURLToPath(new URL('../../proto', import.meta.url));

const definition = protoLoader.loadSync(
  [
    'bastion/v1/user_service.proto',
    'bastion/v1/auth_service.proto',
    'bastion/v1/ledger_service.proto',
    'bastion/v1/api_key_service.proto',
    'grpc/health/v1/health.proto',
    'grpc/reflection/v1/reflection.proto',
  ],
  // int64 as decimal strings: exact whatever the size; enums by name; unset fields with their defaults.
  { includeDirs: [PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true },
);
const loaded = grpc.loadPackageDefinition(definition);

type ServiceName = 'bastion.v1.UserService' | 'bastion.v1.AuthService' | 'bastion.v1.LedgerService' | 'bastion.v1.ApiKeyService' | 'grpc.health.v1.Health';
type AnyServiceName = ServiceName | 'grpc.reflection.v1.ServerReflection';

function constructorOf(name: AnyServiceName): grpc.ServiceClientConstructor {
  let node: unknown = loaded;
  for (const part of name.split('.')) node = (node as Record<string, unknown>)[part];
  return node as grpc.ServiceClientConstructor;
}

type UnaryMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;

export interface CallOptions {
  readonly token?: string;
  /** Milliseconds from now. */
  readonly deadlineMs?: number;
  readonly metadata?: Record<string, string>;
}

export interface UnaryResult<T> {
  readonly response: T;
  /** Response headers (e.g. idempotent-replayed, x-request-id). */
  readonly headers: grpc.Metadata;
}

/** A rejected call: the status, and the domain code / request id the server puts in the trailers. */
export interface CallError extends grpc.ServiceError {
  readonly domainCode: string | undefined;
  readonly requestId: string | undefined;
}

export interface GrpcJsClient {
  call<T = Record<string, unknown>>(service: ServiceName, method: string, request: object, options?: CallOptions): Promise<UnaryResult<T>>;
  /** The call's error; fails the test if the call succeeds. */
  fail(service: ServiceName, method: string, request: object, options?: CallOptions): Promise<CallError>;
  close(): void;
}

const firstString = (metadata: grpc.Metadata, key: string): string | undefined => {
  const value = metadata.get(key)[0];
  return typeof value === 'string' ? value : undefined;
};

export function createGrpcJsClient(address: string): GrpcJsClient {
  const clients = new Map<ServiceName, grpc.Client>();
  const clientOf = (service: ServiceName): grpc.Client => {
    let client = clients.get(service);
    if (!client) {
      const Constructor = constructorOf(service);
      client = new Constructor(address, grpc.credentials.createInsecure());
      clients.set(service, client);
    }
    return client;
  };
  const call = <T>(service: ServiceName, method: string, request: object, options: CallOptions = {}) =>
    new Promise<UnaryResult<T>>((resolve, reject) => {
      const client = clientOf(service);
      const unary = (client as unknown as Record<string, UnaryMethod>)[method];
      if (typeof unary !== 'function') throw new Error(`${service} has no method ${method}`);
      const metadata = new grpc.Metadata();
      if (options.token) metadata.set('authorization', `Bearer ${options.token}`);
      for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
      const callOptions: grpc.CallOptions = options.deadlineMs !== undefined ? { deadline: Date.now() + options.deadlineMs } : {};
      let headers = new grpc.Metadata();
      const pending = unary.call(client, request, metadata, callOptions, (error, response) => {
        if (error) {
          reject(
            Object.assign(error, {
              domainCode: firstString(error.metadata, 'bastion-error-code'),
              requestId: firstString(error.metadata, 'bastion-request-id'),
            }),
          );
        } else resolve({ response: response as T, headers });
      });
      pending.on('metadata', (received: grpc.Metadata) => {
        headers = received;
      });
    });
  return {
    call,
    async fail(service, method, request, options) {
      try {
        await call(service, method, request, options);
      } catch (error) {
        return error as CallError;
      }
      throw new Error(`${service}/${method} succeeded where it should have failed`);
    },
    close() {
      for (const client of clients.values()) client.close();
    },
  };
}

/**
 * Server reflection as grpcurl uses it: one bidirectional stream, the requests written in order,
 * one response read per request.
 */
export async function reflect(address: string, requests: readonly object[]): Promise<Array<Record<string, unknown>>> {
  const Constructor = constructorOf('grpc.reflection.v1.ServerReflection');
  const client = new Constructor(address, grpc.credentials.createInsecure());
  try {
    const open = (client as unknown as Record<string, () => grpc.ClientDuplexStream<object, Record<string, unknown>>>)['ServerReflectionInfo'];
    if (!open) throw new Error('no ServerReflectionInfo');
    const stream = open.call(client);
    const responses: Array<Record<string, unknown>> = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (response: Record<string, unknown>) => responses.push(response));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    for (const request of requests) stream.write(request);
    stream.end();
    await done;
    return responses;
  } finally {
    client.close();
  }
}

export { grpc };
