// Invalid configuration stops the REAL process at start: exit code 1, and on stderr one line per bad
// variable, each beginning with the variable's name (contract, "Running"). Nothing is started.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { freePort, request, runCli } from './service-process.js';

interface Case {
  readonly name: string;
  readonly env: Record<string, string>;
  /** The variables that must each get exactly one line. */
  readonly bad: readonly string[];
}

const cases: readonly Case[] = [
  { name: 'PORT=abc', env: { PORT: 'abc' }, bad: ['PORT'] },
  { name: 'PORT=70000', env: { PORT: '70000' }, bad: ['PORT'] },
  { name: 'RATE_LIMIT_MAX=-1', env: { RATE_LIMIT_MAX: '-1' }, bad: ['RATE_LIMIT_MAX'] },
  { name: 'RATE_LIMIT_MAX=1.5', env: { RATE_LIMIT_MAX: '1.5' }, bad: ['RATE_LIMIT_MAX'] },
  {
    name: 'API_KEY_RATE_LIMIT_MAX=0, API_KEY_RATE_LIMIT_WINDOW_MS=x',
    env: { API_KEY_RATE_LIMIT_MAX: '0', API_KEY_RATE_LIMIT_WINDOW_MS: 'x' },
    bad: ['API_KEY_RATE_LIMIT_MAX', 'API_KEY_RATE_LIMIT_WINDOW_MS'],
  },
  { name: 'DATABASE_URL=mysql://x', env: { DATABASE_URL: 'mysql://x' }, bad: ['DATABASE_URL'] },
  { name: 'LOG_LEVEL=loud', env: { LOG_LEVEL: 'loud' }, bad: ['LOG_LEVEL'] },
  { name: 'REDIS_URL=http://x', env: { REDIS_URL: 'http://x' }, bad: ['REDIS_URL'] },
  { name: 'ACCESS_TOKEN_ALG=HS256', env: { ACCESS_TOKEN_ALG: 'HS256' }, bad: ['ACCESS_TOKEN_ALG'] },
  {
    name: 'OIDC_PROVIDERS with a plain-http issuer, OIDC_REDIRECT_URIS with a query',
    env: {
      OIDC_PROVIDERS: '[{"name":"corp","issuer":"http://idp.example.com","clientId":"id","clientSecret":"s"}]',
      OIDC_REDIRECT_URIS: 'https://app.example.com/cb?next=1',
    },
    bad: ['OIDC_PROVIDERS', 'OIDC_REDIRECT_URIS'],
  },
  { name: 'ALLOWED_ORIGINS with a path', env: { ALLOWED_ORIGINS: 'https://ok.example.com,https://bad.example.com/path' }, bad: ['ALLOWED_ORIGINS'] },
  {
    name: 'BOOTSTRAP_ADMIN_PASSWORD without a valid email, too short',
    env: { BOOTSTRAP_ADMIN_EMAIL: 'not-an-email', BOOTSTRAP_ADMIN_PASSWORD: 'short' },
    bad: ['BOOTSTRAP_ADMIN_EMAIL', 'BOOTSTRAP_ADMIN_PASSWORD'],
  },
  {
    name: 'several at once',
    env: { PORT: 'abc', RATE_LIMIT_MAX: '-1', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud', ACCESS_TOKEN_TTL: '0' },
    bad: ['PORT', 'RATE_LIMIT_MAX', 'DATABASE_URL', 'LOG_LEVEL', 'ACCESS_TOKEN_TTL'],
  },
];

// Each case is a separate node process (tsx start-up dominates), so a few run side by side.
describe('configuration errors stop the real process', { concurrency: 3 }, () => {
  for (const testCase of cases) {
    it(`when started with ${testCase.name}, then it exits 1 with one stderr line per bad variable`, { timeout: 60_000 }, async () => {
      const result = await runCli(['serve'], { DATA_DIR: 'memory://', ...testCase.env });
      const context = `\n--- stderr ---\n${result.stderr}\n--- stdout ---\n${result.stdout}`;
      assert.deepEqual({ code: result.code, signal: result.signal }, { code: 1, signal: null }, context);

      const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
      assert.equal(lines.length, testCase.bad.length, `expected exactly one line per bad variable${context}`);
      for (const variable of testCase.bad) {
        const own = lines.filter((line) => line.startsWith(`${variable}:`) || line.startsWith(`${variable} `));
        assert.equal(own.length, 1, `${variable} must have exactly one line starting with its name${context}`);
      }
      // Nothing about internals: no stack trace, no "Error:" dump.
      assert.doesNotMatch(result.stderr, /\n\s+at |Error:/, context);
      // It never got as far as logging (or serving).
      assert.equal(result.stdout, '', context);
    });
  }

  it('when the configuration is invalid, then nothing listens on the requested port', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const result = await runCli(['serve'], { DATA_DIR: 'memory://', PORT: String(port), LOG_LEVEL: 'loud' });
    assert.equal(result.code, 1, result.stderr);
    const probe = await request(port, 'GET', '/health', { timeoutMs: 2_000 });
    assert.equal(probe.error, 'ECONNREFUSED');
  });

  it('when a CLI command other than serve is given a bad configuration, then it fails the same way', { timeout: 60_000 }, async () => {
    const result = await runCli(['migrate'], { DATABASE_URL: 'mysql://x' });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr.trim(), /^DATABASE_URL: /);
  });
});
