// Requests are checked against the same schemas REST validates bodies with (the components'
// *.schemas.ts), by the same Ajv setup (no coercion, unknown fields refused), so a rule on a field
// is written once for every transport.
import type { TSchema } from 'typebox';
import { validationFailed, type FieldError } from '../../platform/errors.js';
import { isUuid } from '../../platform/ids.js';
import { inputValidator } from '../http/validation.js';

/** A check that throws VALIDATION_FAILED (INVALID_ARGUMENT) with field errors when the value fails `schema`. */
export const checkerFor = (schema: TSchema) => inputValidator(schema, 'request');

/** Fails with these field errors if there are any. */
export function refuse(fieldErrors: readonly FieldError[]): void {
  if (fieldErrors.length > 0) throw validationFailed(fieldErrors);
}

/** proto3 has no absent scalar: 0 means "not given", so the schema's default applies. */
export const unlessZero = <T extends number>(name: string, value: T): Record<string, T> => (value === 0 ? {} : { [name]: value });

/** A cursor-paginated list's request (limit 0: the default; cursor empty: the first page) as REST's query. */
export const cursorQuery = (request: { readonly limit: number; readonly cursor: string }): Record<string, unknown> => ({
  ...unlessZero('limit', request.limit),
  ...(request.cursor !== '' ? { cursor: request.cursor } : {}),
});

/**
 * int64 amounts arrive as bigint; the ledger takes numbers up to 2^53-1. Any value outside that
 * range is refused by the schema's bounds, and any inside converts exactly.
 */
export const amountOf = (amount: bigint): number => Number(amount);

/** An id field (proto name), with the message REST's schema gives for a malformed one. */
export function checkUuid(path: string, value: string): void {
  if (!isUuid(value)) refuse([{ path, message: 'must match format "uuid"' }]);
}
