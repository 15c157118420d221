// The one error mapper: every failure (domain errors, validation, Fastify's own, the unexpected)
// becomes the contract's body {error: {code, message, requestId, errors?}} with its HTTP status.
import { STATUS_CODES } from 'node:http';
import type { ErrorObject } from 'ajv';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isConnectionError } from '../platform/db/index.js';
import { DomainError, type ErrorCode, type FieldError } from '../platform/errors.js';
import { fieldErrorsFromAjv } from './http/validation.js';

/** Domain error code -> HTTP status: exhaustive, so a code declared without a status does not compile. */
const STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  VALIDATION_FAILED: 400,
  INVALID_JSON: 400,
  INVALID_TOKEN: 400,
  UNAUTHENTICATED: 401,
  INVALID_CREDENTIALS: 401,
  INVALID_REFRESH_TOKEN: 401,
  TOKEN_REUSED: 401,
  OIDC_FAILED: 401,
  MFA_REQUIRED: 401,
  // 401 at login's second step (verify); the mfa routes for a logged-in caller answer 400 themselves.
  INVALID_MFA_CODE: 401,
  FORBIDDEN: 403,
  INVALID_CURRENT_PASSWORD: 403,
  NOT_FOUND: 404,
  EMAIL_TAKEN: 409,
  MFA_ALREADY_ENABLED: 409,
  ACCOUNT_NOT_EMPTY: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  PENDING_ALREADY_POSTED: 409,
  PENDING_ALREADY_VOIDED: 409,
  PENDING_EXPIRED: 409,
  INSUFFICIENT_FUNDS: 422,
  CURRENCY_MISMATCH: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  AMOUNT_EXCEEDS_PENDING: 422,
  BALANCE_LIMIT_EXCEEDED: 422,
  RATE_LIMITED: 429,
  SERVICE_UNAVAILABLE: 503,
  SERVICE_BUSY: 503,
};

/** Fastify's own errors -> the contract's codes. */
const FASTIFY_ERRORS: Readonly<Record<string, ErrorPayload>> = {
  // The router's (frameworkErrors): the path cannot name any resource, so it is a malformed request.
  FST_ERR_BAD_URL: {
    status: 400,
    code: 'VALIDATION_FAILED',
    message: 'The URL path is not valid percent-encoded UTF-8',
    errors: [{ path: 'url', message: 'has an invalid percent-encoding' }],
  },
  FST_ERR_MAX_PARAM_LENGTH: {
    status: 400,
    code: 'VALIDATION_FAILED',
    message: 'A URL path segment is too long',
    errors: [{ path: 'url', message: 'has a path segment longer than 100 characters' }],
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
    message: 'Request bodies must be application/json',
  },
  FST_ERR_CTP_INVALID_TYPE: { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Request bodies must be application/json' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'Request body is larger than 1 MiB' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'INVALID_JSON', message: 'Request body is empty' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'INVALID_JSON', message: 'Content-Length does not match the body' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'INVALID_JSON', message: 'Request body is not valid JSON' },
};

const GENERIC_BY_STATUS: Readonly<Record<number, string>> = {
  400: 'BAD_REQUEST',
  404: 'ROUTE_NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  406: 'NOT_ACCEPTABLE',
  408: 'REQUEST_TIMEOUT',
  413: 'PAYLOAD_TOO_LARGE',
  414: 'URI_TOO_LONG',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED',
  431: 'HEADERS_TOO_LARGE',
  503: 'SERVICE_UNAVAILABLE',
};

export interface ErrorPayload {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly errors?: readonly FieldError[];
  readonly retryAfterSeconds?: number;
  readonly rateLimit?: { readonly limit: number; readonly remaining: number; readonly resetSeconds: number };
  /**
   * The id of the request that first produced this outcome, when it was another (an idempotent
   * replay of an error): the body names it instead of the replaying request's id.
   */
  readonly requestId?: string;
}

/** Maps any thrown value to the contract's error; never leaks driver text, SQL or stack traces. */
export function toErrorPayload(error: unknown): ErrorPayload {
  if (error instanceof DomainError) {
    const status = STATUS_BY_CODE[error.code];
    if (status === undefined) return { status: 500, code: 'INTERNAL_ERROR', message: 'Internal server error' };
    return {
      status,
      code: error.code,
      message: error.message,
      ...(error.details.fieldErrors ? { errors: error.details.fieldErrors } : {}),
      ...(error.details.retryAfterSeconds !== undefined ? { retryAfterSeconds: error.details.retryAfterSeconds } : {}),
      ...(error.details.rateLimit ? { rateLimit: error.details.rateLimit } : {}),
      ...(error.requestId !== undefined ? { requestId: error.requestId } : {}),
    };
  }
  const fastifyError = error as Partial<FastifyError> & { validationContext?: string };
  if (Array.isArray(fastifyError.validation)) {
    return {
      status: 400,
      code: 'VALIDATION_FAILED',
      message: 'Request validation failed',
      errors: fieldErrorsFromAjv(fastifyError.validation as ErrorObject[], fastifyError.validationContext),
    };
  }
  const known = fastifyError.code ? FASTIFY_ERRORS[fastifyError.code] : undefined;
  if (known) return known;
  if (isConnectionError(error)) {
    return { status: 503, code: 'SERVICE_UNAVAILABLE', message: 'The database is unavailable; retry shortly', retryAfterSeconds: 1 };
  }
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status, code: GENERIC_BY_STATUS[status] ?? 'BAD_REQUEST', message: 'The request could not be processed' };
  }
  return { status: 500, code: 'INTERNAL_ERROR', message: 'Internal server error' };
}

export function sendError(request: FastifyRequest, reply: FastifyReply, payload: ErrorPayload) {
  if (payload.retryAfterSeconds !== undefined) void reply.header('retry-after', String(payload.retryAfterSeconds));
  if (payload.rateLimit) {
    const { limit, remaining, resetSeconds } = payload.rateLimit;
    void reply.headers({ 'ratelimit-limit': limit, 'ratelimit-remaining': remaining, 'ratelimit-reset': resetSeconds });
  }
  return reply
    .code(payload.status)
    .header('x-request-id', request.id)
    .type('application/json; charset=utf-8')
    .send(errorBody(payload, request.id));
}

/** The contract's error body; `requestId` is the answering request's, unless the payload names the original. */
export function errorBody(payload: ErrorPayload, requestId: string) {
  return {
    error: {
      code: payload.code,
      message: payload.message,
      requestId: payload.requestId ?? requestId,
      ...(payload.errors ? { errors: payload.errors } : {}),
    },
  };
}

/**
 * Errors of Node's HTTP parser (the server's clientError event): the bytes never became a request,
 * so no route, hook or client request id exists. The contract's body all the same.
 */
export function clientErrorPayload(error: Error & { code?: string }): ErrorPayload {
  if (error.code === 'HPE_HEADER_OVERFLOW') {
    return { status: 431, code: 'HEADERS_TOO_LARGE', message: 'The request line and headers are larger than 16 KiB' };
  }
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return { status: 408, code: 'REQUEST_TIMEOUT', message: 'The request did not arrive in time' };
  }
  return {
    status: 400,
    code: 'VALIDATION_FAILED',
    message: 'The request is not well-formed HTTP/1.1',
    errors: [{ path: 'request', message: 'is not well-formed HTTP/1.1' }],
  };
}

/** A complete HTTP/1.1 error response, for sockets Fastify never got a request from; it closes the connection. */
export function rawErrorResponse(payload: ErrorPayload, requestId: string, headers: Readonly<Record<string, string>>): string {
  const body = JSON.stringify(errorBody(payload, requestId));
  const lines = [
    `HTTP/1.1 ${payload.status} ${STATUS_CODES[payload.status] ?? 'Error'}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    `x-request-id: ${requestId}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
  ];
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}
