// One driver per protocol for the conformance matrix: the same domain operations called through REST
// (/api/v1), GraphQL (/graphql) and gRPC (@grpc/grpc-js with stubs from the committed .proto files, an
// independent client), each answer normalized to one shape, so a scenario asserts one domain outcome
// whatever the protocol. A refusal keeps the protocol's own status (the HTTP status for REST,
// extensions.status for GraphQL, the status code's name for gRPC) for the matrix to check against the
// mapping each transport documents. Nothing is mocked: every call is a real request.
import assert from 'node:assert/strict';
import type { Client } from '../helpers/client.js';
import type { User } from '../helpers/users.js';
import { gql, type GraphqlBody } from '../graphql/gql.js';
import { createGrpcJsClient, grpc, type CallError, type UnaryResult } from '../grpc/grpc-js-client.js';

export type ProtocolName = 'REST' | 'GraphQL' | 'gRPC';
export const PROTOCOLS: readonly ProtocolName[] = ['REST', 'GraphQL', 'gRPC'];

/** A gRPC status code by name (grpc.status' keys: 'NOT_FOUND', 'RESOURCE_EXHAUSTED', …). */
export type GrpcStatusName = keyof typeof grpc.status;

export interface Refusal {
  readonly ok: false;
  /** The domain code (REST error.code, GraphQL extensions.code, gRPC bastion-error-code trailer). */
  readonly code: string;
  /** The protocol's status: HTTP status (REST), extensions.status (GraphQL), status code name (gRPC). */
  readonly status: number | GrpcStatusName;
  /** The retry hint, where the protocol carries one (Retry-After, extensions.retryAfterSeconds, retry-after trailer). */
  readonly retryAfterSeconds?: number;
}
export type Outcome<T> = { readonly ok: true; readonly value: T } | Refusal;

export interface UserView {
  readonly id: string;
  readonly email: string;
  readonly name: string;
  readonly role: 'user' | 'admin';
  readonly emailVerified: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
}
export interface TokensView {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly tokenType: string;
  readonly expiresIn: number;
}
export interface LoginView extends TokensView {
  readonly user: UserView;
}
/** A login's first step: the tokens, or a second-factor challenge. */
export type LoginStepView =
  | { readonly kind: 'tokens'; readonly login: LoginView }
  | { readonly kind: 'challenge'; readonly mfaToken: string; readonly expiresIn: number };
export interface SessionView {
  readonly id: string;
  readonly current: boolean;
  readonly userAgent: string | null;
  readonly ip: string | null;
}
export interface ApiKeyView {
  readonly id: string;
  readonly name: string;
  readonly prefix: string;
  readonly scopes: readonly string[];
  readonly expiresAt: string | null;
}
export interface AccountView {
  readonly id: string;
  readonly ownerId: string | null;
  readonly currency: string;
  /** Minor units as a decimal string (REST: a JSON number, GraphQL: BigInt, gRPC: int64). */
  readonly balance: string;
  readonly availableBalance: string;
}
export type TransferStatus = 'posted' | 'pending' | 'voided' | 'expired';
export interface TransferView {
  readonly id: string;
  readonly fromAccountId: string;
  readonly toAccountId: string;
  readonly amount: string;
  readonly currency: string;
  readonly status: TransferStatus;
  readonly description: string | null;
}
/** A money operation's answer: the transfer, and whether it is an idempotent replay. */
export interface MoneyView {
  readonly transfer: TransferView;
  readonly replayed: boolean;
}
export interface TransferInput {
  readonly fromAccountId: string;
  readonly toAccountId: string;
  readonly amount: number;
  readonly description?: string;
}

export interface ProtocolDriver {
  readonly name: ProtocolName;
  register(input: { email: string; name: string; password: string }): Promise<Outcome<UserView>>;
  login(email: string, password: string): Promise<Outcome<LoginView>>;
  /** A login for any user: REST's POST /auth/login, GraphQL beginLogin, gRPC BeginLogin. */
  beginLogin(email: string, password: string): Promise<Outcome<LoginStepView>>;
  /** The second step: REST's POST /auth/mfa/verify, GraphQL verifyMfa, gRPC VerifyMfa. */
  verifyMfa(mfaToken: string, code: string): Promise<Outcome<LoginView>>;
  refresh(refreshToken: string): Promise<Outcome<TokensView>>;
  /** The caller's sessions, newest first (the first page of 100). */
  listSessions(token: string): Promise<Outcome<SessionView[]>>;
  revokeSession(token: string, id: string): Promise<Outcome<true>>;
  /** A new key and its secret. */
  createApiKey(token: string, input: { name: string; scopes: string[] }): Promise<Outcome<{ apiKey: ApiKeyView; secret: string }>>;
  /** The caller's keys, newest first (the first page of 100). */
  listApiKeys(token: string): Promise<Outcome<ApiKeyView[]>>;
  revokeApiKey(token: string, id: string): Promise<Outcome<true>>;
  /** The caller; no token: an unauthenticated call. */
  me(token?: string): Promise<Outcome<UserView>>;
  getUser(token: string, id: string): Promise<Outcome<UserView>>;
  createAccount(token: string, currency: string): Promise<Outcome<AccountView>>;
  getAccount(token: string, id: string): Promise<Outcome<AccountView>>;
  deposit(token: string, accountId: string, amount: number, idempotencyKey: string): Promise<Outcome<MoneyView>>;
  transfer(token: string, input: TransferInput, idempotencyKey: string): Promise<Outcome<MoneyView>>;
  getTransfer(token: string, id: string): Promise<Outcome<TransferView>>;
  /** An account's transfers, newest first (the first page of 100). */
  listAccountTransfers(token: string, accountId: string): Promise<Outcome<TransferView[]>>;
  close(): void;
}

// ---------------------------------------------------------------------------------------------- REST

interface RestAccount {
  id: string;
  ownerId: string | null;
  currency: string;
  balance: number | string;
  availableBalance: number | string;
}
/** A transfer as REST and GraphQL both send it (amount a JSON number). */
interface JsonTransfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: number;
  currency: string;
  status: TransferStatus;
  description: string | null;
}

const restUser = (user: User): UserView => ({
  id: user.id,
  email: user.email,
  name: user.name,
  role: user.role,
  emailVerified: user.emailVerified,
  createdAt: user.createdAt,
  updatedAt: user.updatedAt,
});
const restAccount = (account: RestAccount): AccountView => ({
  id: account.id,
  ownerId: account.ownerId,
  currency: account.currency,
  balance: String(account.balance),
  availableBalance: String(account.availableBalance),
});
const jsonTransfer = (transfer: JsonTransfer): TransferView => ({
  id: transfer.id,
  fromAccountId: transfer.fromAccountId,
  toAccountId: transfer.toAccountId,
  amount: String(transfer.amount),
  currency: transfer.currency,
  status: transfer.status,
  description: transfer.description,
});

/** REST through a Client (fetch, or a loopback client sending from its own address). */
export function createRestDriver(client: Client): ProtocolDriver {
  async function send<B, T>(
    method: string,
    path: string,
    expected: number,
    render: (body: B, headers: Headers) => T,
    options: { body?: unknown; token?: string; idempotencyKey?: string } = {},
  ): Promise<Outcome<T>> {
    const response = await client.request<B>(method, `/api/v1${path}`, options.body, {
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.idempotencyKey !== undefined ? { headers: { 'idempotency-key': options.idempotencyKey } } : {}),
    });
    if (response.status === expected) return { ok: true, value: render(response.body, response.headers) };
    const error = (response.body as { error?: { code?: unknown } } | undefined)?.error;
    assert.ok(error && typeof error.code === 'string', `REST ${method} ${path}: no contract error body: ${response.status} ${response.text}`);
    const retryAfter = response.headers.get('retry-after');
    return {
      ok: false,
      code: error.code,
      status: response.status,
      ...(retryAfter !== null ? { retryAfterSeconds: Number(retryAfter) } : {}),
    };
  }
  const money = (body: { data: JsonTransfer }, headers: Headers): MoneyView => ({
    transfer: jsonTransfer(body.data),
    replayed: headers.get('idempotent-replayed') === 'true',
  });
  return {
    name: 'REST',
    register: (input) => send('POST', '/auth/register', 201, (body: { data: User }) => restUser(body.data), { body: input }),
    login: (email, password) =>
      send('POST', '/auth/login', 200, (body: { data: TokensView & { user: User } }) => ({ ...tokens(body.data), user: restUser(body.data.user) }), {
        body: { email, password },
      }),
    beginLogin: (email, password) =>
      send(
        'POST',
        '/auth/login',
        200,
        (body: { data: (TokensView & { user: User }) | { mfaRequired: true; mfaToken: string; expiresIn: number } }): LoginStepView =>
          'mfaRequired' in body.data
            ? { kind: 'challenge', mfaToken: body.data.mfaToken, expiresIn: body.data.expiresIn }
            : { kind: 'tokens', login: { ...tokens(body.data), user: restUser(body.data.user) } },
        { body: { email, password } },
      ),
    verifyMfa: (mfaToken, code) =>
      send('POST', '/auth/mfa/verify', 200, (body: { data: TokensView & { user: User } }) => ({ ...tokens(body.data), user: restUser(body.data.user) }), {
        body: { mfaToken, code },
      }),
    refresh: (refreshToken) => send('POST', '/auth/refresh', 200, (body: { data: TokensView }) => tokens(body.data), { body: { refreshToken } }),
    listSessions: (token) =>
      send('GET', '/auth/sessions?limit=100', 200, (body: { data: SessionView[] }) => body.data.map(sessionView), { token }),
    revokeSession: (token, id) => send('DELETE', `/auth/sessions/${id}`, 204, () => true as const, { token }),
    createApiKey: (token, input) =>
      send('POST', '/api-keys', 201, (body: { data: ApiKeyView & { secret: string } }) => ({ apiKey: apiKeyView(body.data), secret: body.data.secret }), {
        token,
        body: input,
      }),
    listApiKeys: (token) => send('GET', '/api-keys?limit=100', 200, (body: { data: ApiKeyView[] }) => body.data.map(apiKeyView), { token }),
    revokeApiKey: (token, id) => send('DELETE', `/api-keys/${id}`, 204, () => true as const, { token }),
    me: (token) => send('GET', '/users/me', 200, (body: { data: User }) => restUser(body.data), token !== undefined ? { token } : {}),
    getUser: (token, id) => send('GET', `/users/${id}`, 200, (body: { data: User }) => restUser(body.data), { token }),
    createAccount: (token, currency) => send('POST', '/accounts', 201, (body: { data: RestAccount }) => restAccount(body.data), { token, body: { currency } }),
    getAccount: (token, id) => send('GET', `/accounts/${id}`, 200, (body: { data: RestAccount }) => restAccount(body.data), { token }),
    deposit: (token, accountId, amount, idempotencyKey) =>
      send('POST', `/accounts/${accountId}/deposits`, 201, money, { token, body: { amount }, idempotencyKey }),
    transfer: (token, input, idempotencyKey) => send('POST', '/transfers', 201, money, { token, body: input, idempotencyKey }),
    getTransfer: (token, id) => send('GET', `/transfers/${id}`, 200, (body: { data: JsonTransfer }) => jsonTransfer(body.data), { token }),
    listAccountTransfers: (token, accountId) =>
      send('GET', `/accounts/${accountId}/transfers?limit=100`, 200, (body: { data: JsonTransfer[] }) => body.data.map(jsonTransfer), { token }),
    close: () => undefined,
  };
}

const sessionView = (session: SessionView): SessionView => ({ id: session.id, current: session.current, userAgent: session.userAgent, ip: session.ip });
const apiKeyView = (key: ApiKeyView): ApiKeyView => ({ id: key.id, name: key.name, prefix: key.prefix, scopes: [...key.scopes], expiresAt: key.expiresAt });

const tokens = (pair: TokensView): TokensView => ({
  accessToken: pair.accessToken,
  refreshToken: pair.refreshToken,
  tokenType: pair.tokenType,
  expiresIn: pair.expiresIn,
});

// ------------------------------------------------------------------------------------------- GraphQL

const USER = 'id email name role emailVerified createdAt updatedAt';
const ACCOUNT = 'id ownerId currency balance availableBalance';
const TRANSFER = 'id fromAccountId toAccountId amount currency status description';
const MONEY = `transfer { ${TRANSFER} } replayed`;

const gqlMoney = (payload: { transfer: JsonTransfer; replayed: boolean }): MoneyView => ({
  transfer: jsonTransfer(payload.transfer),
  replayed: payload.replayed,
});
const gqlAccount = (account: AccountView): AccountView => ({
  id: account.id,
  ownerId: account.ownerId,
  currency: account.currency,
  balance: account.balance,
  availableBalance: account.availableBalance,
});

/** GraphQL through a Client: one operation per call, one root field, its value or its single error. */
export function createGraphqlDriver(client: Client): ProtocolDriver {
  async function run<F, T>(
    field: string,
    query: string,
    variables: Record<string, unknown>,
    render: (value: F) => T,
    token?: string,
  ): Promise<Outcome<T>> {
    const response = await gql<Record<string, F | null>>(client, query, variables, token !== undefined ? { token } : {});
    const body: GraphqlBody<Record<string, F | null>> | undefined = response.body;
    assert.ok(body && typeof body === 'object', `GraphQL ${field}: not a GraphQL answer: ${response.status} ${response.text}`);
    const errors = body.errors ?? [];
    if (errors.length === 0) {
      assert.equal(response.status, 200, response.text);
      const value = body.data?.[field];
      assert.ok(value !== null && value !== undefined, `GraphQL ${field}: no value and no error: ${response.text}`);
      return { ok: true, value: render(value) };
    }
    assert.equal(errors.length, 1, `GraphQL ${field}: expected one error: ${response.text}`);
    const [error] = errors;
    assert.ok(error);
    // Executed (a field's error): HTTP 200 with the field null; refused as a whole (rate limited): the error's status.
    if (response.status === 200) assert.equal(body.data?.[field] ?? null, null, response.text);
    else assert.equal(response.status, error.extensions.status, response.text);
    return {
      ok: false,
      code: error.extensions.code,
      status: error.extensions.status,
      ...(error.extensions.retryAfterSeconds !== undefined ? { retryAfterSeconds: error.extensions.retryAfterSeconds } : {}),
    };
  }
  return {
    name: 'GraphQL',
    register: (input) =>
      run('register', `mutation ($input: RegisterInput!) { register(input: $input) { ${USER} } }`, { input }, (user: UserView) => ({ ...user })),
    login: (email, password) =>
      run(
        'login',
        `mutation ($input: LoginInput!) { login(input: $input) { accessToken refreshToken tokenType expiresIn user { ${USER} } } }`,
        { input: { email, password } },
        (login: LoginView) => ({ ...tokens(login), user: { ...login.user } }),
      ),
    beginLogin: (email, password) =>
      run(
        'beginLogin',
        'mutation ($input: LoginInput!) { beginLogin(input: $input) { __typename ' +
          `... on LoginResult { accessToken refreshToken tokenType expiresIn user { ${USER} } } ` +
          '... on MfaChallenge { mfaRequired mfaToken challengeExpiresIn: expiresIn } } }',
        { input: { email, password } },
        (step: (LoginView & { __typename: 'LoginResult' }) | { __typename: 'MfaChallenge'; mfaRequired: boolean; mfaToken: string; challengeExpiresIn: number }): LoginStepView => {
          if (step.__typename === 'LoginResult') return { kind: 'tokens', login: { ...tokens(step), user: { ...step.user } } };
          assert.equal(step.mfaRequired, true);
          return { kind: 'challenge', mfaToken: step.mfaToken, expiresIn: step.challengeExpiresIn };
        },
      ),
    verifyMfa: (mfaToken, code) =>
      run(
        'verifyMfa',
        `mutation ($input: VerifyMfaInput!) { verifyMfa(input: $input) { accessToken refreshToken tokenType expiresIn user { ${USER} } } }`,
        { input: { mfaToken, code } },
        (login: LoginView) => ({ ...tokens(login), user: { ...login.user } }),
      ),
    refresh: (refreshToken) =>
      run(
        'refresh',
        'mutation ($refreshToken: String!) { refresh(refreshToken: $refreshToken) { accessToken refreshToken tokenType expiresIn } }',
        { refreshToken },
        tokens,
      ),
    listSessions: (token) =>
      run('sessions', '{ sessions(first: 100) { nodes { id current userAgent ip } } }', {}, (page: { nodes: SessionView[] }) => page.nodes.map(sessionView), token),
    revokeSession: (token, id) => run('revokeSession', 'mutation ($id: ID!) { revokeSession(id: $id) }', { id }, (done: boolean) => (assert.equal(done, true), true as const), token),
    createApiKey: (token, input) =>
      run(
        'createApiKey',
        'mutation ($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id name prefix scopes expiresAt } secret } }',
        { input },
        (created: { apiKey: ApiKeyView; secret: string }) => ({ apiKey: apiKeyView(created.apiKey), secret: created.secret }),
        token,
      ),
    listApiKeys: (token) =>
      run('apiKeys', '{ apiKeys(first: 100) { nodes { id name prefix scopes expiresAt } } }', {}, (page: { nodes: ApiKeyView[] }) => page.nodes.map(apiKeyView), token),
    revokeApiKey: (token, id) => run('revokeApiKey', 'mutation ($id: ID!) { revokeApiKey(id: $id) }', { id }, (done: boolean) => (assert.equal(done, true), true as const), token),
    me: (token) => run('me', `{ me { ${USER} } }`, {}, (user: UserView) => ({ ...user }), token),
    getUser: (token, id) => run('user', `query ($id: ID!) { user(id: $id) { ${USER} } }`, { id }, (user: UserView) => ({ ...user }), token),
    createAccount: (token, currency) =>
      run('createAccount', `mutation ($input: CreateAccountInput!) { createAccount(input: $input) { ${ACCOUNT} } }`, { input: { currency } }, gqlAccount, token),
    getAccount: (token, id) => run('account', `query ($id: ID!) { account(id: $id) { ${ACCOUNT} } }`, { id }, gqlAccount, token),
    deposit: (token, accountId, amount, idempotencyKey) =>
      run(
        'deposit',
        `mutation ($accountId: ID!, $amount: SafeInt!, $key: String!) { deposit(accountId: $accountId, amount: $amount, idempotencyKey: $key) { ${MONEY} } }`,
        { accountId, amount, key: idempotencyKey },
        gqlMoney,
        token,
      ),
    transfer: (token, input, idempotencyKey) =>
      run(
        'transfer',
        `mutation ($input: TransferInput!, $key: String!) { transfer(input: $input, idempotencyKey: $key) { ${MONEY} } }`,
        { input, key: idempotencyKey },
        gqlMoney,
        token,
      ),
    getTransfer: (token, id) => run('transfer', `query ($id: ID!) { transfer(id: $id) { ${TRANSFER} } }`, { id }, jsonTransfer, token),
    listAccountTransfers: (token, accountId) =>
      run(
        'accountTransfers',
        `query ($accountId: ID!) { accountTransfers(accountId: $accountId, first: 100) { edges { node { ${TRANSFER} } } } }`,
        { accountId },
        (connection: { edges: Array<{ node: JsonTransfer }> }) => connection.edges.map(({ node }) => jsonTransfer(node)),
        token,
      ),
    close: () => undefined,
  };
}

// ---------------------------------------------------------------------------------------------- gRPC

interface ProtoTimestamp {
  seconds: string;
  nanos: number;
}
interface ProtoUser {
  id: string;
  email: string;
  name: string;
  role: string;
  /** Absent when false (proto3 leaves default values out of the wire). */
  emailVerified?: boolean;
  createdAt: ProtoTimestamp;
  updatedAt: ProtoTimestamp;
}
interface ProtoAccount {
  id: string;
  ownerId?: string;
  currency: string;
  balance: string;
  availableBalance: string;
}
interface ProtoTransfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: string;
  currency: string;
  status: string;
  description?: string;
}

const isoOf = (timestamp: ProtoTimestamp): string => new Date(Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6)).toISOString();
const ROLES: Readonly<Record<string, 'user' | 'admin'>> = { ROLE_USER: 'user', ROLE_ADMIN: 'admin' };
const STATUSES: Readonly<Record<string, TransferStatus>> = {
  TRANSFER_STATUS_POSTED: 'posted',
  TRANSFER_STATUS_PENDING: 'pending',
  TRANSFER_STATUS_VOIDED: 'voided',
  TRANSFER_STATUS_EXPIRED: 'expired',
};

function protoUser(user: ProtoUser): UserView {
  const role = ROLES[user.role];
  assert.ok(role, `gRPC: unknown role ${user.role}`);
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    role,
    emailVerified: user.emailVerified === true,
    createdAt: isoOf(user.createdAt),
    updatedAt: isoOf(user.updatedAt),
  };
}
const protoAccount = (account: ProtoAccount): AccountView => ({
  id: account.id,
  // proto3 optional: unset (a system account) reads as absent.
  ownerId: account.ownerId === undefined || account.ownerId === '' ? null : account.ownerId,
  currency: account.currency,
  balance: account.balance,
  availableBalance: account.availableBalance,
});
function protoTransfer(transfer: ProtoTransfer): TransferView {
  const status = STATUSES[transfer.status];
  assert.ok(status, `gRPC: unknown transfer status ${transfer.status}`);
  return {
    id: transfer.id,
    fromAccountId: transfer.fromAccountId,
    toAccountId: transfer.toAccountId,
    amount: transfer.amount,
    currency: transfer.currency,
    status,
    description: transfer.description ?? null,
  };
}
const grpcStatusName = (code: number): GrpcStatusName => {
  const name = grpc.status[code];
  assert.ok(name !== undefined, `unknown gRPC status ${code}`);
  return name as GrpcStatusName;
};

type Service = 'bastion.v1.UserService' | 'bastion.v1.AuthService' | 'bastion.v1.LedgerService' | 'bastion.v1.ApiKeyService';

interface ProtoApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  expiresAt?: ProtoTimestamp | null;
}
const protoApiKey = (key: ProtoApiKey): ApiKeyView => ({
  id: key.id,
  name: key.name,
  prefix: key.prefix,
  scopes: [...key.scopes],
  expiresAt: key.expiresAt ? isoOf(key.expiresAt) : null,
});

/** gRPC through @grpc/grpc-js at `address` (host:port). */
export function createGrpcDriver(address: string): ProtocolDriver {
  const client = createGrpcJsClient(address);
  async function call<R, T>(service: Service, method: string, request: object, render: (response: R, result: UnaryResult<R>) => T, token?: string): Promise<Outcome<T>> {
    try {
      const result = await client.call<R>(service, method, request, token !== undefined ? { token } : {});
      return { ok: true, value: render(result.response, result) };
    } catch (error) {
      const failure = error as CallError;
      assert.equal(typeof failure.code, 'number', `gRPC ${method}: not a status: ${String(error)}`);
      assert.ok(failure.domainCode, `gRPC ${method}: no bastion-error-code trailer (${grpcStatusName(failure.code)}: ${failure.details})`);
      const retryAfter = failure.metadata.get('retry-after')[0];
      return {
        ok: false,
        code: failure.domainCode,
        status: grpcStatusName(failure.code),
        ...(typeof retryAfter === 'string' ? { retryAfterSeconds: Number(retryAfter) } : {}),
      };
    }
  }
  const money = (response: { transfer: ProtoTransfer }, result: UnaryResult<{ transfer: ProtoTransfer }>): MoneyView => ({
    transfer: protoTransfer(response.transfer),
    replayed: result.headers.get('idempotent-replayed')[0] === 'true',
  });
  return {
    name: 'gRPC',
    register: (input) => call('bastion.v1.AuthService', 'Register', input, (response: { user: ProtoUser }) => protoUser(response.user)),
    login: (email, password) =>
      call('bastion.v1.AuthService', 'Login', { email, password }, (response: TokensView & { user: ProtoUser }) => ({
        ...tokens(response),
        user: protoUser(response.user),
      })),
    beginLogin: (email, password) =>
      call(
        'bastion.v1.AuthService',
        'BeginLogin',
        { email, password },
        (response: {
          step: 'login' | 'mfaChallenge';
          login?: TokensView & { user: ProtoUser };
          mfaChallenge?: { mfaToken: string; expiresIn: number };
        }): LoginStepView => {
          if (response.step === 'login' && response.login) return { kind: 'tokens', login: { ...tokens(response.login), user: protoUser(response.login.user) } };
          assert.ok(response.step === 'mfaChallenge' && response.mfaChallenge, `gRPC BeginLogin: no step: ${JSON.stringify(response)}`);
          return { kind: 'challenge', mfaToken: response.mfaChallenge.mfaToken, expiresIn: response.mfaChallenge.expiresIn };
        },
      ),
    verifyMfa: (mfaToken, code) =>
      call('bastion.v1.AuthService', 'VerifyMfa', { mfaToken, code }, (response: TokensView & { user: ProtoUser }) => ({
        ...tokens(response),
        user: protoUser(response.user),
      })),
    refresh: (refreshToken) => call('bastion.v1.AuthService', 'Refresh', { refreshToken }, (response: TokensView) => tokens(response)),
    listSessions: (token) =>
      call(
        'bastion.v1.AuthService',
        'ListSessions',
        { limit: 100 },
        (response: { sessions: Array<{ id: string; current: boolean; userAgent?: string; ip?: string }> }) =>
          response.sessions.map((session) => ({ id: session.id, current: session.current, userAgent: session.userAgent ?? null, ip: session.ip ?? null })),
        token,
      ),
    revokeSession: (token, id) => call('bastion.v1.AuthService', 'RevokeSession', { id }, () => true as const, token),
    createApiKey: (token, input) =>
      call('bastion.v1.ApiKeyService', 'CreateApiKey', input, (response: { apiKey: ProtoApiKey; secret: string }) => ({ apiKey: protoApiKey(response.apiKey), secret: response.secret }), token),
    listApiKeys: (token) =>
      call('bastion.v1.ApiKeyService', 'ListApiKeys', { limit: 100 }, (response: { apiKeys: ProtoApiKey[] }) => response.apiKeys.map(protoApiKey), token),
    revokeApiKey: (token, id) => call('bastion.v1.ApiKeyService', 'RevokeApiKey', { id }, () => true as const, token),
    me: (token) => call('bastion.v1.UserService', 'GetMe', {}, (response: { user: ProtoUser }) => protoUser(response.user), token),
    getUser: (token, id) => call('bastion.v1.UserService', 'GetUser', { id }, (response: { user: ProtoUser }) => protoUser(response.user), token),
    createAccount: (token, currency) =>
      call('bastion.v1.LedgerService', 'CreateAccount', { currency }, (response: { account: ProtoAccount }) => protoAccount(response.account), token),
    getAccount: (token, id) => call('bastion.v1.LedgerService', 'GetAccount', { id }, (response: { account: ProtoAccount }) => protoAccount(response.account), token),
    deposit: (token, accountId, amount, idempotencyKey) =>
      call('bastion.v1.LedgerService', 'Deposit', { accountId, amount: String(amount), idempotencyKey }, money, token),
    transfer: (token, input, idempotencyKey) =>
      call('bastion.v1.LedgerService', 'CreateTransfer', { ...input, amount: String(input.amount), idempotencyKey }, money, token),
    getTransfer: (token, id) => call('bastion.v1.LedgerService', 'GetTransfer', { id }, (response: { transfer: ProtoTransfer }) => protoTransfer(response.transfer), token),
    listAccountTransfers: (token, accountId) =>
      call(
        'bastion.v1.LedgerService',
        'ListAccountTransfers',
        { accountId, limit: 100 },
        (response: { transfers: ProtoTransfer[] }) => response.transfers.map(protoTransfer),
        token,
      ),
    close: () => client.close(),
  };
}
