// Domain errors: a stable machine-readable code plus a human message. Only transports map codes to
// protocol statuses (see transports/http-errors.ts), so the same error serves REST, GraphQL and gRPC.

export interface FieldError {
  readonly path: string;
  readonly message: string;
}

/**
 * The closed set of domain error codes. The platform declares the codes every component shares;
 * each component adds its own from its *.errors.ts by augmenting this interface (as components
 * declare their tables for Kysely), so a code is a declared key: a typo does not compile, and a
 * transport's mapper, a Record over ErrorCode, does not compile until it maps a new code.
 */
export interface ErrorCodes {
  VALIDATION_FAILED: true;
  INVALID_JSON: true;
  UNAUTHENTICATED: true;
  FORBIDDEN: true;
  NOT_FOUND: true;
  RATE_LIMITED: true;
  /** Too much queued work (e.g. password hashing): retry shortly. */
  SERVICE_BUSY: true;
  /** Shutting down, or a dependency is away: retry shortly. */
  SERVICE_UNAVAILABLE: true;
}
export type ErrorCode = keyof ErrorCodes;

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: {
      readonly fieldErrors?: readonly FieldError[];
      readonly retryAfterSeconds?: number;
      /** The budget a RATE_LIMITED answer ran out of (REST shows it as RateLimit-* headers). */
      readonly rateLimit?: { readonly limit: number; readonly remaining: number; readonly resetSeconds: number };
    } = {},
    /**
     * The request that first produced this error, when it is a kept outcome answered again (an
     * idempotent replay): transports report it instead of the current request's id.
     */
    readonly requestId?: string,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const notFound = (what = 'Resource'): DomainError => new DomainError('NOT_FOUND', `${what} not found`);
export const forbidden = (message = 'You are not allowed to perform this action'): DomainError =>
  new DomainError('FORBIDDEN', message);
export const unauthenticated = (message = 'Authentication required'): DomainError =>
  new DomainError('UNAUTHENTICATED', message);
export const validationFailed = (fieldErrors: readonly FieldError[], message = 'Request validation failed'): DomainError =>
  new DomainError('VALIDATION_FAILED', message, { fieldErrors });

/** A broken invariant is a bug: crash the operation loudly instead of answering success. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`Invariant violated: ${message}`);
}
