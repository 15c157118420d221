// The ledger component's public surface.
export { checkLedger, type LedgerCheckReport } from './ledger.check.js';
export { ledgerRoutes } from './http.js';
export { createLedgerService, type Account, type LedgerService, type Transfer } from './ledger.service.js';
