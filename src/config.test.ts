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

  it('when API_KEY_RATE_LIMIT_MAX / _WINDOW_MS are unset, then each key may make 600 requests a minute; set, they are kept; zero or text is refused by name', () => {
    const defaults = loadConfig({});
    assert.equal(defaults.apiKeyRateLimitMax, 600);
    assert.equal(defaults.apiKeyRateLimitWindowMs, 60_000);
    const set = loadConfig({ API_KEY_RATE_LIMIT_MAX: '5', API_KEY_RATE_LIMIT_WINDOW_MS: '1000' });
    assert.equal(set.apiKeyRateLimitMax, 5);
    assert.equal(set.apiKeyRateLimitWindowMs, 1_000);
    const problems = problemsOf({ API_KEY_RATE_LIMIT_MAX: '0', API_KEY_RATE_LIMIT_WINDOW_MS: 'soon' });
    assert.equal(problems.length, 2);
    for (const name of ['API_KEY_RATE_LIMIT_MAX', 'API_KEY_RATE_LIMIT_WINDOW_MS']) {
      assert.equal(problems.filter((line) => line.startsWith(`${name}:`)).length, 1, name);
    }
  });

  it('when AUDIT_RETENTION_DAYS is unset, then events are kept 400 days; zero, negative or fractional values are refused by name', () => {
    assert.equal(loadConfig({}).auditRetentionDays, 400);
    assert.equal(loadConfig({ AUDIT_RETENTION_DAYS: '30' }).auditRetentionDays, 30);
    for (const value of ['0', '-5', '1.5', 'forever']) {
      const problems = problemsOf({ AUDIT_RETENTION_DAYS: value });
      assert.equal(problems.length, 1, value);
      assert.ok(problems[0]?.startsWith('AUDIT_RETENTION_DAYS:'), value);
    }
  });

  it('when ACCESS_TOKEN_ALG is unset, EdDSA, ES256 or RS256, then it is kept (EdDSA by default); anything else is one line by name', () => {
    assert.equal(loadConfig({}).accessTokenAlg, 'EdDSA');
    for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) assert.equal(loadConfig({ ACCESS_TOKEN_ALG: alg }).accessTokenAlg, alg);
    for (const bad of ['HS256', 'none', 'es256', 'ES384', 'PS256']) {
      const problems = problemsOf({ ACCESS_TOKEN_ALG: bad });
      assert.equal(problems.length, 1, `${bad}: ${problems.join(' | ')}`);
      assert.ok(problems[0]?.startsWith('ACCESS_TOKEN_ALG:'), problems[0]);
    }
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

  it('when OIDC_PROVIDERS and OIDC_REDIRECT_URIS are valid, then providers get default scopes and loopback issuers may be http', () => {
    assert.deepEqual(loadConfig({}).oidc, { providers: [], redirectUris: [] });
    const oidc = loadConfig({
      OIDC_PROVIDERS: JSON.stringify([
        { name: 'google', issuer: 'https://accounts.google.com', clientId: 'id', clientSecret: 'secret' },
        { name: 'local-dev', issuer: 'http://127.0.0.1:9000', clientId: 'id2', clientSecret: 'secret2', scopes: 'openid email' },
        { name: 'dev2', issuer: 'http://localhost:9001/realms/x', clientId: 'id3', clientSecret: 's3', scopes: ['openid', 'profile'] },
      ]),
      OIDC_REDIRECT_URIS: 'https://app.example.com/login/callback, http://127.0.0.1:5173/cb',
    }).oidc;
    assert.deepEqual(oidc.providers.map((provider) => [provider.name, provider.scopes]), [
      ['google', ['openid', 'email', 'profile']],
      ['local-dev', ['openid', 'email']],
      ['dev2', ['openid', 'profile']],
    ]);
    assert.deepEqual(oidc.redirectUris, ['https://app.example.com/login/callback', 'http://127.0.0.1:5173/cb']);
  });

  it('when OIDC_PROVIDERS or OIDC_REDIRECT_URIS are bad, then each is reported by name, without the client secret', () => {
    const secret = 'do-not-print-this-secret';
    const provider = (overrides: Record<string, unknown>) => ({ name: 'p', issuer: 'https://idp.example.com', clientId: 'id', clientSecret: secret, ...overrides });
    const badProviders: unknown[] = [
      'not json',
      { name: 'not-an-array' },
      [provider({ name: 'Upper' })],
      [provider({ name: 'a' }), provider({ name: 'a' })],
      [provider({ issuer: 'http://idp.example.com' })],
      [provider({ issuer: 'not a url' })],
      [provider({ clientSecret: '' })],
      [provider({ scopes: ['email'] })],
      [provider({ extra: true })],
    ];
    for (const value of badProviders) {
      const raw = typeof value === 'string' ? value : JSON.stringify(value);
      const problems = problemsOf({ OIDC_PROVIDERS: raw, OIDC_REDIRECT_URIS: 'https://app.example.com/cb' });
      assert.equal(problems.length, 1, `${raw}: ${problems.join(' | ')}`);
      assert.ok(problems[0]?.startsWith('OIDC_PROVIDERS:'), problems[0]);
      assert.ok(!problems[0]?.includes(secret), problems[0]);
    }
    for (const uri of ['http://app.example.com/cb', 'https://app.example.com/cb?x=1', 'https://app.example.com/cb#f', 'nope']) {
      const problems = problemsOf({ OIDC_REDIRECT_URIS: uri });
      assert.equal(problems.length, 1, uri);
      assert.ok(problems[0]?.startsWith('OIDC_REDIRECT_URIS:'), problems[0]);
    }
    const missing = problemsOf({ OIDC_PROVIDERS: JSON.stringify([provider({})]) });
    assert.equal(missing.length, 1);
    assert.ok(missing[0]?.startsWith('OIDC_REDIRECT_URIS:'), missing[0]);
  });
});
