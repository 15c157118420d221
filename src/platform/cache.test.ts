import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLocalCache } from './cache.js';

describe('local read-through cache', () => {
  it('when 50 readers miss one key at once, then the loader runs once', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 1_000 });
    let loads = 0;
    const load = async (key: string) => {
      loads++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return `value of ${key}`;
    };
    const results = await Promise.all(Array.from({ length: 50 }, () => cache.get('k', load)));
    assert.equal(loads, 1);
    assert.ok(results.every((value) => value === 'value of k'));
  });

  it('when a key is absent, then the miss is cached too', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 1_000 });
    let loads = 0;
    const load = async () => {
      loads++;
      return null;
    };
    assert.equal(await cache.get('missing', load), null);
    assert.equal(await cache.get('missing', load), null);
    assert.equal(loads, 1);
  });

  it('when a write deletes the key during a load, then the stale result is not stored', async () => {
    const cache = createLocalCache<string>({ maxEntries: 10, ttlMs: 10_000 });
    let current = 'old';
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slowLoad = async () => {
      const seen = current;
      await gate;
      return seen;
    };
    const pending = cache.get('k', slowLoad);
    current = 'new';
    cache.delete('k');
    release();
    assert.equal(await pending, 'old', 'a reader that started before the write may see the old value');
    let loads = 0;
    assert.equal(await cache.get('k', async () => (loads++, current)), 'new', 'but it was not cached');
    assert.equal(loads, 1);
  });

  it('when the TTL passes, then the value is loaded again', async () => {
    const cache = createLocalCache<number>({ maxEntries: 10, ttlMs: 30 });
    let loads = 0;
    const load = async () => ++loads;
    assert.equal(await cache.get('k', load), 1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(await cache.get('k', load), 2);
  });
});
