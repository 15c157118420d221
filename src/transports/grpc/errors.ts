// The gRPC transport's one error mapper: a DomainError becomes a gRPC status by an exhaustive
// Record over ErrorCode, carrying the domain code where every client can read it. Never a stack
// trace, SQL or driver text: anything unexpected is INTERNAL "Internal server error" (and logged).
import { Code, ConnectError } from '@connectrpc/connect';
import { isConnectionError } from '../../platform/db/index.js';
import { DomainError, type ErrorCode, type FieldError } from '../../platform/errors.js';
import { ErrorDetailSchema } from './gen/bastion/v1/common_pb.js';

/** Domain error code -> gRPC status code: exhaustive, so a new code does not compile until it is mapped here. */
export const GRPC_CODE_BY_ERROR: Readonly<Record<ErrorCode, Code>> = {
  VALIDATION_FAILED: Code.InvalidArgument,
  INVALID_JSON: Code.InvalidArgument,
  UNAUTHENTICATED: Code.Unauthenticated,
  INVALID_CREDENTIALS: Code.Unauthenticated,
  INVALID_REFRESH_TOKEN: Code.Unauthenticated,
  TOKEN_REUSED: Code.Unauthenticated,
  OIDC_FAILED: Code.Unauthenticated,
  MFA_REQUIRED: Code.Unauthenticated,
  INVALID_MFA_CODE: Code.Unauthenticated,
  FORBIDDEN: Code.PermissionDenied,
  INVALID_CURRENT_PASSWORD: Code.PermissionDenied,
  // A mailed token unknown, spent or expired: the argument is wrong (REST 400).
  INVALID_TOKEN: Code.InvalidArgument,
  NOT_FOUND: Code.NotFound,
  EMAIL_TAKEN: Code.AlreadyExists,
  MFA_ALREADY_ENABLED: Code.AlreadyExists,
  ACCOUNT_NOT_EMPTY: Code.FailedPrecondition,
  // Retry later with the same key: the first call is still running (REST 409).
  IDEMPOTENCY_IN_PROGRESS: Code.Aborted,
  // The key names another request: the caller's argument is wrong, retrying cannot help (REST 422).
  IDEMPOTENCY_KEY_REUSED: Code.InvalidArgument,
  PENDING_ALREADY_POSTED: Code.FailedPrecondition,
  PENDING_ALREADY_VOIDED: Code.FailedPrecondition,
  PENDING_EXPIRED: Code.FailedPrecondition,
  INSUFFICIENT_FUNDS: Code.FailedPrecondition,
  CURRENCY_MISMATCH: Code.FailedPrecondition,
  AMOUNT_EXCEEDS_PENDING: Code.FailedPrecondition,
  BALANCE_LIMIT_EXCEEDED: Code.OutOfRange,
  RATE_LIMITED: Code.ResourceExhausted,
  SERVICE_BUSY: Code.Unavailable,
  SERVICE_UNAVAILABLE: Code.Unavailable,
};

/** Trailers (response metadata) with the domain code and request id, for clients that skip details. */
export const ERROR_CODE_METADATA = 'bastion-error-code';
export const REQUEST_ID_METADATA = 'bastion-request-id';

/** proto field names are snake_case; the shared schemas report camelCase paths. */
const protoPath = (path: string): string => path.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);

function domainStatus(
  code: ErrorCode | 'INTERNAL_ERROR',
  grpcCode: Code,
  message: string,
  requestId: string,
  fieldErrors: readonly FieldError[] = [],
  retryAfterSeconds?: number,
): ConnectError {
  const metadata = new Headers({ [ERROR_CODE_METADATA]: code, [REQUEST_ID_METADATA]: requestId });
  if (retryAfterSeconds !== undefined) metadata.set('retry-after', String(retryAfterSeconds));
  return new ConnectError(message, grpcCode, metadata, [
    {
      desc: ErrorDetailSchema,
      value: {
        code,
        requestId,
        fieldErrors: fieldErrors.map((fieldError) => ({ path: protoPath(fieldError.path), message: fieldError.message })),
        retryAfterSeconds: retryAfterSeconds ?? 0,
      },
    },
  ]);
}

/**
 * Any thrown value as the status to answer. `requestId` is the current call's; a kept outcome
 * answered again (an idempotent replay) reports the first request's id instead, as REST does.
 * ConnectErrors raised by Connect itself (deadline, cancellation, malformed input) pass through.
 */
export function toConnectError(error: unknown, requestId: string): { readonly error: ConnectError; readonly unexpected: boolean } {
  if (error instanceof DomainError) {
    const grpcCode = GRPC_CODE_BY_ERROR[error.code];
    return {
      error: domainStatus(
        error.code,
        grpcCode,
        error.message,
        error.requestId ?? requestId,
        error.details.fieldErrors,
        error.details.retryAfterSeconds,
      ),
      unexpected: false,
    };
  }
  if (error instanceof ConnectError) return { error, unexpected: false };
  if (isConnectionError(error)) {
    return {
      error: domainStatus('SERVICE_UNAVAILABLE', Code.Unavailable, 'The database is unavailable; retry shortly', requestId, [], 1),
      unexpected: false,
    };
  }
  return { error: domainStatus('INTERNAL_ERROR', Code.Internal, 'Internal server error', requestId), unexpected: true };
}
