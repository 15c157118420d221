import { DomainError, unauthenticated } from '../../platform/errors.js';

/** The auth component's own error codes (see ErrorCodes in platform/errors.ts). */
export type AuthErrorCode = 'INVALID_CREDENTIALS' | 'INVALID_REFRESH_TOKEN' | 'TOKEN_REUSED' | 'MFA_REQUIRED';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<AuthErrorCode, true> {}
}

export const invalidCredentials = (): DomainError =>
  new DomainError('INVALID_CREDENTIALS', 'The email or password is not correct');
export const invalidRefreshToken = (): DomainError =>
  new DomainError('INVALID_REFRESH_TOKEN', 'The refresh token is unknown, expired or revoked');
export const tokenReused = (): DomainError =>
  new DomainError('TOKEN_REUSED', 'This refresh token was already used; every token of this login has been revoked');
export const tooManyLoginAttempts = (retryAfterSeconds: number): DomainError =>
  new DomainError('RATE_LIMITED', 'Too many failed login attempts for this email; retry later', { retryAfterSeconds });
export const invalidAccessToken = (): DomainError => unauthenticated('The access token is missing, invalid or expired');
export const mfaRequired = (): DomainError =>
  new DomainError('MFA_REQUIRED', 'This user has multi-factor authentication: log in with beginLogin, then verifyMfa (REST: POST /api/v1/auth/login, then /api/v1/auth/mfa/verify)');
