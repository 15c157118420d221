// Ids are UUIDv7: time-ordered, so primary-key inserts stay append-mostly in the B-tree.
import { randomFillSync } from 'node:crypto';
import { v7 } from 'uuid';

// uuid's v7() asks the OS for 16 random bytes per id (crypto.getRandomValues): ~5 µs a call on
// this class of VM, 7.4 µs an id, two or three ids per transfer. The bytes come instead from a pool
// refilled 256 ids at a time (as node:crypto's randomUUID() does): ~0.3 µs an id. Passing the random
// bytes takes v7() off its own clock state, so the state is kept here, with the same rule as
// uuid's updateV7State: a new millisecond starts from a random 31-bit counter, within a
// millisecond the counter counts up (and on overflow borrows the next millisecond), so ids made by
// one process are strictly increasing.
const pool = Buffer.allocUnsafe(16 * 256);
let used = pool.length;
let msecs = -Infinity;
let seq = 0;

export const newId = (): string => {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  const random = pool.subarray(used, (used += 16));
  const now = Date.now();
  if (now > msecs) {
    msecs = now;
    seq = (((random[6] ?? 0) & 0x7f) << 24) | ((random[7] ?? 0) << 16) | ((random[8] ?? 0) << 8) | (random[9] ?? 0);
  } else {
    seq = (seq + 1) | 0;
    if (seq === 0) msecs++;
  }
  return v7({ random, msecs, seq });
};
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string): boolean => UUID_PATTERN.test(value);
