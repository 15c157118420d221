// The email-flows component's public surface: email verification and password reset.
export {
  createEmailFlowsService,
  RESET_TTL_SECONDS,
  VERIFICATION_TTL_SECONDS,
  type EmailFlowsService,
} from './email-flows.service.js';
export { emailFlowsRoutes } from './http.js';
/** Request schemas the transports validate with. */
export { PasswordResetBody, PasswordResetConfirmBody, VerifyEmailBody } from './email-flows.schemas.js';
