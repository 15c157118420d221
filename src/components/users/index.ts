// The users component's public surface.
export { createPasswordHasher, type PasswordHasher } from './passwords.js';
export {
  createUsersService,
  toUser,
  type AlsoInTransaction,
  type CredentialPauses,
  type Page,
  type User,
  type UserState,
  type UsersService,
} from './users.service.js';
export { isLiveAtTokenVersion } from './users.repo.js';
export { usersRoutes } from './http.js';
/** Schemas the transports validate with, and that other components' transports embed. */
export { CreateUserBody, PasswordSchema, RegisterBody, UpdateUserBody, UserSchema } from './users.schemas.js';
