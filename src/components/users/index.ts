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
/** Schemas other components' transports embed (auth's register, login and password bodies). */
export { PasswordSchema, RegisterBody, UserSchema } from './users.schemas.js';
