// Request and response schemas of the auth component, shared by every transport.
import { Type } from 'typebox';
import { Email } from '../../platform/http.js';
import { PasswordSchema, UserSchema } from '../users/index.js';

// A login checks a password against a stored hash: any non-empty string up to the maximum length
// is a (possibly wrong) password, so that a too-short guess is 401 like any other wrong one.
const LoginPassword = Type.String({ minLength: 1, maxLength: 128 });
const RefreshTokenValue = Type.String({ minLength: 1, maxLength: 512 });

export const LoginBody = Type.Object({ email: Email, password: LoginPassword }, { additionalProperties: false });
export const RefreshBody = Type.Object({ refreshToken: RefreshTokenValue }, { additionalProperties: false });
export const ChangePasswordBody = Type.Object(
  { currentPassword: LoginPassword, newPassword: PasswordSchema },
  { additionalProperties: false },
);

const TokenFields = {
  accessToken: Type.String(),
  refreshToken: Type.String(),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Access-token lifetime in seconds' }),
};
export const TokenPairSchema = Type.Object(TokenFields);
export const LoginResultSchema = Type.Object({ ...TokenFields, user: UserSchema });
/** What a login of a user with MFA answers instead of tokens. */
export const MfaChallengeSchema = Type.Object({
  mfaRequired: Type.Literal(true),
  mfaToken: Type.String({ description: 'Single use; send it with a code to POST /api/v1/auth/mfa/verify' }),
  expiresIn: Type.Integer({ description: 'Seconds the challenge stays valid' }),
});

export const SessionSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Type.String({ format: 'date-time', description: 'The last login or refresh of this session' }),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean({ description: 'The session whose access token made this request' }),
});
export const SessionListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);

/** A public key as JWKS publishes it: OKP (crv, x), EC (crv, x, y) or RSA (n, e) members, never private ones. */
export const JwksSchema = Type.Object({
  keys: Type.Array(
    Type.Object({
      kty: Type.String(),
      kid: Type.String(),
      alg: Type.String(),
      use: Type.String(),
      crv: Type.Optional(Type.String()),
      x: Type.Optional(Type.String()),
      y: Type.Optional(Type.String()),
      n: Type.Optional(Type.String()),
      e: Type.Optional(Type.String()),
    }),
  ),
});
