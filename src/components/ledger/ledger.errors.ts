// Ledger error codes, one per rule (TigerBeetle's create_transfer results, in the contract's words).
import { DomainError, type ErrorCode } from '../../platform/errors.js';
import type { LedgerOutcome } from './ledger.repo.js';

/** The ledger's own error codes, one per rule (see ErrorCodes in platform/errors.ts). */
export type LedgerErrorCode =
  | 'ACCOUNT_NOT_EMPTY'
  | 'IDEMPOTENCY_IN_PROGRESS'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'CURRENCY_MISMATCH'
  | 'INSUFFICIENT_FUNDS'
  | 'BALANCE_LIMIT_EXCEEDED'
  | 'PENDING_ALREADY_POSTED'
  | 'PENDING_ALREADY_VOIDED'
  | 'PENDING_EXPIRED'
  | 'AMOUNT_EXCEEDS_PENDING';
declare module '../../platform/errors.js' {
  interface ErrorCodes extends Record<LedgerErrorCode, true> {}
}

export const accountNotEmpty = (): DomainError =>
  new DomainError('ACCOUNT_NOT_EMPTY', 'The user still owns an account with a balance or a pending transfer');
export const idempotencyInProgress = (): DomainError =>
  new DomainError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry shortly');
export const idempotencyKeyReused = (): DomainError =>
  new DomainError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used with a different request');

/** Each rule that can refuse a money request (ledger.sql), as the error its outcome is answered with. */
const REFUSALS: Record<Exclude<LedgerOutcome, 'OK'>, readonly [ErrorCode, string]> = {
  ACCOUNT_NOT_FOUND: ['NOT_FOUND', 'Account not found'],
  COUNTERPARTY_NOT_FOUND: ['NOT_FOUND', 'Destination account not found'],
  TRANSFER_NOT_FOUND: ['NOT_FOUND', 'Pending transfer not found'],
  CURRENCY_MISMATCH: ['CURRENCY_MISMATCH', 'The accounts hold different currencies'],
  INSUFFICIENT_FUNDS: ['INSUFFICIENT_FUNDS', 'The source account cannot cover this amount'],
  BALANCE_LIMIT_EXCEEDED: [
    'BALANCE_LIMIT_EXCEEDED',
    'The movement would take a balance past what it can hold (9007199254740991 minor units for a user account)',
  ],
  PENDING_ALREADY_POSTED: ['PENDING_ALREADY_POSTED', 'This pending transfer was already posted'],
  PENDING_ALREADY_VOIDED: ['PENDING_ALREADY_VOIDED', 'This pending transfer was already voided or expired'],
  PENDING_EXPIRED: ['PENDING_EXPIRED', 'This pending transfer has timed out'],
  AMOUNT_EXCEEDS_PENDING: ['AMOUNT_EXCEEDS_PENDING', 'A pending transfer cannot be posted for more than it reserved'],
};

/** The error of a refused money request; `requestId`: the request that was first refused. */
export function outcomeError(outcome: Exclude<LedgerOutcome, 'OK'>, requestId?: string): DomainError {
  const [code, message] = REFUSALS[outcome];
  return new DomainError(code, message, {}, requestId);
}
