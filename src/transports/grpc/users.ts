// bastion.v1.UserService: parse -> the users service -> render, as components/users/http.ts does for REST.
import type { ServiceImpl } from '@connectrpc/connect';
import { authorize } from '../../components/access/index.js';
import type { AuthService } from '../../components/auth/index.js';
import { CreateUserBody, UpdateUserBody, type UsersService } from '../../components/users/index.js';
import { canonicalEmail } from '../../platform/email.js';
import { PageQuery } from '../../platform/http.js';
import { callOrigin, principalOf, untilDeadline } from './call-context.js';
import { Role, type UserService } from './gen/bastion/v1/user_service_pb.js';
import { renderPageMeta, renderUser, ROLE_NAMES } from './render.js';
import { checkerFor, checkUuid, unlessZero } from './validate.js';

const checkPage = checkerFor(PageQuery);
const checkCreate = checkerFor(CreateUserBody);
const checkUpdate = checkerFor(UpdateUserBody);

/** An optional role: unset stays unset; ROLE_UNSPECIFIED (or an unknown number) fails the schema. */
const roleField = (role: Role | undefined): Record<string, unknown> =>
  role === undefined ? {} : { role: role === Role.UNSPECIFIED ? 'unspecified' : (ROLE_NAMES[role] ?? String(role)) };

export function userServiceImpl(users: UsersService, auth: AuthService): ServiceImpl<typeof UserService> {
  return {
    async getMe(_request, context) {
      const principal = await principalOf(auth, context);
      return { user: renderUser(await untilDeadline(context, users.get(principal, principal.userId))) };
    },

    async getUser(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      return { user: renderUser(await untilDeadline(context, users.get(principal, request.id))) };
    },

    async listUsers(request, context) {
      const principal = await principalOf(auth, context);
      authorize(principal, 'users:list');
      const query: Record<string, unknown> = { ...unlessZero('page', request.page), ...unlessZero('limit', request.limit) };
      checkPage(query);
      const page = await untilDeadline(context, users.list(principal, query as { page: number; limit: number }));
      return { users: page.data.map(renderUser), meta: renderPageMeta(page.meta) };
    },

    async createUser(request, context) {
      const principal = await principalOf(auth, context);
      authorize(principal, 'users:create');
      const body = { email: canonicalEmail(request.email), name: request.name, password: request.password, ...roleField(request.role) };
      checkCreate(body);
      return { user: renderUser(await untilDeadline(context, users.create(principal, body as Parameters<UsersService['create']>[1], callOrigin(context)))) };
    },

    async updateUser(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      const patch = {
        ...(request.name !== undefined ? { name: request.name } : {}),
        ...(request.email !== undefined ? { email: canonicalEmail(request.email) } : {}),
        ...roleField(request.role),
      };
      checkUpdate(patch);
      const user = await untilDeadline(context, users.update(principal, request.id, patch as Parameters<UsersService['update']>[2], callOrigin(context)));
      return { user: renderUser(user) };
    },

    async deleteUser(request, context) {
      const principal = await principalOf(auth, context);
      authorize(principal, 'users:delete');
      checkUuid('id', request.id);
      await untilDeadline(context, users.delete(principal, request.id, callOrigin(context)));
      return {};
    },
  };
}
