// Domain values as protobuf messages (init shapes): the gRPC counterpart of the REST response schemas.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { ApiKey } from '../../components/api-keys/index.js';
import type { LoginResult, Session, TokenPair } from '../../components/auth/index.js';
import type { Account, Transfer } from '../../components/ledger/index.js';
import type { User } from '../../components/users/index.js';
import { assert } from '../../platform/errors.js';
import type { PageMetaSchema } from './gen/bastion/v1/common_pb.js';
import { TransferStatus, type AccountSchema, type TransferSchema } from './gen/bastion/v1/ledger_service_pb.js';
import { Role, type UserSchema } from './gen/bastion/v1/user_service_pb.js';

const timestamp = (iso: string) => timestampFromDate(new Date(iso));

export const ROLE_NAMES: Readonly<Record<Exclude<Role, Role.UNSPECIFIED>, 'user' | 'admin'>> = {
  [Role.USER]: 'user',
  [Role.ADMIN]: 'admin',
};

export function renderUser(user: User): MessageInitShape<typeof UserSchema> {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    role: user.role === 'admin' ? Role.ADMIN : Role.USER,
    emailVerified: user.emailVerified,
    createdAt: timestamp(user.createdAt),
    updatedAt: timestamp(user.updatedAt),
  };
}

export function renderPageMeta(meta: { page: number; limit: number; total: number; totalPages: number }): MessageInitShape<typeof PageMetaSchema> {
  return { page: meta.page, limit: meta.limit, total: BigInt(meta.total), totalPages: BigInt(meta.totalPages) };
}

export function renderTokens(tokens: TokenPair) {
  return {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    tokenType: tokens.tokenType,
    expiresIn: tokens.expiresIn,
  };
}

export function renderLogin(result: LoginResult) {
  return { ...renderTokens(result), user: renderUser(result.user) };
}

/**
 * int64 holds every user balance (at most 2^53-1) and a system account's up to 2^63-1. A system
 * balance past that (a currency's user balances summing beyond 9.2 x 10^18 minor units) cannot be
 * written exactly: the call fails (INTERNAL) rather than answer a wrong number.
 */
function int64(value: number | bigint): bigint {
  const exact = BigInt(value);
  assert(BigInt.asIntN(64, exact) === exact, 'a balance beyond int64 cannot be answered over gRPC');
  return exact;
}

export function renderAccount(account: Account): MessageInitShape<typeof AccountSchema> {
  return {
    id: account.id,
    ...(account.ownerId !== null ? { ownerId: account.ownerId } : {}),
    currency: account.currency,
    ...(account.name !== null ? { name: account.name } : {}),
    balance: int64(account.balance),
    availableBalance: int64(account.availableBalance),
    createdAt: timestamp(account.createdAt),
    updatedAt: timestamp(account.updatedAt),
  };
}

const STATUS: Readonly<Record<Transfer['status'], TransferStatus>> = {
  posted: TransferStatus.POSTED,
  pending: TransferStatus.PENDING,
  voided: TransferStatus.VOIDED,
  expired: TransferStatus.EXPIRED,
};

export function renderTransfer(transfer: Transfer): MessageInitShape<typeof TransferSchema> {
  return {
    id: transfer.id,
    fromAccountId: transfer.fromAccountId,
    toAccountId: transfer.toAccountId,
    amount: BigInt(transfer.amount),
    currency: transfer.currency,
    status: STATUS[transfer.status],
    ...(transfer.description !== null ? { description: transfer.description } : {}),
    createdAt: timestamp(transfer.createdAt),
    ...(transfer.expiresAt !== undefined ? { expiresAt: timestamp(transfer.expiresAt) } : {}),
    ...(transfer.pendingId !== undefined ? { pendingId: transfer.pendingId } : {}),
  };
}

/** A session; an unknown user agent or address stays unset. */
export function renderSession(session: Session) {
  return {
    id: session.id,
    createdAt: timestamp(session.createdAt),
    lastUsedAt: timestamp(session.lastUsedAt),
    ...(session.userAgent !== null ? { userAgent: session.userAgent } : {}),
    ...(session.ip !== null ? { ip: session.ip } : {}),
    current: session.current,
  };
}

/** A key as its list shows it: never the secret. */
export function renderApiKey(key: ApiKey) {
  return {
    id: key.id,
    name: key.name,
    prefix: key.prefix,
    scopes: [...key.scopes],
    createdAt: timestamp(key.createdAt),
    ...(key.expiresAt !== null ? { expiresAt: timestamp(key.expiresAt) } : {}),
    ...(key.lastUsedAt !== null ? { lastUsedAt: timestamp(key.lastUsedAt) } : {}),
  };
}
