// bastion.v1.AuthService: parse -> the auth (and users) service -> render, as components/auth/http.ts
// does for REST. Login passes the connection's address, so the login throttle counts gRPC and REST
// attempts from one client together.
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import { ChangePasswordBody, LoginBody, RefreshBody, SessionListQuery, type AuthService } from '../../components/auth/index.js';
import { VerifyMfaBody } from '../../components/mfa/index.js';
import { RegisterBody, type UsersService } from '../../components/users/index.js';
import { callOrigin, clientIpKey, principalOf, untilDeadline } from './call-context.js';
import type { AuthService as AuthServiceDesc } from './gen/bastion/v1/auth_service_pb.js';
import { renderLogin, renderSession, renderTokens, renderUser } from './render.js';
import { canonicalEmail } from '../../platform/email.js';
import { checkerFor, checkUuid, cursorQuery } from './validate.js';

const checkRegister = checkerFor(RegisterBody);
const checkLogin = checkerFor(LoginBody);
const checkRefresh = checkerFor(RefreshBody);
const checkVerifyMfa = checkerFor(VerifyMfaBody);
const checkSessionList = checkerFor(SessionListQuery);
const checkChangePassword = checkerFor(ChangePasswordBody);

const clientIpOf = (context: HandlerContext): string => context.values.get(clientIpKey);

export function authServiceImpl(auth: AuthService, users: UsersService): ServiceImpl<typeof AuthServiceDesc> {
  return {
    async register(request, context) {
      const body = { email: canonicalEmail(request.email), name: request.name, password: request.password };
      checkRegister(body);
      return { user: renderUser(await untilDeadline(context, users.register(body, callOrigin(context)))) };
    },

    async login(request, context) {
      const body = { email: canonicalEmail(request.email), password: request.password };
      checkLogin(body);
      return renderLogin(await untilDeadline(context, auth.login({ ...body, clientIp: clientIpOf(context) }, callOrigin(context))));
    },

    async beginLogin(request, context) {
      const body = { email: canonicalEmail(request.email), password: request.password };
      checkLogin(body);
      const step = await untilDeadline(context, auth.beginLogin({ ...body, clientIp: clientIpOf(context) }, callOrigin(context)));
      return 'mfaRequired' in step
        ? { step: { case: 'mfaChallenge' as const, value: { mfaToken: step.mfaToken, expiresIn: step.expiresIn } } }
        : { step: { case: 'login' as const, value: renderLogin(step) } };
    },

    async verifyMfa(request, context) {
      const body = { mfaToken: request.mfaToken, code: request.code };
      checkVerifyMfa(body);
      return renderLogin(await untilDeadline(context, auth.completeMfaLogin(body, callOrigin(context))));
    },

    async refresh(request, context) {
      checkRefresh({ refreshToken: request.refreshToken });
      return renderTokens(await untilDeadline(context, auth.refresh(request.refreshToken, callOrigin(context))));
    },

    async logout(request, context) {
      checkRefresh({ refreshToken: request.refreshToken });
      await untilDeadline(context, auth.logout(request.refreshToken, callOrigin(context)));
      return {};
    },

    async logoutAll(_request, context) {
      const principal = await principalOf(auth, context);
      await untilDeadline(context, auth.logoutAll(principal, callOrigin(context)));
      return {};
    },

    async listSessions(request, context) {
      const principal = await principalOf(auth, context);
      const query = cursorQuery(request);
      checkSessionList(query);
      const page = await untilDeadline(context, auth.listSessions(principal, query as Parameters<AuthService['listSessions']>[1]));
      return { sessions: page.data.map(renderSession), nextCursor: page.meta.nextCursor ?? '' };
    },

    async revokeSession(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      await untilDeadline(context, auth.revokeSession(principal, request.id, callOrigin(context)));
      return {};
    },

    async changePassword(request, context) {
      const principal = await principalOf(auth, context);
      const body = { currentPassword: request.currentPassword, newPassword: request.newPassword };
      checkChangePassword(body);
      return renderLogin(await untilDeadline(context, auth.changePassword(principal, body, callOrigin(context))));
    },
  };
}
