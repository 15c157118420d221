// REST adapter of the mfa component: parse -> service -> map.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { principalOf, requireSession } from '../access/index.js';
import { LoginResultSchema } from '../auth/index.js';
import type { AuthService } from '../auth/index.js';
import { bearerSecurity, emptyBodyAsObject, errorResponses, NoBody, originOfRequest } from '../../platform/http.js';
import { DomainError } from '../../platform/errors.js';
import { ConfirmTotpBody, DisableTotpBody, RecoveryCodesSchema, TotpEnrolmentSchema, VerifyMfaBody } from './mfa.schemas.js';
import type { MfaService } from './mfa.service.js';

/**
 * A wrong code where the caller is already logged in (confirm, disable) is a bad request (400), not
 * a failed authentication: the error mapper gives INVALID_MFA_CODE the login's 401, so these routes
 * answer it themselves, in the contract's error shape.
 */
async function wrongCodeIsBadRequest<T>(request: FastifyRequest, reply: FastifyReply, work: () => Promise<T>): Promise<T | FastifyReply> {
  try {
    return await work();
  } catch (error) {
    if (!(error instanceof DomainError) || error.code !== 'INVALID_MFA_CODE') throw error;
    return reply.code(400).send({ error: { code: error.code, message: error.message, requestId: request.id } });
  }
}

/** preValidation: credential operations are for a login, never an API key (403 before the body is read). */
async function loginOnly(request: FastifyRequest): Promise<void> {
  requireSession(principalOf(request));
}

export const mfaRoutes: FastifyPluginAsyncTypebox<{ mfa: MfaService; auth: AuthService }> = async (app, { mfa, auth }) => {
  const tags = ['mfa'];

  app.post(
    '/auth/mfa/totp',
    {
      onRequest: app.authenticate,
      preValidation: [loginOnly, emptyBodyAsObject],
      schema: {
        tags,
        summary: 'Start TOTP enrolment: a new secret, active once confirmed (replaces a pending one)',
        security: bearerSecurity,
        body: NoBody,
        response: { 201: Type.Object({ data: TotpEnrolmentSchema }), ...errorResponses(400, 401, 403, 409, 415, 429) },
      },
    },
    async (request, reply) => {
      const data = await mfa.enrolTotp(principalOf(request), originOfRequest(request));
      return reply.code(201).header('cache-control', 'no-store').send({ data });
    },
  );

  app.post(
    '/auth/mfa/totp/confirm',
    {
      onRequest: app.authenticate,
      preValidation: loginOnly,
      schema: {
        tags,
        summary: 'Activate TOTP with a current code; returns the recovery codes, once',
        security: bearerSecurity,
        body: ConfirmTotpBody,
        response: { 200: Type.Object({ data: RecoveryCodesSchema }), ...errorResponses(400, 401, 403, 404, 409, 415, 429) },
      },
    },
    async (request, reply) =>
      wrongCodeIsBadRequest(request, reply, async () => {
        const data = await mfa.confirmTotp(principalOf(request), request.body.code, originOfRequest(request));
        void reply.header('cache-control', 'no-store');
        return { data };
      }),
  );

  app.delete(
    '/auth/mfa/totp',
    {
      onRequest: app.authenticate,
      preValidation: loginOnly,
      schema: {
        tags,
        summary: 'Disable TOTP (or cancel a pending enrolment) with a current code or the password',
        security: bearerSecurity,
        body: DisableTotpBody,
        response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 415, 429, 503) },
      },
    },
    async (request, reply) =>
      wrongCodeIsBadRequest(request, reply, async () => {
        await mfa.disableTotp(principalOf(request), request.body, originOfRequest(request));
        return reply.code(204).send(null);
      }),
  );

  app.post(
    '/auth/mfa/verify',
    {
      schema: {
        tags,
        summary: "A login's second step: the mfaToken from login and a TOTP or recovery code",
        body: VerifyMfaBody,
        response: { 200: Type.Object({ data: LoginResultSchema }), ...errorResponses(400, 401, 415, 429, 503) },
      },
    },
    async (request) => ({ data: await auth.completeMfaLogin(request.body, originOfRequest(request)) }),
  );
};
