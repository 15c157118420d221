// Request schemas of the email-flows component, shared by every transport.
import { Type, type Static } from 'typebox';
import { Email } from '../../platform/http.js';
import { PasswordSchema } from '../users/index.js';

/** A mailed token as it arrives: base64url of 32 bytes is 43 characters; anything else is simply invalid. */
const Token = Type.String({ minLength: 1, maxLength: 256 });

export const VerifyEmailBody = Type.Object({ token: Token }, { additionalProperties: false });
export type VerifyEmailBody = Static<typeof VerifyEmailBody>;

export const PasswordResetBody = Type.Object({ email: Email }, { additionalProperties: false });
export type PasswordResetBody = Static<typeof PasswordResetBody>;

export const PasswordResetConfirmBody = Type.Object({ token: Token, newPassword: PasswordSchema }, { additionalProperties: false });
export type PasswordResetConfirmBody = Static<typeof PasswordResetConfirmBody>;

/** `{data: {}}`: accepted, nothing to tell (above all not whether the email is known). */
export const AcceptedEnvelope = Type.Object({ data: Type.Object({}, { additionalProperties: false }) });
