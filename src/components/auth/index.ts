// The auth component's public surface.
export { createAccessTokens, type AccessTokens } from './access-tokens.js';
export { revokeAllOfUser as revokeSessionsOfUser } from './auth.repo.js';
export {
  API_KEY_PREFIX,
  createAuthService,
  loadSuccessorSecret,
  type ApiKeyAuthenticator,
  type AuthService,
  type LoginResult,
  type Session,
  type SessionState,
  type TokenPair,
} from './auth.service.js';
export type { MfaChallenge, SecondFactor } from './second-factor.js';
export { authRoutes, jwksRoutes } from './http.js';
export { authenticatePlugin, bearerTokenOf } from './http-authenticate.js';
export { createMemoryLoginThrottle, createSharedLoginThrottle, type LoginThrottle } from './login-throttle.js';
export { createKeySealer, isSealedBytes, keySealerFor, openBytes, sealBytes, SEALED_BYTES_PREFIX, SealedKeyError, type KeySealer } from './key-sealing.js';
export { loadSigningKeys, rotateSigningKey, type SigningKeys } from './signing-keys.js';
/** Request schemas the transports (REST, GraphQL, gRPC) validate with. */
export { ChangePasswordBody, LoginBody, LoginResultSchema, RefreshBody, SessionListQuery } from './auth.schemas.js';
