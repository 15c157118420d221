// The api-keys component's public surface.
export {
  API_KEY_SECRET_PREFIX,
  createApiKeysService,
  USAGE_FLUSH_INTERVAL_MS,
  type ApiKey,
  type ApiKeyState,
  type ApiKeysService,
  type ApiKeyWithSecret,
  type CreateApiKeyInput,
} from './api-keys.service.js';
export { apiKeysRoutes } from './http.js';
/** Schemas the transports validate with. */
export { ApiKeyListQuery, CreateApiKeyBody } from './api-keys.schemas.js';
