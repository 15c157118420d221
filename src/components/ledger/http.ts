// REST adapter of the ledger: parse -> service -> render. A money operation's outcome is rendered
// here the same way the first time and on an idempotent replay: 201 with the transfer through the
// response schema, or the refusal thrown to the transport's error mapper (which reports the first
// request's id on a replay), so a replay is byte-for-byte the first answer.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import {
  bearerSecurity,
  emptyBodyAsObject,
  errorResponses,
  IdParams,
  PageMeta,
  SMALL_RESPONSE,
} from '../../platform/http.js';
import { principalOf, requirePermission } from '../access/index.js';
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
import type { LedgerService, MoneyOutcome, MoneyRequestContext } from './ledger.service.js';
import { traceparentOf } from '../../platform/trace-context.js';
import { originOfRequest } from '../../platform/http.js';

function moneyContext(request: FastifyRequest): MoneyRequestContext {
  const key = request.headers['idempotency-key'];
  return {
    requestId: request.id,
    traceparent: traceparentOf(request.headers.traceparent),
    ...(typeof key === 'string' ? { idempotencyKey: key } : {}),
  };
}

function sendMoneyOutcome(reply: FastifyReply, outcome: MoneyOutcome) {
  if (outcome.replayed) void reply.header('idempotent-replayed', 'true');
  if (!outcome.ok) throw outcome.error;
  return reply.code(201).send({ data: outcome.transfer });
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
    async (request, reply) => reply.code(201).send({ data: await ledger.createAccount(principalOf(request), request.body, originOfRequest(request)) }),
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
        sendMoneyOutcome(
          reply,
          await ledger.move(
            principalOf(request),
            { kind, accountId: request.params.id, amount: request.body.amount },
            moneyContext(request),
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
      const { fromAccountId, ...rest } = request.body;
      return sendMoneyOutcome(
        reply,
        await ledger.move(principalOf(request), { kind: 'transfer', accountId: fromAccountId, ...rest }, moneyContext(request)),
      );
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
      return sendMoneyOutcome(
        reply,
        await ledger.resolvePending(
          principalOf(request),
          request.params.id,
          { kind: 'post', ...(amount !== undefined ? { amount } : {}) },
          moneyContext(request),
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
      sendMoneyOutcome(
        reply,
        await ledger.resolvePending(principalOf(request), request.params.id, { kind: 'void' }, moneyContext(request)),
      ),
  );
};
