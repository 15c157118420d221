import { DomainError, notFound, unauthenticated } from '../../platform/errors.js';

/** The mfa component's own error codes (see ErrorCodes in platform/errors.ts). */
export type MfaErrorCode = 'INVALID_MFA_CODE' | 'MFA_ALREADY_ENABLED';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<MfaErrorCode, true> {}
}

/**
 * A wrong, replayed or malformed code. At login (verify) it is 401, like a wrong password; where the
 * caller is already authenticated (confirm, disable) the REST adapter answers 400.
 */
export const invalidMfaCode = (): DomainError => new DomainError('INVALID_MFA_CODE', 'The code is not correct or was already used');
export const mfaAlreadyEnabled = (): DomainError =>
  new DomainError('MFA_ALREADY_ENABLED', 'Multi-factor authentication is already active; disable it first to enrol again');
/** Unknown, used (a right code or five wrong ones) or expired: the login starts again from the password. */
export const invalidMfaToken = (): DomainError =>
  unauthenticated('The MFA token is unknown, used or expired; log in again');
export const tooManyWrongCodes = (retryAfterSeconds: number): DomainError =>
  new DomainError('RATE_LIMITED', 'Too many wrong codes for this user; retry later', { retryAfterSeconds });
export const noEnrolment = (): DomainError => notFound('TOTP enrolment');
export const wrongPassword = (): DomainError => new DomainError('INVALID_CURRENT_PASSWORD', 'The password is not correct');
/**
 * A secret sealed under a KEY_ENCRYPTION_SECRET this instance lacks (another instance started with
 * it, during a rolling switch): a transient of the deployment, so the caller retries (on a
 * restarted instance), not a failure of the request.
 */
export const secretUnavailable = (): DomainError =>
  new DomainError('SERVICE_UNAVAILABLE', 'This instance cannot open second-factor secrets yet; retry shortly', { retryAfterSeconds: 1 });
