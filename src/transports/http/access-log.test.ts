// The access log never carries a credential that arrived in a query string.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loggableUrl } from './access-log.js';

describe('access log URLs', () => {
  it('when a query carries a code, state, token, secret, password or key, then its value is redacted and the rest kept', () => {
    assert.equal(loggableUrl('/api/v1/auth/oidc/x/callback?code=abc&state=def&iss=http%3A%2F%2Fidp'), '/api/v1/auth/oidc/x/callback?code=[redacted]&state=[redacted]&iss=http%3A%2F%2Fidp');
    assert.equal(loggableUrl('/a?client_secret=s&newPassword=p&api_key=k&access_token=t'), '/a?client_secret=[redacted]&newPassword=[redacted]&api_key=[redacted]&access_token=[redacted]');
    assert.equal(loggableUrl('/api/v1/accounts?limit=5&cursor=MjAyNg'), '/api/v1/accounts?limit=5&cursor=MjAyNg');
    assert.equal(loggableUrl('/health'), '/health');
  });

  it('when a name is percent-encoded, bracketed or does not decode, then it is matched as the server reads it (or redacted)', () => {
    assert.equal(loggableUrl('/a?%63ode=x&ok=1'), '/a?%63ode=[redacted]&ok=1');
    assert.equal(loggableUrl('/a?code[]=x'), '/a?code[]=[redacted]');
    assert.equal(loggableUrl('/a?%E0%A4%A=x'), '/a?%E0%A4%A=[redacted]');
  });
});
