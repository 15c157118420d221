import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError, loadConfig } from './config.js';

const problemsOf = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env);
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return [...error.problems];
  }
};

describe('config', () => {
  it('when nothing is set, then the contract defaults apply', () => {
    const config = loadConfig({});
    assert.equal(config.port, 3000);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.dataDir, './data');
    assert.equal(config.rateLimitMax, 100);
    assert.equal(config.rateLimitWindowMs, 900_000);
    assert.equal(config.accessTokenTtlSeconds, 900);
    assert.equal(config.refreshTokenTtlSeconds, 2_592_000);
    assert.equal(config.refreshReuseGraceSeconds, 10);
    assert.equal(config.trustProxy, false);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.databaseUrl, undefined);
    assert.deepEqual(config.allowedOrigins, []);
    assert.ok(Object.isFrozen(config));
  });

  it('when several variables are bad, then there is one line per variable, each starting with its name', () => {
    const problems = problemsOf({ PORT: 'abc', RATE_LIMIT_MAX: '-1', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud' });
    assert.equal(problems.length, 4);
    for (const name of ['PORT', 'RATE_LIMIT_MAX', 'DATABASE_URL', 'LOG_LEVEL']) {
      assert.equal(problems.filter((line) => line.startsWith(`${name}:`)).length, 1, name);
    }
  });

  it('when an integer variable gets any non-integer text, then it is rejected by name', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1 }).filter((text) => text.trim() !== '' && !/^\s*-?\d+\s*$/.test(text)),
        (text) => {
          const problems = problemsOf({ ACCESS_TOKEN_TTL: text });
          assert.equal(problems.length, 1);
          assert.ok(problems[0]?.startsWith('ACCESS_TOKEN_TTL:'));
        },
      ),
    );
  });

  it('when TRUST_PROXY is set, then it follows fastify trustProxy syntax', () => {
    assert.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true);
    assert.equal(loadConfig({ TRUST_PROXY: '2' }).trustProxy, 2);
    assert.equal(loadConfig({ TRUST_PROXY: '10.0.0.0/8,127.0.0.1' }).trustProxy, '10.0.0.0/8,127.0.0.1');
  });

  it('when only one bootstrap admin variable is set, then the other is reported', () => {
    const problems = problemsOf({ BOOTSTRAP_ADMIN_EMAIL: 'admin@example.com' });
    assert.ok(problems.some((line) => line.startsWith('BOOTSTRAP_ADMIN_PASSWORD:')));
  });

  it('when KEY_ENCRYPTION_SECRET is shorter than 32 characters, then it is refused; 32 or more is kept as given', () => {
    assert.ok(problemsOf({ KEY_ENCRYPTION_SECRET: 'x'.repeat(31) }).some((line) => line.startsWith('KEY_ENCRYPTION_SECRET:')));
    assert.equal(loadConfig({ KEY_ENCRYPTION_SECRET: 'x'.repeat(32) }).keyEncryptionSecret, 'x'.repeat(32));
    assert.equal(loadConfig({}).keyEncryptionSecret, undefined);
  });

  it('when events are configured, then unknown publishers, a missing broker URL and a publish timeout over half the lease are each reported by name', () => {
    const problems = problemsOf({ EVENTS_PUBLISHERS: 'nats,kafka,rabbitmq', EVENTS_PUBLISH_TIMEOUT_MS: '6000' });
    for (const name of ['EVENTS_PUBLISHERS:', 'NATS_URL:', 'AMQP_URL:', 'EVENTS_PUBLISH_TIMEOUT_MS:']) {
      assert.ok(problems.some((line) => line.startsWith(name)), `${name} in ${problems.join(' | ')}`);
    }
    const events = loadConfig({ EVENTS_PUBLISHERS: 'redis, nats,redis', REDIS_URL: 'redis://127.0.0.1:6379', NATS_URL: 'nats://127.0.0.1:4222' }).events;
    assert.deepEqual(events.publishers, ['redis', 'nats']);
    assert.equal(events.natsStream, 'BASTION_EVENTS');
    assert.equal(events.rabbitmqExchange, 'bastion.events');
    assert.equal(events.redisStream, 'bastion:events');
    assert.equal(loadConfig({}).events.outbox, true);
  });
});
