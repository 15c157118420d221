import { DomainError } from '../../platform/errors.js';

/** The users component's own error codes (see ErrorCodes in platform/errors.ts). */
export type UsersErrorCode = 'EMAIL_TAKEN' | 'INVALID_CURRENT_PASSWORD';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<UsersErrorCode, true> {}
}

export const emailTaken = (): DomainError => new DomainError('EMAIL_TAKEN', 'A user with this email already exists');
export const invalidCurrentPassword = (): DomainError =>
  new DomainError('INVALID_CURRENT_PASSWORD', 'The current password is not correct');
