// Request and response schemas of the mfa component.
import { Type } from 'typebox';

/** A TOTP code (6 digits) or a recovery code; any other string is a wrong code, not a malformed request. */
const MfaCode = Type.String({ minLength: 1, maxLength: 64, description: 'A 6-digit TOTP code, or (at verify) a recovery code' });
// As at login: any non-empty string up to the maximum is a (possibly wrong) password.
const Password = Type.String({ minLength: 1, maxLength: 128 });

export const TotpEnrolmentSchema = Type.Object({
  secret: Type.String({ description: 'Base32; returned only here' }),
  otpauthUrl: Type.String({ description: 'otpauth://totp/Bastion:<email>?secret=…&issuer=Bastion' }),
  qrSvg: Type.String({ description: 'The otpauth URL as a QR code (SVG document)' }),
});

export const ConfirmTotpBody = Type.Object({ code: MfaCode }, { additionalProperties: false });

export const RecoveryCodesSchema = Type.Object({
  recoveryCodes: Type.Array(Type.String(), { description: 'Each usable once instead of a TOTP code; shown only here' }),
});

export const DisableTotpBody = Type.Union(
  [
    Type.Object({ code: MfaCode }, { additionalProperties: false }),
    Type.Object({ password: Password }, { additionalProperties: false }),
  ],
  { description: 'Exactly one of: a current TOTP code, or the password' },
);

export const VerifyMfaBody = Type.Object(
  { mfaToken: Type.String({ minLength: 1, maxLength: 512 }), code: MfaCode },
  { additionalProperties: false },
);
