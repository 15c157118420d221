// REST adapter of the email-flows component: parse -> service -> map. No business rules here.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { bearerSecurity, emptyBodyAsObject, errorResponses, NoBody, normalizeEmail, originOfRequest } from '../../platform/http.js';
import { principalOf } from '../access/index.js';
import { UserSchema } from '../users/index.js';
import { AcceptedEnvelope, PasswordResetBody, PasswordResetConfirmBody, VerifyEmailBody } from './email-flows.schemas.js';
import type { EmailFlowsService } from './email-flows.service.js';

export const emailFlowsRoutes: FastifyPluginAsyncTypebox<{ emailFlows: EmailFlowsService }> = async (app, { emailFlows }) => {
  const tags = ['auth'];

  app.post(
    '/auth/verify-email',
    {
      schema: {
        tags,
        summary: 'Verify the email address with the token from the verification mail',
        body: VerifyEmailBody,
        response: { 200: Type.Object({ data: UserSchema }), ...errorResponses(400, 415, 429) },
      },
    },
    async (request) => ({ data: await emailFlows.verifyEmail(request.body.token, originOfRequest(request)) }),
  );

  app.post(
    '/auth/verify-email/resend',
    {
      onRequest: app.authenticate,
      preValidation: emptyBodyAsObject,
      schema: {
        tags,
        summary: 'Mail the caller a new verification link (nothing is sent once verified)',
        security: bearerSecurity,
        body: NoBody,
        response: { 202: AcceptedEnvelope, ...errorResponses(400, 401, 403, 415, 429) },
      },
    },
    async (request, reply) => {
      await emailFlows.resendVerification(principalOf(request));
      return reply.code(202).send({ data: {} });
    },
  );

  app.post(
    '/auth/password-reset',
    {
      preValidation: normalizeEmail,
      schema: {
        tags,
        summary: 'Mail a password-reset link; the same answer whether or not the email is known',
        body: PasswordResetBody,
        response: { 202: AcceptedEnvelope, ...errorResponses(400, 415, 429) },
      },
    },
    async (request, reply) => {
      await emailFlows.requestPasswordReset(request.body.email);
      return reply.code(202).send({ data: {} });
    },
  );

  app.post(
    '/auth/password-reset/confirm',
    {
      schema: {
        tags,
        summary: 'Set a new password with the token from the reset mail; every earlier token of the user stops working',
        body: PasswordResetConfirmBody,
        response: { 204: Type.Null(), ...errorResponses(400, 415, 429, 503) },
      },
    },
    async (request, reply) => {
      await emailFlows.confirmPasswordReset(request.body.token, request.body.newPassword, originOfRequest(request));
      return reply.code(204).send(null);
    },
  );
};
