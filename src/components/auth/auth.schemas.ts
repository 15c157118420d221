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

export const JwksSchema = Type.Object({
  keys: Type.Array(
    Type.Object({
      kty: Type.String(),
      crv: Type.String(),
      x: Type.String(),
      kid: Type.String(),
      alg: Type.String(),
      use: Type.String(),
    }),
  ),
});
