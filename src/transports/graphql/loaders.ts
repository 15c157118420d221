// Per-request DataLoaders for the links between types (Account.owner, Transfer.fromAccount and
// toAccount): every id asked for while one level of the query resolves is loaded once, with the same
// authorization as the REST route that reads it (owners in one batch read that authorizes as `get`).
import DataLoader from 'dataloader';
import type { Principal } from '../../components/access/index.js';
import type { Account, LedgerService } from '../../components/ledger/index.js';
import type { User, UsersService } from '../../components/users/index.js';
import { DomainError } from '../../platform/errors.js';

export interface Loaders {
  /** null: no such account, or one the caller may not see. */
  readonly account: DataLoader<string, Account | null>;
  /** null: no such user, or one the caller may not see. */
  readonly user: DataLoader<string, User | null>;
}

/** A link the caller may not follow reads as null (the id is still on the parent), as REST shows only the id. */
const nullWhenNotFound = <T>(read: Promise<T>): Promise<T | null> =>
  read.catch((error: unknown) => {
    if (error instanceof DomainError && error.code === 'NOT_FOUND') return null;
    throw error;
  });

/**
 * `cache: false` for a subscription's loaders, which live as long as its connection: ids asked for
 * in one tick are still read together, but every event reads them afresh.
 */
export function createLoaders(
  services: { users: UsersService; ledger: LedgerService },
  principal: () => Promise<Principal>,
  options: { cache?: boolean } = {},
): Loaders {
  const cache = options.cache ?? true;
  // The ledger reads one row per id; the loader's job there is that each distinct id is read once per
  // request, whatever the number of rows that link to it.
  const batch =
    <T>(read: (caller: Principal, id: string) => Promise<T>) =>
    async (ids: readonly string[]): Promise<Array<T | null | Error>> => {
      const caller = await principal();
      const settled = await Promise.allSettled(ids.map((id) => nullWhenNotFound(read(caller, id))));
      return settled.map((result) => (result.status === 'fulfilled' ? result.value : (result.reason as Error)));
    };
  return {
    account: new DataLoader(batch((caller, id) => services.ledger.getAccount(caller, id)), { cache }),
    // One statement for every owner of a level, however many distinct owners it has.
    user: new DataLoader(async (ids: readonly string[]): Promise<Array<User | null>> => {
      const found = await services.users.getMany(await principal(), ids);
      return ids.map((id) => found.get(id.toLowerCase()) ?? null);
    }, { cache }),
  };
}
