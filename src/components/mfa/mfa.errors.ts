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
