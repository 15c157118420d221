// The oidc component's public surface.
export { createOidcService, type OidcProviderSettings, type OidcService, type OidcSettings } from './oidc.service.js';
export { oidcRoutes } from './http.js';
