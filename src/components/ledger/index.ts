// The ledger component's public surface.
import { fileURLToPath } from 'node:url';
import type { RoutineFile } from '../../platform/db/migrate.js';

export { checkLedger } from './ledger.check.js';
export { ledgerRoutes } from './http.js';
export {
  createLedgerService,
  type Account,
  type LedgerService,
  type MoneyOutcome,
  type MoneyRequestContext,
  type MoveCommand,
  type ResolveCommand,
  type Transfer,
} from './ledger.service.js';

/** The ledger's SQL functions and their rule order (ledger.sql), applied after the migrations. */
export const LEDGER_ROUTINES: RoutineFile = { name: 'ledger', path: fileURLToPath(new URL('./ledger.sql', import.meta.url)) };
/** Request schemas the transports (REST, GraphQL, gRPC) validate with. */
export {
  AmountBody,
  CreateAccountBody,
  CreateTransferBody,
  HistoryQuery,
  IdempotencyHeaders,
  ListAccountsQuery,
  PostPendingBody,
} from './ledger.schemas.js';
