// Request and response schemas of the ledger component, shared by every transport.
import { Type } from 'typebox';
import { MAX_PAGE, StoredText } from '../../platform/http.js';

/** Currencies in active use (ISO 4217, per the ICU data Node ships): `usd` and `QQQ` are rejected. */
const ACTIVE_CURRENCIES: readonly string[] = Intl.supportedValuesOf('currency');

const Amount = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Minor units (cents)' });
const Uuid = Type.String({ format: 'uuid' });
const Description = StoredText({ maxLength: 500 });

/**
 * An exact integer: a system account's balance (minus its currency's user balances) may pass 2^53,
 * and is then a bigint, written as the exact JSON integer.
 */
const Balance = (options: { description: string }) => Type.Unsafe<number | bigint>(Type.Integer(options));

export const AccountSchema = Type.Object({
  id: Uuid,
  ownerId: Type.Union([Uuid, Type.Null()]),
  currency: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  balance: Balance({ description: 'Minor units; a system account: minus the sum of its currency\'s user balances' }),
  availableBalance: Balance({ description: 'Balance minus what pending transfers reserve' }),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});

export const TransferSchema = Type.Object({
  id: Uuid,
  fromAccountId: Uuid,
  toAccountId: Uuid,
  amount: Type.Integer(),
  currency: Type.String(),
  status: Type.Enum(['posted', 'pending', 'voided', 'expired']),
  description: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.Optional(Type.String({ format: 'date-time', description: 'Two-phase: when it voids itself' })),
  pendingId: Type.Optional(Type.String({ format: 'uuid', description: 'Post/void: the pending transfer resolved' })),
});

export const CreateAccountBody = Type.Object(
  {
    currency: Type.Enum([...ACTIVE_CURRENCIES], { description: 'Active ISO 4217 code, upper case' }),
    name: Type.Optional(StoredText({ minLength: 1, maxLength: 100 })),
    ownerId: Type.Optional(Type.String({ format: 'uuid', description: 'Admins only' })),
  },
  { additionalProperties: false },
);

export const ListAccountsQuery = Type.Object(
  {
    page: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 1 }),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    ownerId: Type.Optional(Type.String({ format: 'uuid', description: 'Admins only' })),
    system: Type.Optional(Type.Boolean({ description: 'Admins only: list the per-currency system accounts' })),
  },
  { additionalProperties: false },
);

export const AmountBody = Type.Object({ amount: Amount }, { additionalProperties: false });

export const CreateTransferBody = Type.Object(
  {
    fromAccountId: Uuid,
    toAccountId: Uuid,
    amount: Amount,
    description: Type.Optional(Description),
    pending: Type.Optional(Type.Boolean({ description: 'Two-phase: reserve now, post or void later' })),
    timeoutSeconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 2_592_000, description: 'Two-phase: void automatically after this long' }),
    ),
  },
  { additionalProperties: false },
);

export const PostPendingBody = Type.Object(
  { amount: Type.Optional(Amount) },
  { additionalProperties: false, description: 'Post all of the reserved amount, or less' },
);
export { NoBody as VoidPendingBody } from '../../platform/http.js';

export const HistoryQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 10 }),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);

export const IdempotencyHeaders = (required: boolean) =>
  Type.Object(
    required
      ? { 'idempotency-key': Type.String({ minLength: 1, maxLength: 255 }) }
      : { 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) },
  );
