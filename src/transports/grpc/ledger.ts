// bastion.v1.LedgerService: parse -> the ledger service -> render, as components/ledger/http.ts does
// for REST. A money RPC's outcome is rendered the same way the first time and on a replay (the
// transfer, or the refusal as its status with the first request's id), with the response header
// `idempotent-replayed: true` on a replay. The idempotency key is the same key space as REST's
// Idempotency-Key: the ledger fingerprints the operation, not the transport.
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import type { AuthService } from '../../components/auth/index.js';
import {
  AmountBody,
  CreateAccountBody,
  CreateTransferBody,
  HistoryQuery,
  type LedgerService,
  ListAccountsQuery,
  type MoneyOutcome,
  type MoneyRequestContext,
  type MoveCommand,
  PostPendingBody,
} from '../../components/ledger/index.js';
import { authorize, type Principal } from '../../components/access/index.js';
import { callOrigin, callTraceparent, principalOf, requestIdKey, throwIfPastDeadline, untilDeadline } from './call-context.js';
import type { LedgerService as LedgerServiceDesc } from './gen/bastion/v1/ledger_service_pb.js';
import { renderAccount, renderPageMeta, renderTransfer } from './render.js';
import { amountOf, checkerFor, checkUuid, cursorQuery, refuse, unlessZero } from './validate.js';

const checkCreateAccount = checkerFor(CreateAccountBody);
const checkListAccounts = checkerFor(ListAccountsQuery);
const checkAmount = checkerFor(AmountBody);
const checkTransfer = checkerFor(CreateTransferBody);
const checkPost = checkerFor(PostPendingBody);
const checkHistory = checkerFor(HistoryQuery);

const MAX_KEY_LENGTH = 255;

/** The call's request id and idempotency key; `required`: deposits, withdrawals, transfers (as REST). */
function moneyContext(context: HandlerContext, key: string, required: boolean): MoneyRequestContext {
  if (key === '' && required) refuse([{ path: 'idempotency_key', message: 'is required' }]);
  if (key.length > MAX_KEY_LENGTH) refuse([{ path: 'idempotency_key', message: `must NOT have more than ${MAX_KEY_LENGTH} characters` }]);
  return {
    requestId: context.values.get(requestIdKey),
    traceparent: callTraceparent(context),
    ...(key !== '' ? { idempotencyKey: key } : {}),
  };
}

/**
 * Runs a money operation unless the call's deadline already passed (a call the client gave up on
 * must not move money), then renders its outcome. Once started it runs to its commit: a client
 * that times out meanwhile retries with the same key and gets the outcome replayed.
 */
async function moneyCall(context: HandlerContext, run: () => Promise<MoneyOutcome>) {
  throwIfPastDeadline(context);
  const outcome = await untilDeadline(context, run());
  if (outcome.replayed) context.responseHeader.set('idempotent-replayed', 'true');
  if (!outcome.ok) throw outcome.error;
  return { transfer: renderTransfer(outcome.transfer) };
}

export function ledgerServiceImpl(ledger: LedgerService, auth: AuthService): ServiceImpl<typeof LedgerServiceDesc> {
  const accountMove = async (
    kind: 'deposit' | 'withdrawal',
    request: { accountId: string; amount: bigint; idempotencyKey: string },
    context: HandlerContext,
  ) => {
    const principal: Principal = await principalOf(auth, context);
    authorize(principal, kind === 'deposit' ? 'accounts:deposit' : 'accounts:withdraw');
    checkUuid('account_id', request.accountId);
    const amount = amountOf(request.amount);
    checkAmount({ amount });
    const money = moneyContext(context, request.idempotencyKey, true);
    return moneyCall(context, () => ledger.move(principal, { kind, accountId: request.accountId, amount }, money));
  };

  return {
    async createAccount(request, context) {
      const principal = await principalOf(auth, context);
      const input = {
        currency: request.currency,
        ...(request.name !== undefined ? { name: request.name } : {}),
        ...(request.ownerId !== undefined ? { ownerId: request.ownerId } : {}),
      };
      checkCreateAccount(input);
      return { account: renderAccount(await untilDeadline(context, ledger.createAccount(principal, input, callOrigin(context)))) };
    },

    async getAccount(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      return { account: renderAccount(await untilDeadline(context, ledger.getAccount(principal, request.id))) };
    },

    async listAccounts(request, context) {
      const principal = await principalOf(auth, context);
      const query: Record<string, unknown> = {
        ...unlessZero('page', request.page),
        ...unlessZero('limit', request.limit),
        ...(request.ownerId !== undefined ? { ownerId: request.ownerId } : {}),
        ...(request.system !== undefined ? { system: request.system } : {}),
      };
      checkListAccounts(query);
      const page = await untilDeadline(context, ledger.listAccounts(principal, query as Parameters<LedgerService['listAccounts']>[1]));
      return { accounts: page.data.map(renderAccount), meta: renderPageMeta(page.meta) };
    },

    deposit: (request, context) => accountMove('deposit', request, context),
    withdraw: (request, context) => accountMove('withdrawal', request, context),

    async createTransfer(request, context) {
      const principal = await principalOf(auth, context);
      // As REST's body: optional fields only when given (proto3's false/unset are "not given"), so the
      // operation fingerprints the same through either transport.
      const body = {
        fromAccountId: request.fromAccountId,
        toAccountId: request.toAccountId,
        amount: amountOf(request.amount),
        ...(request.description !== undefined ? { description: request.description } : {}),
        ...(request.pending ? { pending: true } : {}),
        ...(request.timeoutSeconds !== undefined ? { timeoutSeconds: request.timeoutSeconds } : {}),
      };
      checkTransfer(body);
      const money = moneyContext(context, request.idempotencyKey, true);
      const { fromAccountId, ...rest } = body;
      const command: MoveCommand = { kind: 'transfer', accountId: fromAccountId, ...rest };
      return moneyCall(context, () => ledger.move(principal, command, money));
    },

    async getTransfer(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      return { transfer: renderTransfer(await untilDeadline(context, ledger.getTransfer(principal, request.id))) };
    },

    async postTransfer(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      const body = request.amount !== undefined ? { amount: amountOf(request.amount) } : {};
      checkPost(body);
      const money = moneyContext(context, request.idempotencyKey, false);
      return moneyCall(context, () => ledger.resolvePending(principal, request.id, { kind: 'post', ...body }, money));
    },

    async voidTransfer(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('id', request.id);
      const money = moneyContext(context, request.idempotencyKey, false);
      return moneyCall(context, () => ledger.resolvePending(principal, request.id, { kind: 'void' }, money));
    },

    async listAccountTransfers(request, context) {
      const principal = await principalOf(auth, context);
      checkUuid('account_id', request.accountId);
      const query = cursorQuery(request);
      checkHistory(query);
      const page = await untilDeadline(
        context,
        ledger.listAccountTransfers(principal, request.accountId, query as Parameters<LedgerService['listAccountTransfers']>[2]),
      );
      return { transfers: page.data.map(renderTransfer), nextCursor: page.meta.nextCursor ?? '' };
    },
  };
}
