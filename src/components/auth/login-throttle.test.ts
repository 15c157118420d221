import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMemoryLoginThrottle, throttleKey } from './login-throttle.js';

describe('login throttle (in-process)', () => {
  const setup = () => {
    let nowMs = 1_000_000;
    const throttle = createMemoryLoginThrottle({ maxFailures: 5, windowSeconds: 900, now: () => nowMs });
    return { throttle, advance: (ms: number) => (nowMs += ms) };
  };

  it('when 5 failures happen within the window, then the key waits until the oldest leaves it', async () => {
    const { throttle, advance } = setup();
    const key = throttleKey('a@example.com', '1.2.3.4');
    for (let attempt = 0; attempt < 5; attempt++) {
      assert.equal(await throttle.retryAfterSeconds(key), 0);
      await throttle.recordFailure(key);
      advance(1_000);
    }
    assert.equal(await throttle.retryAfterSeconds(key), 900 - 5);
    advance((900 - 5) * 1_000);
    assert.equal(await throttle.retryAfterSeconds(key), 0);
  });

  it('when another client or email fails, then this key is unaffected', async () => {
    const { throttle } = setup();
    for (let attempt = 0; attempt < 5; attempt++) await throttle.recordFailure(throttleKey('a@example.com', '1.1.1.1'));
    assert.ok((await throttle.retryAfterSeconds(throttleKey('a@example.com', '1.1.1.1'))) > 0);
    assert.equal(await throttle.retryAfterSeconds(throttleKey('a@example.com', '2.2.2.2')), 0);
    assert.equal(await throttle.retryAfterSeconds(throttleKey('b@example.com', '1.1.1.1')), 0);
  });

  it('when a login succeeds (reset), then the count starts over', async () => {
    const { throttle } = setup();
    const key = throttleKey('a@example.com', '1.1.1.1');
    for (let attempt = 0; attempt < 4; attempt++) await throttle.recordFailure(key);
    await throttle.reset(key);
    for (let attempt = 0; attempt < 4; attempt++) await throttle.recordFailure(key);
    assert.equal(await throttle.retryAfterSeconds(key), 0);
  });
});
