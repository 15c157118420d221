// The database schema the service runs on: the numbered migrations (tables), then every component's
// routine file (its SQL functions). The server, the CLI and the tests all migrate through here.
import { EVENTS_ROUTINES } from './components/events/index.js';
import { LEDGER_ROUTINES } from './components/ledger/index.js';
import type { Database } from './platform/db/index.js';
import { migrate, type MigrationResult } from './platform/db/migrate.js';

export const migrateSchema = (database: Database): Promise<MigrationResult> =>
  migrate(database, { routines: [EVENTS_ROUTINES, LEDGER_ROUTINES] });
