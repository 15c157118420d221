// Request and response schemas of the users component, shared by every transport.
import { Type, type Static } from 'typebox';
import { Email, StoredText } from '../../platform/http.js';

const RoleSchema = Type.Enum(['user', 'admin']);
const Name = StoredText({ minLength: 1, maxLength: 100 });
const Password = Type.String({ minLength: 8, maxLength: 128 });

export const UserSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    email: Type.String(),
    name: Type.String(),
    role: RoleSchema,
    emailVerified: Type.Boolean(),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
  },
);

export const RegisterBody = Type.Object({ email: Email, name: Name, password: Password }, { additionalProperties: false });
export type RegisterBody = Static<typeof RegisterBody>;

export const CreateUserBody = Type.Object(
  { email: Email, name: Name, password: Password, role: Type.Optional(RoleSchema) },
  { additionalProperties: false },
);

export const UpdateUserBody = Type.Object(
  { name: Type.Optional(Name), email: Type.Optional(Email), role: Type.Optional(RoleSchema) },
  { additionalProperties: false },
);

export const PasswordSchema = Password;
