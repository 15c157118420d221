// Request and response schemas of the api-keys component.
import { Type, type Static } from 'typebox';
import { StoredText } from '../../platform/http.js';
import { API_KEY_SCOPES } from '../access/index.js';

const Scopes = Type.Array(Type.Enum([...API_KEY_SCOPES]), {
  minItems: 1,
  maxItems: API_KEY_SCOPES.length,
  uniqueItems: true,
  description: `Some of ${API_KEY_SCOPES.join(', ')}, each at most once; a subset of what the owner's role allows`,
});

export const CreateApiKeyBody = Type.Object(
  {
    name: StoredText({ minLength: 1, maxLength: 100 }),
    scopes: Scopes,
    expiresAt: Type.Optional(Type.String({ format: 'date-time', description: 'ISO 8601, in the future, at most 366 days ahead; absent: never expires' })),
    ownerId: Type.Optional(Type.String({ format: 'uuid', description: 'Admins only: the user the key acts as' })),
  },
  { additionalProperties: false },
);
export type CreateApiKeyBody = Static<typeof CreateApiKeyBody>;

export const ApiKeyListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    ownerId: Type.Optional(Type.String({ format: 'uuid', description: "Admins only: that user's keys" })),
  },
  { additionalProperties: false },
);
export type ApiKeyListQuery = Static<typeof ApiKeyListQuery>;

export const ApiKeySchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  prefix: Type.String({ description: 'The first characters of the secret (bsk_ and 8 more), to tell keys apart' }),
  scopes: Type.Array(Type.Enum([...API_KEY_SCOPES])),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  lastUsedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'At most a minute stale' }),
});

/** The key with its secret: only the answer to its creation. */
export const ApiKeyWithSecretSchema = Type.Object({
  ...ApiKeySchema.properties,
  secret: Type.String({ description: 'bsk_ + 43 characters: shown only in this answer; send it as Authorization: Bearer <secret>' }),
});
