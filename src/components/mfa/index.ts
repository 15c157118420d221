// The mfa component's public surface.
export { createMfa, MAX_WRONG_CODES_PER_USER, TOTP_ISSUER, WRONG_CODE_WINDOW_SECONDS, type DisableProof, type MfaDeps, type MfaPauses, type MfaService, type TotpEnrolment } from './mfa.service.js';
export { mfaRoutes } from './http.js';
/** Schemas the transports validate with. */
export { ConfirmTotpBody, DisableTotpBody, VerifyMfaBody } from './mfa.schemas.js';
