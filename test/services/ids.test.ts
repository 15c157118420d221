// Ids (src/platform/ids.ts): UUIDv7 from pooled random bytes, with the clock state kept by Bastion.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isUuid, newId } from '../../src/platform/ids.js';

/** The Unix milliseconds in a UUIDv7's first 48 bits. */
const msecsOf = (id: string): number => Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);

describe('ids', () => {
  it('when ids are made in a burst (many in one millisecond, past a pool refill), then each is a v7 UUID, unique, strictly increasing, stamped with the clock', () => {
    const before = Date.now();
    const ids = Array.from({ length: 5_000 }, () => newId()); // ~20 refills of the 256-id pool
    const after = Date.now();
    assert.equal(new Set(ids).size, ids.length, 'unique');
    for (const [index, id] of ids.entries()) {
      assert.ok(isUuid(id), id);
      assert.equal(id[14], '7', `version 7: ${id}`);
      assert.match(id[19] ?? '', /[89ab]/, `RFC 9562 variant: ${id}`);
      const msecs = msecsOf(id);
      // A counter overflow may borrow the next millisecond: at most a few ms ahead of the clock.
      assert.ok(msecs >= before && msecs <= after + 5, `${id} stamped ${msecs}, clock ${before}–${after}`);
      if (index > 0) assert.ok(id > (ids[index - 1] ?? ''), `${id} after ${ids[index - 1]}`);
    }
    const perMillisecond = new Map<number, number>();
    for (const id of ids) perMillisecond.set(msecsOf(id), (perMillisecond.get(msecsOf(id)) ?? 0) + 1);
    assert.ok([...perMillisecond.values()].some((count) => count > 1), 'some millisecond held several ids (the counter path ran)');
  });

  it('when two bursts are made, then their random parts differ (the pool is refilled, not reused)', () => {
    const tail = (id: string) => id.slice(24);
    const first = new Set(Array.from({ length: 600 }, () => tail(newId())));
    const second = Array.from({ length: 600 }, () => tail(newId()));
    assert.equal(second.filter((part) => first.has(part)).length, 0);
  });
});
