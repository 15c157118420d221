// Keyset cursors for newest-first lists ordered by (created_at, id): opaque to clients, checked
// strictly when they come back (a malformed cursor is 400 on the path `cursor`).
import { validationFailed } from './errors.js';
import { isUuid } from './ids.js';

export interface CursorPosition {
  readonly createdAt: Date;
  readonly id: string;
}

export const encodeCursor = (row: { created_at: Date; id: string }): string =>
  Buffer.from(`${row.created_at.toISOString()}|${row.id}`).toString('base64url');

export function decodeCursor(cursor: string): CursorPosition {
  const invalid = () => validationFailed([{ path: 'cursor', message: 'is not a cursor this API issued' }]);
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) throw invalid();
  const [iso, id, ...rest] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  if (rest.length > 0 || !id || !isUuid(id) || !iso || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(iso)) throw invalid();
  const createdAt = new Date(iso);
  // Year 0000 is a JavaScript date but no PostgreSQL one (PGlite would fail the query on it).
  if (Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== iso || createdAt.getUTCFullYear() < 1) throw invalid();
  return { createdAt, id: id.toLowerCase() };
}

/** Where a page starts: after the cursor's position, or at the newest row when there is no cursor. */
export const positionAfter = (cursor: string | undefined): CursorPosition | null => (cursor === undefined ? null : decodeCursor(cursor));

/**
 * A newest-first page from rows read with `limit + 1`: the extra row only tells that another page
 * exists, and the page's last row is where the next one starts.
 */
export function keysetPage<R extends { created_at: Date; id: string }, T>(
  rows: readonly R[],
  limit: number,
  render: (row: R) => T,
): { data: T[]; meta: { nextCursor: string | null } } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { data: page.map(render), meta: { nextCursor: rows.length > limit && last ? encodeCursor(last) : null } };
}
