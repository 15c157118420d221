// Domain errors: a stable machine-readable code plus a human message. Only transports map codes to
// protocol statuses (see transports/http.ts), so the same error serves REST, GraphQL and gRPC.

export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export class DomainError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: { readonly fieldErrors?: readonly FieldError[]; readonly retryAfterSeconds?: number } = {},
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
