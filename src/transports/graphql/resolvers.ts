// The GraphQL adapter's resolvers: parse the arguments (with the same schemas as REST, so the same
// values are refused with the same field errors) -> call the service REST calls -> return its value.
// No business rule here; authorization is in the services, as for every transport.
import { GraphQLError } from 'graphql';
import type { TSchema } from 'typebox';
import { authorize, type Principal } from '../../components/access/index.js';
import { ApiKeyListQuery, CreateApiKeyBody, type ApiKeysService, type CreateApiKeyInput } from '../../components/api-keys/index.js';
import { ChangePasswordBody, LoginBody, RefreshBody, SessionListQuery, type AuthService } from '../../components/auth/index.js';
import {
  type Account,
  AmountBody,
  CreateAccountBody,
  CreateTransferBody,
  HistoryQuery,
  IdempotencyHeaders,
  type LedgerService,
  ListAccountsQuery,
  type MoneyOutcome,
  type MoneyRequestContext,
  PostPendingBody,
  type Transfer,
} from '../../components/ledger/index.js';
import { VerifyMfaBody } from '../../components/mfa/index.js';
import { CreateUserBody, RegisterBody, UpdateUserBody, type UsersService } from '../../components/users/index.js';
import { canonicalEmail } from '../../platform/email.js';
import { IdParams, PageQuery } from '../../platform/http.js';
import type { Logger } from '../../platform/logger.js';
import type { RequestOrigin } from '../../platform/request-origin.js';
import { traceparentOf } from '../../platform/trace-context.js';
import { inputValidator } from '../http/validation.js';
import { socketError } from './errors.js';
import type { Loaders } from './loaders.js';
import { eventValue, MAX_SUBSCRIPTIONS_PER_CONNECTION, type LiveConnection, type LiveEvent, type LiveSource } from './subscriptions.js';
import { BigIntScalar, DateTimeScalar, SafeIntScalar } from './schema.js';

/** What every resolver gets: the request's identity, its caller (resolved on first use) and loaders. */
export type GraphqlContext = {
  readonly requestId: string;
  readonly clientIp: string;
  /** The request's `traceparent` header as sent (the events of its changes carry it, or a new trace). */
  readonly traceparentHeader?: string | undefined;
  /** What sessions, audit records and events note of the request, as REST's originOfRequest. */
  readonly origin: RequestOrigin;
  /** The bearer token's principal; rejects UNAUTHENTICATED without a valid one. */
  readonly principal: () => Promise<Principal>;
  readonly loaders: Loaders;
};

/** A subscription's context: the connection's caller (authenticated afresh on each use) and Mercurius' pubsub. */
export type SubscriptionContext = GraphqlContext & {
  readonly connection: LiveConnection;
  readonly pubsub: { subscribe(topic: string, source: LiveSource<Transfer>): Promise<AsyncIterable<unknown>> };
};

interface Services {
  readonly users: UsersService;
  readonly auth: AuthService;
  readonly ledger: LedgerService;
  readonly apiKeys: ApiKeysService;
}

type Args = Readonly<Record<string, unknown>>;
type Resolver<Parent = unknown> = (parent: Parent, args: Args, context: GraphqlContext) => unknown;

// Arguments are parsed exactly like REST bodies: no coercion, unknown fields refused.
const validator = <S extends TSchema>(schema: S, rename?: Readonly<Record<string, string>>) => inputValidator(schema, 'input', rename);

/** GraphQL's explicit null for an optional argument means "not given", as an absent JSON field. */
function present(value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== 'object') return {};
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).filter(([, item]) => item !== null && item !== undefined));
}

const normalizeEmail = (input: Record<string, unknown>): Record<string, unknown> =>
  typeof input['email'] === 'string' ? { ...input, email: canonicalEmail(input['email']) } : input;

const parseId = validator(IdParams);
const parseIdAs = (name: string) => validator(IdParams, { id: name });
const parseAccountId = parseIdAs('accountId');
const parsePage = validator(PageQuery);
const parseRegister = validator(RegisterBody);
const parseLogin = validator(LoginBody);
const parseRefresh = validator(RefreshBody);
const parseVerifyMfa = validator(VerifyMfaBody);
const parseSessionList = validator(SessionListQuery, { limit: 'first', cursor: 'after' });
const parseApiKeyList = validator(ApiKeyListQuery, { limit: 'first', cursor: 'after' });
const parseCreateApiKey = validator(CreateApiKeyBody);
const parseUpdateUser = validator(UpdateUserBody);
const parseCreateUser = validator(CreateUserBody);
const parseChangePassword = validator(ChangePasswordBody);
const parseCreateAccount = validator(CreateAccountBody);
const parseListAccounts = validator(ListAccountsQuery);
const parseAmount = validator(AmountBody);
const parseTransfer = validator(CreateTransferBody);
const parsePost = validator(PostPendingBody);
const parseHistory = validator(HistoryQuery, { limit: 'first', cursor: 'after' });
const parseRequiredKey = validator(IdempotencyHeaders(true), { 'idempotency-key': 'idempotencyKey' });
const parseOptionalKey = validator(IdempotencyHeaders(false), { 'idempotency-key': 'idempotencyKey' });

function moneyContext(context: GraphqlContext, key: unknown, required: boolean): MoneyRequestContext {
  const given = present({ 'idempotency-key': key });
  const parsed = required ? parseRequiredKey(given) : parseOptionalKey(given);
  const idempotencyKey = parsed['idempotency-key'];
  return {
    requestId: context.requestId,
    traceparent: traceparentOf(context.traceparentHeader),
    ...(typeof idempotencyKey === 'string' ? { idempotencyKey } : {}),
  };
}

/** A kept refusal is rendered like a thrown one (its error names the first request on a replay). */
function render(outcome: MoneyOutcome) {
  if (!outcome.ok) throw outcome.error;
  return { transfer: outcome.transfer, replayed: outcome.replayed, requestId: outcome.requestId };
}

/** A cursor-paginated list as a page: its nodes and where the next page starts. */
const pageOf = <T>(list: { data: T[]; meta: { nextCursor: string | null } }) => ({
  nodes: list.data,
  pageInfo: { hasNextPage: list.meta.nextCursor !== null, endCursor: list.meta.nextCursor },
});

/**
 * An edge's cursor: the ledger's history cursor of that transfer (its position: createdAt and id),
 * the form listAccountTransfers issues as nextCursor and accepts back as `cursor`.
 */
const cursorOf = (transfer: Transfer): string => Buffer.from(`${transfer.createdAt}|${transfer.id}`).toString('base64url');

/** `logger`: an unexpected failure refusing a subscription is logged, as the error formatter logs one over HTTP. */
export function createResolvers({ users, auth, ledger, apiKeys }: Services, logger: Logger) {
  const Query: Record<string, Resolver> = {
    me: async (_parent, _args, context) => {
      const principal = await context.principal();
      return users.get(principal, principal.userId);
    },
    user: async (_parent, args, context) => {
      const principal = await context.principal();
      return users.get(principal, parseId(present(args)).id);
    },
    users: async (_parent, args, context) => {
      const principal = await context.principal();
      authorize(principal, 'users:list');
      const page = await users.list(principal, parsePage(present(args)));
      return { nodes: page.data, pageInfo: page.meta };
    },
    account: async (_parent, args, context) => {
      const principal = await context.principal();
      return ledger.getAccount(principal, parseId(present(args)).id);
    },
    accounts: async (_parent, args, context) => {
      const principal = await context.principal();
      const page = await ledger.listAccounts(principal, parseListAccounts(present(args)));
      return { nodes: page.data, pageInfo: page.meta };
    },
    transfer: async (_parent, args, context) => {
      const principal = await context.principal();
      return ledger.getTransfer(principal, parseId(present(args)).id);
    },
    sessions: async (_parent, args, context) => {
      const principal = await context.principal();
      const { first, after } = present(args);
      const query = parseSessionList(present({ limit: first, cursor: after }));
      return pageOf(await auth.listSessions(principal, query as Parameters<AuthService['listSessions']>[1]));
    },
    apiKeys: async (_parent, args, context) => {
      const principal = await context.principal();
      const { first, after, ownerId } = present(args);
      const query = parseApiKeyList(present({ limit: first, cursor: after, ownerId }));
      return pageOf(await apiKeys.list(principal, query as Parameters<ApiKeysService['list']>[1]));
    },
    accountTransfers: async (_parent, args, context) => {
      const principal = await context.principal();
      const { accountId, first, after } = present(args);
      const { id } = parseAccountId(present({ id: accountId }));
      const history = await ledger.listAccountTransfers(principal, id, parseHistory(present({ limit: first, cursor: after })));
      const edges = history.data.map((node) => ({ cursor: cursorOf(node), node }));
      return {
        edges,
        pageInfo: { hasNextPage: history.meta.nextCursor !== null, endCursor: history.meta.nextCursor ?? edges.at(-1)?.cursor ?? null },
      };
    },
  };

  const Mutation: Record<string, Resolver> = {
    register: async (_parent, args, context) => users.register(parseRegister(normalizeEmail(present(args['input']))), context.origin),
    login: async (_parent, args, context) =>
      auth.login({ ...parseLogin(normalizeEmail(present(args['input']))), clientIp: context.clientIp }, context.origin),
    beginLogin: async (_parent, args, context) =>
      auth.beginLogin({ ...parseLogin(normalizeEmail(present(args['input']))), clientIp: context.clientIp }, context.origin),
    verifyMfa: async (_parent, args, context) => auth.completeMfaLogin(parseVerifyMfa(present(args['input'])), context.origin),
    revokeSession: async (_parent, args, context) => {
      const principal = await context.principal();
      await auth.revokeSession(principal, parseId(present(args)).id, context.origin);
      return true;
    },
    createApiKey: async (_parent, args, context) => {
      const principal = await context.principal();
      const input = parseCreateApiKey(present(args['input'])) as unknown as CreateApiKeyInput;
      const { secret, ...apiKey } = await apiKeys.create(principal, input, context.origin);
      return { apiKey, secret };
    },
    revokeApiKey: async (_parent, args, context) => {
      const principal = await context.principal();
      await apiKeys.revoke(principal, parseId(present(args)).id, context.origin);
      return true;
    },
    refresh: async (_parent, args, context) => auth.refresh(parseRefresh(present(args)).refreshToken, context.origin),
    logout: async (_parent, args, context) => {
      await auth.logout(parseRefresh(present(args)).refreshToken, context.origin);
      return true;
    },
    logoutAll: async (_parent, _args, context) => {
      await auth.logoutAll(await context.principal(), context.origin);
      return true;
    },
    changePassword: async (_parent, args, context) => {
      const principal = await context.principal();
      return auth.changePassword(principal, parseChangePassword(present(args['input'])), context.origin);
    },
    createUser: async (_parent, args, context) => {
      const principal = await context.principal();
      authorize(principal, 'users:create');
      return users.create(principal, parseCreateUser(normalizeEmail(present(args['input']))), context.origin);
    },
    updateUser: async (_parent, args, context) => {
      const principal = await context.principal();
      const { id } = parseId(present({ id: args['id'] }));
      return users.update(principal, id, parseUpdateUser(normalizeEmail(present(args['input']))), context.origin);
    },
    deleteUser: async (_parent, args, context) => {
      const principal = await context.principal();
      authorize(principal, 'users:delete');
      await users.delete(principal, parseId(present(args)).id, context.origin);
      return true;
    },
    createAccount: async (_parent, args, context) => {
      const principal = await context.principal();
      return ledger.createAccount(principal, parseCreateAccount(present(args['input'])), context.origin);
    },
    deposit: async (_parent, args, context) => {
      const principal = await context.principal();
      authorize(principal, 'accounts:deposit');
      const { id } = parseAccountId(present({ id: args['accountId'] }));
      const { amount } = parseAmount(present({ amount: args['amount'] }));
      const money = moneyContext(context, args['idempotencyKey'], true);
      return render(await ledger.move(principal, { kind: 'deposit', accountId: id, amount }, money));
    },
    withdraw: async (_parent, args, context) => {
      const principal = await context.principal();
      authorize(principal, 'accounts:withdraw');
      const { id } = parseAccountId(present({ id: args['accountId'] }));
      const { amount } = parseAmount(present({ amount: args['amount'] }));
      const money = moneyContext(context, args['idempotencyKey'], true);
      return render(await ledger.move(principal, { kind: 'withdrawal', accountId: id, amount }, money));
    },
    transfer: async (_parent, args, context) => {
      const principal = await context.principal();
      const money = moneyContext(context, args['idempotencyKey'], true);
      const { fromAccountId, ...rest } = parseTransfer(present(args['input']));
      return render(await ledger.move(principal, { kind: 'transfer', accountId: fromAccountId, ...rest }, money));
    },
    postTransfer: async (_parent, args, context) => {
      const principal = await context.principal();
      const { id } = parseId(present({ id: args['id'] }));
      const { amount } = parsePost(present({ amount: args['amount'] }));
      const money = moneyContext(context, args['idempotencyKey'], false);
      return render(await ledger.resolvePending(principal, id, { kind: 'post', ...(amount !== undefined ? { amount } : {}) }, money));
    },
    voidTransfer: async (_parent, args, context) => {
      const principal = await context.principal();
      const { id } = parseId(present({ id: args['id'] }));
      const money = moneyContext(context, args['idempotencyKey'], false);
      return render(await ledger.resolvePending(principal, id, { kind: 'void' }, money));
    },
  };

  const Subscription = {
    transferPosted: {
      subscribe: async (_parent: unknown, args: Args, context: SubscriptionContext) => {
        try {
          const { id } = parseAccountId(present({ id: args['accountId'] }));
          const source: LiveSource<Transfer> = async (sink) => {
            const held = context.connection.subscriptions;
            if (held.count >= MAX_SUBSCRIPTIONS_PER_CONNECTION) {
              throw new GraphQLError(`A connection may hold at most ${MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions`, {
                extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' },
              });
            }
            held.count++;
            let released = false;
            const release = () => {
              if (released) return;
              released = true;
              held.count--;
            };
            try {
              const stop = await ledger.watchPostedTransfers(context.principal, id, sink);
              return () => {
                release();
                stop();
              };
            } catch (error) {
              release();
              throw error;
            }
          };
          return await context.pubsub.subscribe('transferPosted', source);
        } catch (error) {
          throw socketError(error, context.requestId, logger);
        }
      },
      resolve: (event: LiveEvent<Transfer>) => eventValue(event),
    },
  };

  const AccountType: Record<string, Resolver<Account>> = {
    owner: (account, _args, context) => (account.ownerId === null ? null : context.loaders.user.load(account.ownerId)),
  };
  const TransferType: Record<string, Resolver<Transfer>> = {
    fromAccount: (transfer, _args, context) => context.loaders.account.load(transfer.fromAccountId),
    toAccount: (transfer, _args, context) => context.loaders.account.load(transfer.toAccountId),
  };

  return {
    SafeInt: SafeIntScalar,
    BigInt: BigIntScalar,
    DateTime: DateTimeScalar,
    Query,
    Mutation,
    Subscription,
    Account: AccountType,
    Transfer: TransferType,
    LoginStep: { resolveType: (step: object) => ('mfaRequired' in step ? 'MfaChallenge' : 'LoginResult') },
  };
}
