// Native gRPC (HTTP/2) through @grpc/grpc-js, from the same service impls the Connect handler serves
// (ServiceImpl<...>: request message and HandlerContext in, response message out), so no rule or
// rendering exists twice. grpc-js owns the protocol (framing, compression, deadlines, flow control,
// GOAWAY); this file only turns the descriptors of the generated code into grpc-js service
// definitions and each grpc-js call into a HandlerContext, and a ConnectError back into a status
// with the same trailers Connect writes (grpc-status-details-bin: google.rpc.Status with the details).
//
// Why not Connect for the gRPC protocol too: measured on this machine class, Connect's Node handler
// costs ~0.3–1 ms per unary call (linked AbortControllers, DOMExceptions at each call's end, async
// iterables per message), grpc-js about a third of that (README, "gRPC against REST").
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape } from '@bufbuild/protobuf';
import { Code, ConnectError, createContextValues, type ContextValues, type HandlerContext } from '@connectrpc/connect';
import { setTrailerStatus } from '@connectrpc/connect/protocol-grpc';
import type { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { clientIpKey } from './call-context.js';

/**
 * Runs a call's work with what every bastion.v1 call gets (request id, rate limit, the error
 * mapper): server.ts's guard. The request id it chose is in `context.values` afterwards.
 */
export type CallGuard = <T>(context: HandlerContext, run: () => Promise<T>) => Promise<T>;

/** A message that did not parse: answered INVALID_ARGUMENT (grpc-js would say INTERNAL). */
class MalformedMessage {
  constructor(readonly reason: string) {}
}

const malformed = (reason: string) =>
  new ConnectError(`The request message is not a valid protobuf message: ${reason}`, Code.InvalidArgument);

/** grpc-js metadata values must be legal header values; ours are ids, codes and numbers. */
function metadataOf(headers: Headers, into = new grpc.Metadata()): grpc.Metadata {
  headers.forEach((value, key) => {
    if (key.startsWith('grpc-')) return;
    if (key.endsWith('-bin')) into.set(key, Buffer.from(value, 'base64'));
    else into.set(key, value);
  });
  return into;
}

/** A ConnectError as grpc-js sends it: the status, its metadata, and its details as Connect encodes them. */
export function grpcStatusOf(error: ConnectError): Partial<grpc.StatusObject> {
  const metadata = metadataOf(error.metadata);
  if (error.details.length > 0) {
    const details = setTrailerStatus(new Headers(), error).get('grpc-status-details-bin');
    if (details !== null) metadata.set('grpc-status-details-bin', Buffer.from(details, 'base64'));
  }
  return { code: error.code as number as grpc.status, details: error.rawMessage, metadata };
}

/** "1.2.3.4:5678" or "[::1]:5678" (grpc-js's getPeer) -> the address alone, as REST and Connect see it. */
export function addressOfPeer(peer: string): string {
  if (peer.startsWith('[')) return peer.slice(1, peer.indexOf(']'));
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}

/** What every kind of grpc-js server call has. */
interface NativeCall {
  readonly cancelled: boolean;
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  getDeadline(): grpc.Deadline;
  once(event: 'cancelled', listener: () => void): unknown;
  removeAllListeners(event: 'cancelled'): unknown;
}

/**
 * A grpc-js call as Connect's HandlerContext. Headers objects are built only when read (most calls
 * read one header, and a unary call with nothing to add sends none), and the signal aborts only if
 * the call is cancelled or its deadline passes (grpc-js has then already answered).
 */
class NativeHandlerContext implements HandlerContext {
  readonly protocolName = 'grpc';
  readonly requestMethod = 'POST';
  readonly values: ContextValues;
  private controller: AbortController | undefined;
  private requestHeaders: Headers | undefined;
  private responseHeaders: Headers | undefined;
  private responseTrailers: Headers | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    private readonly call: NativeCall,
  ) {
    this.values = createContextValues().set(clientIpKey, addressOfPeer(call.getPeer()));
  }

  get url(): string {
    return `/${this.service.typeName}/${this.method.name}`;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      const abort = () => {
        const deadline = this.deadlineMs();
        controller.abort(
          deadline !== undefined && deadline <= Date.now()
            ? new ConnectError('the operation timed out', Code.DeadlineExceeded)
            : new ConnectError('the call was cancelled by the client', Code.Canceled),
        );
      };
      if (this.call.cancelled) abort();
      else this.call.once('cancelled', abort);
    }
    return this.controller.signal;
  }

  private deadlineMs(): number | undefined {
    const deadline = this.call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    return Number.isFinite(ms) ? ms : undefined;
  }

  readonly timeoutMs = (): number | undefined => {
    const deadline = this.deadlineMs();
    return deadline === undefined ? undefined : deadline - Date.now();
  };

  get requestHeader(): Headers {
    if (this.requestHeaders === undefined) {
      const headers = new Headers();
      for (const [key, value] of Object.entries(this.call.metadata.getMap())) {
        if (typeof value === 'string') headers.set(key, value);
      }
      this.requestHeaders = headers;
    }
    return this.requestHeaders;
  }

  get responseHeader(): Headers {
    return (this.responseHeaders ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.responseTrailers ??= new Headers());
  }

  /** The response headers to send: what the impl and the guard set (x-request-id, idempotent-replayed). */
  headersToSend(): grpc.Metadata | undefined {
    return this.responseHeaders === undefined ? undefined : metadataOf(this.responseHeaders);
  }

  trailersToSend(): grpc.Metadata | undefined {
    return this.responseTrailers === undefined ? undefined : metadataOf(this.responseTrailers);
  }

  /** Stops listening for cancellation once the call has answered. */
  done(): void {
    this.call.removeAllListeners('cancelled');
  }
}

/** Throws the INVALID_ARGUMENT a malformed message gets, or gives the message back. */
function parsed<T>(message: T | MalformedMessage): T {
  if (message instanceof MalformedMessage) throw malformed(message.reason);
  return message;
}

/**
 * A client stream's messages. Not `for await (… of call)`: a stream's default iterator destroys the
 * stream when it ends, and for a bidi call that is the response side too.
 */
async function* parsedMessages(call: Readable): AsyncIterable<unknown> {
  for await (const message of call.iterator({ destroyOnReturn: false })) yield parsed(message as unknown);
}

/** The call's answer as a grpc-js error (status, trailers). */
function failure(thrown: unknown): grpc.ServerErrorResponse {
  const error = ConnectError.from(thrown);
  return Object.assign(new Error(error.rawMessage), grpcStatusOf(error));
}

type Impl = (...args: never[]) => unknown;

/**
 * One service for grpc-js: its definition (paths, kinds, protobuf-es serialization) and handlers
 * calling `impl` through `guard` (when given; health and reflection run unguarded, as on Connect).
 */
export function nativeService(
  service: DescService,
  impl: object,
  guard: CallGuard | undefined,
): { readonly definition: grpc.ServiceDefinition; readonly handlers: grpc.UntypedServiceImplementation } {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const input: DescMessage = method.input;
    const output: DescMessage = method.output;
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestDeserialize: (bytes: Buffer) => {
        try {
          return fromBinary(input, bytes);
        } catch (error) {
          return new MalformedMessage(error instanceof Error ? error.message : String(error));
        }
      },
      requestSerialize: (message: unknown) => Buffer.from(toBinary(input, create(input, message as MessageInitShape<DescMessage>))),
      responseSerialize: (message: unknown) => {
        const bytes = toBinary(output, create(output, message as MessageInitShape<DescMessage>));
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      },
      responseDeserialize: (bytes: Buffer) => fromBinary(output, bytes),
    };
    const fn = (impl as Record<string, Impl | undefined>)[method.localName];
    // grpc-js answers UNIMPLEMENTED for a method left without a handler.
    if (fn === undefined) continue;
    const run = fn.bind(impl) as (request: unknown, context: HandlerContext) => unknown;
    const guarded = <T>(context: NativeHandlerContext, work: () => Promise<T>): Promise<T> => (guard ? guard(context, work) : work());

    // The request: one message, or a client stream's messages (as Connect's impls take them).
    const clientStreams = method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming';
    const requestOf = (call: NativeCall & { readonly request?: unknown }): unknown =>
      clientStreams ? parsedMessages(call as unknown as Readable) : parsed(call.request);

    if (method.methodKind === 'unary' || method.methodKind === 'client_streaming') {
      // One answer: the response headers (x-request-id, idempotent-replayed), then message and trailers.
      handlers[method.localName] = (call: NativeCall & { readonly request?: unknown; sendMetadata(metadata: grpc.Metadata): void }, callback: grpc.sendUnaryData<unknown>) => {
        const context = new NativeHandlerContext(service, method, call);
        guarded(context, async () => run(requestOf(call), context)).then(
          (response) => {
            context.done();
            const headers = context.headersToSend();
            if (headers) call.sendMetadata(headers);
            callback(null, response, context.trailersToSend());
          },
          (error: unknown) => {
            context.done();
            callback(failure(error));
          },
        );
      };
    } else {
      // A stream of answers, written as the impl yields them.
      handlers[method.localName] = (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        const context = new NativeHandlerContext(service, method, call);
        guarded(context, async () => {
          for await (const response of run(requestOf(call), context) as AsyncIterable<unknown>) call.write(response);
        }).then(
          () => {
            context.done();
            call.end(context.trailersToSend());
          },
          (error: unknown) => {
            context.done();
            call.emit('error', failure(error));
          },
        );
      };
    }
  }
  return { definition, handlers };
}
