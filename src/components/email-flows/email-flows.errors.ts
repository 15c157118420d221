import { DomainError } from '../../platform/errors.js';

/** The email-flows component's own error codes (see ErrorCodes in platform/errors.ts). */
export type EmailFlowsErrorCode = 'INVALID_TOKEN';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<EmailFlowsErrorCode, true> {}
}

/** One answer for unknown, spent and expired tokens: which it was is nobody's business. */
export const invalidToken = (): DomainError => new DomainError('INVALID_TOKEN', 'The token is invalid, used or expired');
