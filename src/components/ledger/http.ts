// REST adapter of the ledger: parse -> service -> map. Money-moving routes send the exact response
// the service stored with the Idempotency-Key, so that a replay is byte-for-byte the same.
import { createHash } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { validationFailed } from '../../platform/errors.js';
import {
  bearerSecurity,
  emptyBodyAsObject,
  errorResponses,
  IdParams,
  PageMeta,
  SMALL_RESPONSE,
} from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
import { errorBody, toErrorPayload } from '../../transports/http-errors.js';
import {
  AccountSchema,
  AmountBody,
  CreateAccountBody,
  CreateTransferBody,
  HistoryQuery,
  IdempotencyHeaders,
  ListAccountsQuery,
  PostPendingBody,
  TransferSchema,
  VoidPendingBody,
} from './ledger.schemas.js';
import type { LedgerService, MoneyRequestOptions, MoneyResponse, Outcome, Transfer } from './ledger.service.js';

/** JSON with object keys sorted, so that the same body always fingerprints the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function moneyOptions(request: FastifyRequest): MoneyRequestOptions {
  const key = request.headers['idempotency-key'];
  const path = request.url.split('?')[0] ?? request.url;
  const render = (outcome: Outcome<Transfer>) => {
    if (outcome.ok) return { statusCode: 201, body: JSON.stringify({ data: outcome.value }) };
    const payload = toErrorPayload(outcome.error);
    return { statusCode: payload.status, body: JSON.stringify(errorBody(payload, request.id)) };
  };
  if (typeof key !== 'string') return { render };
  // The endpoint is part of the fingerprint: the same key on another endpoint is a different request.
  const fingerprint = createHash('sha256')
    .update(`${request.method} ${path}\n${canonicalJson(request.body ?? null)}`)
    .digest();
  return { idempotency: { key, fingerprint }, render };
}

function sendMoneyResponse(reply: FastifyReply, response: MoneyResponse) {
  if (response.replayed) void reply.header('idempotent-replayed', 'true');
  return reply.code(response.statusCode).type('application/json; charset=utf-8').send(response.body);
}

const moneyResponses = {
  201: Type.Object({ data: TransferSchema }),
  ...errorResponses(400, 401, 403, 404, 409, 415, 422, 429),
};

export const ledgerRoutes: FastifyPluginAsyncTypebox<{ ledger: LedgerService }> = async (app, { ledger }) => {
  app.addHook('onRequest', app.authenticate);
  const accountTags = ['accounts'];
  const transferTags = ['transfers'];
  const AccountEnvelope = Type.Object({ data: AccountSchema });

  app.post(
    '/accounts',
    {
      schema: {
        tags: accountTags,
        summary: 'Open an account (balance 0) for the caller; admins may pass ownerId',
        security: bearerSecurity,
        body: CreateAccountBody,
        response: { 201: AccountEnvelope, ...errorResponses(400, 401, 403, 404, 415, 429) },
      },
    },
    async (request, reply) => reply.code(201).send({ data: await ledger.createAccount(principalOf(request), request.body) }),
  );

  app.get(
    '/accounts',
    {
      schema: {
        tags: accountTags,
        summary: "The caller's accounts (admins: all, ?ownerId=, ?system=true), newest first",
        security: bearerSecurity,
        querystring: ListAccountsQuery,
        response: { 200: Type.Object({ data: Type.Array(AccountSchema), meta: PageMeta }), ...errorResponses(400, 401, 403, 429) },
      },
    },
    async (request) => ledger.listAccounts(principalOf(request), request.query),
  );

  app.get(
    '/accounts/:id',
    {
      ...SMALL_RESPONSE,
      schema: {
        tags: accountTags,
        summary: 'An account (owner or admin)',
        security: bearerSecurity,
        params: IdParams,
        response: { 200: AccountEnvelope, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => ({ data: await ledger.getAccount(principalOf(request), request.params.id) }),
  );

  // Deposits and withdrawals: a movement against the currency's system account. The key is required:
  // without one, an answer lost after the commit (a dropped connection) could only be retried by
  // moving the money again.
  for (const { kind, path, summary, permission } of [
    {
      kind: 'deposit',
      path: '/accounts/:id/deposits',
      summary: "Deposit from the currency's system account (admin); Idempotency-Key required",
      permission: 'accounts:deposit',
    },
    {
      kind: 'withdrawal',
      path: '/accounts/:id/withdrawals',
      summary: "Withdraw to the currency's system account (owner or admin); Idempotency-Key required",
      permission: 'accounts:withdraw',
    },
  ] as const) {
    app.post(
      path,
      {
        preValidation: requirePermission(permission),
        schema: {
          tags: accountTags,
          summary,
          security: bearerSecurity,
          params: IdParams,
          headers: IdempotencyHeaders(true),
          body: AmountBody,
          response: moneyResponses,
        },
      },
      async (request, reply) =>
        sendMoneyResponse(
          reply,
          await ledger.move(
            principalOf(request),
            { kind, accountId: request.params.id, amount: request.body.amount },
            moneyOptions(request),
          ),
        ),
    );
  }

  app.get(
    '/accounts/:id/transfers',
    {
      schema: {
        tags: accountTags,
        summary: "An account's transfers, newest first, cursor-paginated",
        security: bearerSecurity,
        params: IdParams,
        querystring: HistoryQuery,
        response: {
          200: Type.Object({
            data: Type.Array(TransferSchema),
            meta: Type.Object({ nextCursor: Type.Union([Type.String(), Type.Null()]) }),
          }),
          ...errorResponses(400, 401, 404, 429),
        },
      },
    },
    async (request) => ledger.listAccountTransfers(principalOf(request), request.params.id, request.query),
  );

  app.post(
    '/transfers',
    {
      schema: {
        tags: transferTags,
        summary: 'Move money between accounts (Idempotency-Key required); pending: true reserves it (two-phase)',
        security: bearerSecurity,
        headers: IdempotencyHeaders(true),
        body: CreateTransferBody,
        response: moneyResponses,
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (body.timeoutSeconds !== undefined && body.pending !== true) {
        throw validationFailed([{ path: 'timeoutSeconds', message: 'requires pending: true' }]);
      }
      const response = await ledger.move(
        principalOf(request),
        {
          kind: 'transfer',
          accountId: body.fromAccountId,
          toAccountId: body.toAccountId,
          amount: body.amount,
          description: body.description ?? null,
          pending: body.pending === true,
          ...(body.timeoutSeconds !== undefined ? { timeoutSeconds: body.timeoutSeconds } : {}),
        },
        moneyOptions(request),
      );
      return sendMoneyResponse(reply, response);
    },
  );

  app.get(
    '/transfers/:id',
    {
      schema: {
        tags: transferTags,
        summary: "A transfer (either party's owner, or admin)",
        security: bearerSecurity,
        params: IdParams,
        response: { 200: Type.Object({ data: TransferSchema }), ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => ({ data: await ledger.getTransfer(principalOf(request), request.params.id) }),
  );

  app.post(
    '/transfers/:id/post',
    {
      preValidation: emptyBodyAsObject,
      schema: {
        tags: transferTags,
        summary: 'Post a pending transfer (all of it, or a smaller amount); Idempotency-Key supported',
        security: bearerSecurity,
        params: IdParams,
        headers: IdempotencyHeaders(false),
        body: PostPendingBody,
        response: moneyResponses,
      },
    },
    async (request, reply) => {
      const amount = request.body.amount;
      return sendMoneyResponse(
        reply,
        await ledger.resolvePending(
          principalOf(request),
          request.params.id,
          { kind: 'post', ...(amount !== undefined ? { amount } : {}) },
          moneyOptions(request),
        ),
      );
    },
  );

  app.post(
    '/transfers/:id/void',
    {
      preValidation: emptyBodyAsObject,
      schema: {
        tags: transferTags,
        summary: 'Void a pending transfer, releasing what it reserved; Idempotency-Key supported',
        security: bearerSecurity,
        params: IdParams,
        headers: IdempotencyHeaders(false),
        body: VoidPendingBody,
        response: moneyResponses,
      },
    },
    async (request, reply) =>
      sendMoneyResponse(
        reply,
        await ledger.resolvePending(principalOf(request), request.params.id, { kind: 'void' }, moneyOptions(request)),
      ),
  );
};
