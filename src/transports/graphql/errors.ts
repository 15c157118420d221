// GraphQL's error mapper: every error of a GraphQL request becomes
// { message, locations?, path?, extensions: { code, status, requestId, errors?, retryAfterSeconds? } }
// with the code and HTTP status the REST mapper (../http-errors.ts) gives the same failure, so a
// client sees one set of codes whatever the protocol. Never a stack trace or driver text.
import type { FastifyReply } from 'fastify';
import { GraphQLError, type ExecutionResult, type FormattedExecutionResult, type GraphQLFormattedError } from 'graphql';
import { DomainError } from '../../platform/errors.js';
import type { Logger } from '../../platform/logger.js';
import { toErrorPayload, type ErrorPayload } from '../http-errors.js';

/** Codes only this transport gives: a document refused before execution. Not domain codes. */
const TRANSPORT_STATUS = {
  QUERY_TOO_COMPLEX: 400,
  INTROSPECTION_DISABLED: 400,
  /** A WebSocket connection holding its most subscriptions asked for another. */
  TOO_MANY_SUBSCRIPTIONS: 429,
} as const satisfies Record<string, number>;
type TransportCode = keyof typeof TRANSPORT_STATUS;

const isTransportCode = (code: unknown): code is TransportCode => typeof code === 'string' && code in TRANSPORT_STATUS;

/** Mercurius wraps request-level failures (parse, validation, GET mutation) in an error listing them. */
interface MercuriusWrapper extends Error {
  readonly code?: string;
  readonly statusCode?: number;
  readonly errors?: readonly unknown[];
}

interface Rendered {
  readonly source: GraphQLError;
  readonly error: GraphQLFormattedError;
  readonly payload: ErrorPayload;
}

const malformed = (message: string): ErrorPayload => ({ status: 400, code: 'VALIDATION_FAILED', message });

/** A GraphQLError of the document itself (syntax, unknown field, bad variable): the client's to fix. */
function documentError(error: GraphQLError): ErrorPayload {
  const code = error.extensions['code'];
  if (isTransportCode(code)) return { status: TRANSPORT_STATUS[code], code, message: error.message };
  return malformed(error.message);
}

function payloadOf(error: GraphQLError, parentStatus: number | undefined): ErrorPayload {
  const original = error.originalError;
  // Thrown by graphql-js or our scalars and limit rules: the message describes the document only.
  if (original === undefined || original instanceof GraphQLError) return documentError(error);
  if (original instanceof DomainError) return toErrorPayload(original);
  const wrapper = original as MercuriusWrapper;
  if (typeof wrapper.code === 'string' && wrapper.code.startsWith('MER_ERR_')) {
    if (wrapper.statusCode === 405) return { status: 405, code: 'METHOD_NOT_ALLOWED', message: 'Mutations must be sent with POST' };
    return malformed('The GraphQL request is malformed');
  }
  if (parentStatus === 405) return { status: 405, code: 'METHOD_NOT_ALLOWED', message: 'Mutations must be sent with POST' };
  const payload = toErrorPayload(original);
  // Inside a refused request: the route's own schema validation keeps its field errors; the rest is malformed.
  if (parentStatus === 400 && payload.code !== 'VALIDATION_FAILED') return malformed('The GraphQL request is malformed');
  return payload;
}

function expand(error: GraphQLError): Array<{ error: GraphQLError; parentStatus: number | undefined }> {
  const wrapper = error.originalError as MercuriusWrapper | undefined;
  if (wrapper && Array.isArray(wrapper.errors) && wrapper.errors.length > 0) {
    return wrapper.errors.map((inner) => ({
      error: inner instanceof GraphQLError ? inner : new GraphQLError(inner instanceof Error ? inner.message : 'Invalid request', { originalError: inner instanceof Error ? inner : undefined }),
      parentStatus: wrapper.statusCode,
    }));
  }
  return [{ error, parentStatus: undefined }];
}

function render(error: GraphQLError, parentStatus: number | undefined, requestId: string): Rendered {
  const payload = payloadOf(error, parentStatus);
  return {
    source: error,
    payload,
    error: {
      message: payload.message,
      ...(error.locations ? { locations: error.locations } : {}),
      ...(error.path ? { path: error.path } : {}),
      extensions: {
        code: payload.code,
        status: payload.status,
        requestId: payload.requestId ?? requestId,
        ...(payload.errors ? { errors: payload.errors } : {}),
        ...(payload.retryAfterSeconds !== undefined ? { retryAfterSeconds: payload.retryAfterSeconds } : {}),
      },
    },
  };
}

/**
 * An error ending a subscription before it starts, over WebSocket: Mercurius sends thrown errors as
 * they are (its errorFormatter is not on that path), so this renders one as the formatter would.
 */
export function socketError(thrown: unknown, requestId: string, logger: Logger): GraphQLError {
  const error =
    thrown instanceof GraphQLError
      ? thrown
      : new GraphQLError(thrown instanceof Error ? thrown.message : 'Internal error', { originalError: thrown instanceof Error ? thrown : undefined });
  const [first] = expand(error).map(({ error: inner, parentStatus }) => render(inner, parentStatus, requestId));
  if (!first) return new GraphQLError('Internal error', { extensions: { code: 'INTERNAL_ERROR', status: 500, requestId } });
  if (first.payload.code === 'INTERNAL_ERROR') logger.error({ err: first.source.originalError ?? first.source, reqId: requestId }, 'graphql: unhandled error');
  return new GraphQLError(first.error.message, { extensions: first.error.extensions });
}

/**
 * Mercurius' errorFormatter. The HTTP status is 200 once execution ran (the errors are per field);
 * a request refused as a whole (malformed, too complex, rate limited) gets its error's status.
 */
export function createErrorFormatter(logger: Logger) {
  return (
    execution: ExecutionResult & Required<Pick<ExecutionResult, 'errors'>>,
    context: { reply?: FastifyReply },
  ): { statusCode: number; response: FormattedExecutionResult } => {
    const reply = context.reply;
    const requestId = reply?.request.id ?? 'unknown';
    const rendered = execution.errors.flatMap(expand).map(({ error, parentStatus }) => render(error, parentStatus, requestId));
    for (const { source, payload } of rendered) {
      if (payload.code === 'INTERNAL_ERROR') logger.error({ err: source.originalError ?? source, reqId: requestId }, 'graphql: unhandled error');
      else if (payload.status >= 500) logger.warn({ reqId: requestId, code: payload.code }, 'graphql: request failed: dependency unavailable');
    }
    const retryAfter = rendered.find(({ payload }) => payload.retryAfterSeconds !== undefined)?.payload.retryAfterSeconds;
    if (retryAfter !== undefined && reply) void reply.header('retry-after', String(retryAfter));
    const executed = execution.data !== undefined && execution.data !== null;
    return {
      statusCode: executed ? 200 : (rendered[0]?.payload.status ?? 400),
      response: { data: execution.data ?? null, errors: rendered.map(({ error }) => error) },
    };
  };
}
