import { DomainError } from '../../platform/errors.js';

/** The oidc component's own error codes (see ErrorCodes in platform/errors.ts). */
export type OidcErrorCode = 'OIDC_FAILED';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<OidcErrorCode, true> {}
}

/**
 * Every way a callback can be wrong (unknown, spent or expired state, the provider's error, a code the
 * token endpoint refuses, an ID token that fails a check) is one answer: the client can only start over.
 */
export const oidcFailed = (message = 'The OpenID Connect login could not be completed; start again'): DomainError =>
  new DomainError('OIDC_FAILED', message);

export const providerUnavailable = (): DomainError =>
  new DomainError('SERVICE_UNAVAILABLE', 'The identity provider cannot be reached; retry shortly', { retryAfterSeconds: 5 });
