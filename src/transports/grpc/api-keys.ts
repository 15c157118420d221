// bastion.v1.ApiKeyService: parse -> the api-keys service -> render, as components/api-keys/http.ts
// does for REST (the same schemas, so the same rules on names, scopes and expiry).
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { ServiceImpl } from '@connectrpc/connect';
import { ApiKeyListQuery, CreateApiKeyBody, type ApiKeysService, type CreateApiKeyInput } from '../../components/api-keys/index.js';
import type { AuthService } from '../../components/auth/index.js';
import { callOrigin, principalOf, untilDeadline } from './call-context.js';
import type { ApiKeyService as ApiKeyServiceDesc } from './gen/bastion/v1/api_key_service_pb.js';
import { renderApiKey } from './render.js';
import { checkerFor, checkUuid, cursorQuery } from './validate.js';

const checkCreate = checkerFor(CreateApiKeyBody);
const checkList = checkerFor(ApiKeyListQuery);

export function apiKeyServiceImpl(apiKeys: ApiKeysService, auth: AuthService): ServiceImpl<typeof ApiKeyServiceDesc> {
  return {
    async createApiKey(request, context) {
      const principal = await principalOf(auth, context);
      const body: Record<string, unknown> = {
        name: request.name,
        scopes: [...request.scopes],
        ...(request.expiresAt ? { expiresAt: timestampDate(request.expiresAt).toISOString() } : {}),
        ...(request.ownerId !== undefined ? { ownerId: request.ownerId } : {}),
      };
      checkCreate(body);
      const created = await untilDeadline(context, apiKeys.create(principal, body as unknown as CreateApiKeyInput, callOrigin(context)));
      return { apiKey: renderApiKey(created), secret: created.secret };
    },

    async listApiKeys(request, context) {
      const principal = await principalOf(auth, context);
      const query = { ...cursorQuery(request), ...(request.ownerId !== undefined ? { ownerId: request.ownerId } : {}) };
      checkList(query);
      const page = await untilDeadline(context, apiKeys.list(principal, query as Parameters<ApiKeysService['list']>[1]));
      return { apiKeys: page.data.map(renderApiKey), nextCursor: page.meta.nextCursor ?? '' };
    },

    async revokeApiKey(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      await untilDeadline(context, apiKeys.revoke(principal, request.id, callOrigin(context)));
      return {};
    },
  };
}
