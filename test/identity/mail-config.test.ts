// Configuration of outgoing mail (SMTP_URL, MAIL_FROM, PUBLIC_URL): parsed and validated at start, one
// problem line per bad variable beginning with its name, and the SMTP password never echoed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';

const BASE = { DATA_DIR: 'memory://' };

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig({ ...BASE, ...env });
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('mail configuration', () => {
  it('when nothing is set, then no SMTP (links are logged) and links point at localhost:PORT', () => {
    const config = loadConfig({ ...BASE, PORT: '8080' });
    assert.deepEqual(config.mail, { smtpUrl: undefined, from: 'Bastion <no-reply@localhost>', publicUrl: 'http://localhost:8080' });
  });

  it('when all three are set, then they are taken, PUBLIC_URL without its trailing slash', () => {
    const config = loadConfig({
      ...BASE,
      SMTP_URL: 'smtps://mailer:s3cret@mail.example.com:465',
      MAIL_FROM: 'Bastion <no-reply@example.com>',
      PUBLIC_URL: 'https://app.example.com/bastion/',
    });
    assert.deepEqual(config.mail, {
      smtpUrl: 'smtps://mailer:s3cret@mail.example.com:465',
      from: 'Bastion <no-reply@example.com>',
      publicUrl: 'https://app.example.com/bastion',
    });
    assert.equal(loadConfig({ ...BASE, MAIL_FROM: 'no-reply@example.com' }).mail.from, 'no-reply@example.com');
  });

  it('when SMTP_URL is not an smtp URL, then one SMTP_URL line that does not repeat the value (it may hold a password)', () => {
    for (const value of ['http://user:hunter2secret@mail.example.com', 'not a url hunter2secret', 'smtp://']) {
      const problems = problemsOf({ SMTP_URL: value, MAIL_FROM: 'a@example.com', PUBLIC_URL: 'https://x.example.com' });
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(problems[0] ?? '', /^SMTP_URL: /);
      assert.doesNotMatch(problems.join('\n'), /hunter2secret/);
    }
  });

  it('when SMTP_URL is set without MAIL_FROM and PUBLIC_URL, then one line for each', () => {
    const problems = problemsOf({ SMTP_URL: 'smtp://mail.example.com:587' });
    assert.deepEqual(problems.map((line) => line.split(':')[0]).sort(), ['MAIL_FROM', 'PUBLIC_URL']);
  });

  it('when MAIL_FROM or PUBLIC_URL is malformed, then one line each, beginning with the name', () => {
    const cases: ReadonlyArray<[string, string]> = [
      ['MAIL_FROM', 'not-an-address'],
      ['MAIL_FROM', 'Bastion <no-reply@example.com'],
      ['MAIL_FROM', 'a@example.com\r\nBcc: victim@example.com'],
      ['PUBLIC_URL', 'ftp://example.com'],
      ['PUBLIC_URL', 'https://example.com/?next=evil'],
      ['PUBLIC_URL', 'https://example.com/#top'],
      ['PUBLIC_URL', 'example.com'],
    ];
    for (const [name, value] of cases) {
      const problems = problemsOf({ [name]: value });
      assert.equal(problems.length, 1, `${name}=${JSON.stringify(value)}: ${problems.join('\n')}`);
      assert.ok(problems[0]?.startsWith(`${name}: `), problems[0]);
    }
  });
});
