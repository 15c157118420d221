// Shared pieces of the HTTP adapters: the error body schema, common params/queries and the email
// normalisation the contract asks for on every body that takes one.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type, type TSchema } from 'typebox';
import { canonicalEmail } from './email.js';
import { userAgentOf, type RequestOrigin } from './request-origin.js';
import { traceparentOf } from './trace-context.js';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable SNAKE_CASE error code' }),
      message: Type.String(),
      requestId: Type.String(),
      errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
    }),
  },
  { $id: 'ErrorBody', description: 'Every error has this shape' },
);

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Validation failed or malformed JSON',
  401: 'Missing, invalid or expired credentials',
  403: 'Authenticated but not allowed',
  404: 'Not found (also: exists but not visible to the caller)',
  409: 'Conflict',
  413: 'Body larger than 1 MiB',
  415: 'Body is not application/json',
  422: 'Business rule violated',
  429: 'Rate limited (see Retry-After)',
  503: 'Not ready or busy',
};

/** Response schemas for the given error statuses (they document the shape in OpenAPI). */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(
    statuses.map((status) => [status, Type.Ref('ErrorBody', { description: ERROR_DESCRIPTIONS[status] ?? 'Error' })]),
  );
}

export const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false });

/** Pages beyond this are refused (400) rather than turned into an OFFSET no index can serve. */
export const MAX_PAGE = 10_000_000;

export const PageQuery = Type.Object(
  {
    page: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 1 }),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
  },
  { additionalProperties: false },
);

export const PageMeta = Type.Object({
  page: Type.Integer(),
  limit: Type.Integer(),
  total: Type.Integer(),
  totalPages: Type.Integer(),
});

/**
 * Text that is stored. PostgreSQL text cannot hold NUL, and a lone UTF-16 surrogate has no UTF-8 form
 * (a driver stores U+FFFD in its place, a JSON or batched statement refuses it and takes its batch
 * down with it): both are validation errors, never a 500 or silently changed text. Surrogate pairs
 * (emoji) are fine. The pattern means the same with and without the regex `u` flag.
 */
export const StoredText = (options: { minLength?: number; maxLength: number; description?: string }) =>
  Type.String({ ...options, pattern: '^(?:[^\\u0000\\uD800-\\uDFFF]|[\\uD800-\\uDBFF][\\uDC00-\\uDFFF])*$' });

/** A body that must be empty or `{}` (operations that take no input). */
export const NoBody = Type.Object({}, { additionalProperties: false });

export const Email = Type.String({ format: 'email', maxLength: 254, description: 'Trimmed and lower-cased' });

/** preValidation hook: trims and lower-cases `email` in a JSON body before the schema sees it. */
export async function normalizeEmail(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  const body = request.body;
  if (typeof body === 'object' && body !== null && !Array.isArray(body) && 'email' in body) {
    const record = body as Record<string, unknown>;
    if (typeof record['email'] === 'string') record['email'] = canonicalEmail(record['email']);
  }
}

export const bearerSecurity = [{ bearerAuth: [] }];

/** Responses from this size on are compressed (gzip, brotli or deflate, as the client accepts). */
export const COMPRESS_THRESHOLD_BYTES = 1024;

/**
 * Route option for responses that always stay well below COMPRESS_THRESHOLD_BYTES: one user, one
 * account, a health answer (their fields are bounded: a user is at most ~800 bytes of JSON) and the
 * short errors those routes give. Compression would never apply to them, yet @fastify/compress would
 * run two hooks on each such request to find that out; measured, that was a tenth of the cost of
 * GET /users/:id. Lists, and anything that carries free text of unbounded total size (a transfer's
 * 500-character description, validation errors of a body), keep compression.
 */
export const SMALL_RESPONSE = { compress: false } as const;

/** preValidation hook for routes whose body is optional: no body at all counts as `{}`. */
export async function emptyBodyAsObject(request: FastifyRequest): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {};
}

/** What caused a change made for this request: its trace, client address, user agent and request id. */
export function originOfRequest(request: FastifyRequest): RequestOrigin {
  return {
    traceparent: traceparentOf(request.headers.traceparent),
    ip: request.ip,
    userAgent: userAgentOf(request.headers['user-agent']),
    requestId: request.id,
  };
}
