// The GraphQL SDL (the source of truth; schema.graphql at the repository root is its committed print,
// checked by test/graphql/schema-file.test.ts) and the custom scalars that keep money exact.
import { buildSchema, GraphQLError, Kind, lexicographicSortSchema, printSchema, type ValueNode } from 'graphql';

export const typeDefs = /* GraphQL */ `
"""
A whole number of minor units (cents) as a JSON number, exact: between -(2^53 - 1) and 2^53 - 1.
GraphQL's Int is 32-bit, too small for money. Never coerced from a string.
"""
scalar SafeInt

"""
An exact integer of any size, as a decimal string ("-12345"). Used for balances: a user balance is at
most 2^53 - 1, but a system account's (minus the sum of its currency's user balances) may pass 2^53,
which a JSON number cannot carry exactly.
"""
scalar BigInt

"""An ISO 8601 UTC timestamp, e.g. 2026-01-31T12:00:00.000Z."""
scalar DateTime

enum Role {
  user
  admin
}

enum TransferStatus {
  posted
  pending
  voided
  expired
}

type User {
  id: ID!
  email: String!
  name: String!
  role: Role!
  """Whether the user confirmed the address by the link mailed to it."""
  emailVerified: Boolean!
  createdAt: DateTime!
  updatedAt: DateTime!
}

"""Offset pagination of users and accounts, as REST's meta."""
type OffsetPageInfo {
  page: Int!
  limit: Int!
  total: Int!
  totalPages: Int!
}

type UserPage {
  nodes: [User!]!
  pageInfo: OffsetPageInfo!
}

type Account {
  id: ID!
  """Null for a currency's system account."""
  ownerId: ID
  """The owner (null for a system account)."""
  owner: User
  currency: String!
  name: String
  """Minor units; a system account: minus the sum of its currency's user balances."""
  balance: BigInt!
  """Balance minus what pending transfers reserve."""
  availableBalance: BigInt!
  createdAt: DateTime!
  updatedAt: DateTime!
}

type AccountPage {
  nodes: [Account!]!
  pageInfo: OffsetPageInfo!
}

type Transfer {
  id: ID!
  fromAccountId: ID!
  toAccountId: ID!
  """The debited account; null when the caller may not see it (someone else's account)."""
  fromAccount: Account
  """The credited account; null when the caller may not see it (someone else's account)."""
  toAccount: Account
  amount: SafeInt!
  currency: String!
  status: TransferStatus!
  description: String
  createdAt: DateTime!
  """Two-phase only: when a pending transfer voids itself."""
  expiresAt: DateTime
  """Post/void only: the pending transfer resolved."""
  pendingId: ID
}

"""Relay cursor pagination, newest first."""
type PageInfo {
  hasNextPage: Boolean!
  endCursor: String
}

type TransferEdge {
  cursor: String!
  node: Transfer!
}

type TransferConnection {
  edges: [TransferEdge!]!
  pageInfo: PageInfo!
}

"""What a money mutation did: the transfer, and whether this answer is a replay of an earlier request."""
type MoneyPayload {
  transfer: Transfer!
  """True when the Idempotency-Key was used before with the same operation: no money moved now."""
  replayed: Boolean!
  """The id of the request that produced this answer (the first one, on a replay)."""
  requestId: String!
}

type TokenPair {
  accessToken: String!
  refreshToken: String!
  tokenType: String!
  """Access-token lifetime in seconds."""
  expiresIn: Int!
}

type LoginResult {
  accessToken: String!
  refreshToken: String!
  tokenType: String!
  """Access-token lifetime in seconds."""
  expiresIn: Int!
  user: User!
}

"""A login needs its second factor: answer with verifyMfa (this mfaToken and a TOTP or recovery code)."""
type MfaChallenge {
  """Always true."""
  mfaRequired: Boolean!
  """Opaque and single use."""
  mfaToken: String!
  """Seconds the mfaToken stays valid."""
  expiresIn: Int!
}

"""What beginLogin answers: the tokens, or (a user with a confirmed second factor) a challenge."""
union LoginStep = LoginResult | MfaChallenge

input VerifyMfaInput {
  mfaToken: String!
  code: String!
}

input RegisterInput {
  email: String!
  name: String!
  password: String!
}

input LoginInput {
  email: String!
  password: String!
}

input CreateUserInput {
  email: String!
  name: String!
  password: String!
  role: Role
}

input ChangePasswordInput {
  currentPassword: String!
  newPassword: String!
}

input UpdateUserInput {
  name: String
  email: String
  """Admins only."""
  role: Role
}

input CreateAccountInput {
  """Active ISO 4217 code, upper case."""
  currency: String!
  name: String
  """Admins only."""
  ownerId: ID
}

input TransferInput {
  fromAccountId: ID!
  toAccountId: ID!
  amount: SafeInt!
  description: String
  """Two-phase: reserve now, post or void later."""
  pending: Boolean
  """Two-phase: void automatically after this long."""
  timeoutSeconds: Int
}

"""A login (a refresh-token family) and where it came from."""
type Session {
  id: ID!
  createdAt: DateTime!
  """The last login or refresh of this session."""
  lastUsedAt: DateTime!
  userAgent: String
  ip: String
  """The session whose access token made this request."""
  current: Boolean!
}

"""A page of sessions, newest first; pageInfo.endCursor continues (as after)."""
type SessionPage {
  nodes: [Session!]!
  pageInfo: PageInfo!
}

"""An API key, never its secret. Scopes: users:read, users:write, ledger:read, ledger:write."""
type ApiKey {
  id: ID!
  name: String!
  """bsk_ and the next 8 characters of the secret, to tell keys apart."""
  prefix: String!
  scopes: [String!]!
  createdAt: DateTime!
  """Null: never expires."""
  expiresAt: DateTime
  """At most a minute stale; null: never used."""
  lastUsedAt: DateTime
}

"""A page of API keys, newest first; pageInfo.endCursor continues (as after)."""
type ApiKeyPage {
  nodes: [ApiKey!]!
  pageInfo: PageInfo!
}

"""A new key: the only answer that carries its secret (send it as Authorization: Bearer bsk_...)."""
type CreatedApiKey {
  apiKey: ApiKey!
  secret: String!
}

input CreateApiKeyInput {
  name: String!
  """Some of users:read, users:write, ledger:read, ledger:write; within the owner's role."""
  scopes: [String!]!
  """In the future, at most 366 days ahead; absent: never expires."""
  expiresAt: DateTime
  """Admins only: the user the key acts as."""
  ownerId: ID
}

type Query {
  """The calling user."""
  me: User
  """A user (self or admin)."""
  user(id: ID!): User
  """Users, newest first (admin)."""
  users(page: Int = 1, limit: Int = 10): UserPage
  """An account (owner or admin)."""
  account(id: ID!): Account
  """The caller's accounts (admins: all, ownerId, system), newest first."""
  accounts(page: Int = 1, limit: Int = 10, ownerId: ID, system: Boolean): AccountPage
  """A transfer (either party's owner, or admin)."""
  transfer(id: ID!): Transfer
  """An account's transfers, newest first."""
  accountTransfers(accountId: ID!, first: Int = 10, after: String): TransferConnection
  """The caller's live sessions (logins), newest first."""
  sessions(first: Int = 10, after: String): SessionPage
  """The caller's live API keys (admins: ownerId's), newest first."""
  apiKeys(first: Int = 10, after: String, ownerId: ID): ApiKeyPage
}

type Mutation {
  register(input: RegisterInput!): User
  """
  An access token and a rotating refresh token. The login throttle applies as on REST. A user with a
  confirmed second factor gets MFA_REQUIRED: such clients log in with beginLogin.
  """
  login(input: LoginInput!): LoginResult
  """
  A login for any user, as REST's POST /auth/login: the tokens, or an MfaChallenge to answer with
  verifyMfa. The login throttle applies as on REST.
  """
  beginLogin(input: LoginInput!): LoginStep
  """A login's second step: beginLogin's mfaToken and a TOTP or recovery code (single use)."""
  verifyMfa(input: VerifyMfaInput!): LoginResult
  """End one of your sessions: its refresh tokens at once, its access tokens within a second."""
  revokeSession(id: ID!): Boolean
  """A new API key for the caller (admins: for ownerId); its secret is in this answer only."""
  createApiKey(input: CreateApiKeyInput!): CreatedApiKey
  """Revoke one of your API keys (admins: anyone's), on every instance within a second."""
  revokeApiKey(id: ID!): Boolean
  """Rotate a refresh token (grace window for racing tabs; reuse revokes the login)."""
  refresh(refreshToken: String!): TokenPair
  """Revoke the login (refresh-token family) of this token; true even for an unknown token."""
  logout(refreshToken: String!): Boolean
  """Revoke every refresh and access token of the caller."""
  logoutAll: Boolean
  """Change password; every earlier token stops working. A fresh login's tokens."""
  changePassword(input: ChangePasswordInput!): LoginResult
  """Create a user (admin)."""
  createUser(input: CreateUserInput!): User
  """Self or admin; role: admin only."""
  updateUser(id: ID!, input: UpdateUserInput!): User
  """Admin; revokes the user's tokens and closes their empty accounts."""
  deleteUser(id: ID!): Boolean
  """Open an account (balance 0) for the caller; admins may pass ownerId."""
  createAccount(input: CreateAccountInput!): Account
  """Deposit from the currency's system account (admin)."""
  deposit(accountId: ID!, amount: SafeInt!, idempotencyKey: String!): MoneyPayload
  """Withdraw to the currency's system account (owner or admin)."""
  withdraw(accountId: ID!, amount: SafeInt!, idempotencyKey: String!): MoneyPayload
  """Move money between accounts; pending: true reserves it (two-phase)."""
  transfer(input: TransferInput!, idempotencyKey: String!): MoneyPayload
  """Post a pending transfer (all of it, or a smaller amount)."""
  postTransfer(id: ID!, amount: SafeInt, idempotencyKey: String): MoneyPayload
  """Void a pending transfer, releasing what it reserved."""
  voidTransfer(id: ID!, idempotencyKey: String): MoneyPayload
}

type Subscription {
  """
  Transfers posted to or from an account (owner or admin) from now on, as they commit on any
  instance: moves, and pending transfers when posted. Over WebSocket (graphql-transport-ws), the
  token in connection_init's payload as authorization: "Bearer <token>". Live and at most once: for
  the complete history, read accountTransfers. Ends with UNAUTHENTICATED when the token stops being
  valid.
  """
  transferPosted(accountId: ID!): Transfer
}
`;

const invalid = (scalar: string, expected: string) => new GraphQLError(`${scalar} must be ${expected}`, { extensions: { code: 'VALIDATION_FAILED' } });

function safeInteger(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw invalid('SafeInt', 'an integer between -(2^53 - 1) and 2^53 - 1');
  return value;
}

/**
 * A scalar's behaviour, given to Mercurius as a resolver: it is copied onto the scalar the SDL
 * declares, which keeps the SDL's description (a GraphQLScalarType would overwrite it).
 */
interface ScalarBehaviour<Internal, External> {
  serialize(value: unknown): External;
  parseValue(value: unknown): Internal;
  parseLiteral(ast: ValueNode): Internal;
}

export const SafeIntScalar: ScalarBehaviour<number, number> = {
  serialize: safeInteger,
  parseValue: safeInteger,
  parseLiteral(ast: ValueNode) {
    if (ast.kind !== Kind.INT) throw invalid('SafeInt', 'an integer literal');
    return safeInteger(Number(ast.value));
  },
};

export const BigIntScalar: ScalarBehaviour<bigint, string> = {
  serialize(value: unknown): string {
    if (typeof value === 'bigint') return value.toString();
    if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
    throw invalid('BigInt', 'an integer');
  },
  parseValue(value: unknown): bigint {
    if (typeof value !== 'string' || !/^-?\d{1,40}$/.test(value)) throw invalid('BigInt', 'a decimal integer string');
    return BigInt(value);
  },
  parseLiteral(ast: ValueNode): bigint {
    if (ast.kind !== Kind.STRING || !/^-?\d{1,40}$/.test(ast.value)) throw invalid('BigInt', 'a decimal integer string');
    return BigInt(ast.value);
  },
};

export const DateTimeScalar: ScalarBehaviour<string, string> = {
  serialize(value: unknown): string {
    if (typeof value !== 'string') throw invalid('DateTime', 'an ISO 8601 string');
    return value;
  },
  parseValue(value: unknown): string {
    if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) throw invalid('DateTime', 'an ISO 8601 string');
    return value;
  },
  parseLiteral(ast: ValueNode): string {
    if (ast.kind !== Kind.STRING || Number.isNaN(Date.parse(ast.value))) throw invalid('DateTime', 'an ISO 8601 string');
    return ast.value;
  },
};

/** The SDL as committed in schema.graphql: printed with types sorted, so the order is stable. */
export function printedSchema(): string {
  return `${printSchema(lexicographicSortSchema(buildSchema(typeDefs)))}\n`;
}
