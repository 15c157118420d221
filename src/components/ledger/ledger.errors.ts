// Ledger error codes, one per rule (TigerBeetle's create_transfer results, in the contract's words).
import { DomainError, notFound } from '../../platform/errors.js';
import type { ExecuteOutcome, ResolveOutcome } from './ledger.repo.js';

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

const MESSAGES: Record<Exclude<ExecuteOutcome | ResolveOutcome, 'OK'>, () => DomainError> = {
  ACCOUNT_NOT_FOUND: () => notFound('Account'),
  COUNTERPARTY_NOT_FOUND: () => notFound('Destination account'),
  TRANSFER_NOT_FOUND: () => notFound('Pending transfer'),
  CURRENCY_MISMATCH: () => new DomainError('CURRENCY_MISMATCH', 'The accounts hold different currencies'),
  INSUFFICIENT_FUNDS: () => new DomainError('INSUFFICIENT_FUNDS', 'The source account cannot cover this amount'),
  BALANCE_LIMIT_EXCEEDED: () =>
    new DomainError(
      'BALANCE_LIMIT_EXCEEDED',
      'The movement would take a balance past what it can hold (9007199254740991 minor units for a user account)',
    ),
  PENDING_ALREADY_POSTED: () => new DomainError('PENDING_ALREADY_POSTED', 'This pending transfer was already posted'),
  PENDING_ALREADY_VOIDED: () => new DomainError('PENDING_ALREADY_VOIDED', 'This pending transfer was already voided or expired'),
  PENDING_EXPIRED: () => new DomainError('PENDING_EXPIRED', 'This pending transfer has timed out'),
  AMOUNT_EXCEEDS_PENDING: () => new DomainError('AMOUNT_EXCEEDS_PENDING', 'A pending transfer cannot be posted for more than it reserved'),
};

export const outcomeError = (outcome: Exclude<ExecuteOutcome | ResolveOutcome, 'OK'>): DomainError => MESSAGES[outcome]();
