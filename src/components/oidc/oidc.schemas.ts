// Request schemas of the oidc component's routes.
import { Type } from 'typebox';

export const ProviderParams = Type.Object(
  { provider: Type.String({ pattern: '^[a-z0-9-]{1,64}$', description: 'A provider name from OIDC_PROVIDERS' }) },
  { additionalProperties: false },
);

export const AuthorizeQuery = Type.Object(
  {
    redirect_uri: Type.String({ minLength: 1, maxLength: 2048, description: 'One of OIDC_REDIRECT_URIS, exactly' }),
  },
  { additionalProperties: false },
);

// The provider writes this query, not our client: providers add parameters of their own (Google's
// authuser, hd, prompt; session_state), which must not turn a good login into a 400.
export const CallbackQuery = Type.Object(
  {
    state: Type.String({ minLength: 1, maxLength: 512 }),
    code: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    iss: Type.Optional(Type.String({ maxLength: 2048 })),
    error: Type.Optional(Type.String({ maxLength: 256 })),
    error_description: Type.Optional(Type.String({ maxLength: 2048 })),
  },
  { additionalProperties: true },
);
