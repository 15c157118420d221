// The contract's API security headers (OWASP REST Security Cheat Sheet), written out here rather than
// imported from the service, so a change to what the service sends is a change a test must agree with.
import assert from 'node:assert/strict';

export const API_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-dns-prefetch-control': 'off',
  'x-permitted-cross-domain-policies': 'none',
};

/** helmet's HTML-page headers that an API answer has no use for, and X-Powered-By. */
export const NOT_ON_API_RESPONSES = ['x-powered-by', 'x-xss-protection', 'x-download-options', 'origin-agent-cluster'] as const;

/**
 * Every problem with an answer's security headers (empty: none). `cacheControl` is what the answer
 * must carry; the service's rule is `no-store` on every answer whose route does not say otherwise.
 */
export function apiHeaderProblems(headers: Headers, cacheControl: string | null = 'no-store'): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(API_SECURITY_HEADERS)) {
    if (headers.get(name) !== value) problems.push(`${name}: ${String(headers.get(name))}, expected ${value}`);
  }
  for (const name of NOT_ON_API_RESPONSES) if (headers.has(name)) problems.push(`${name} must not be sent (${String(headers.get(name))})`);
  if (cacheControl !== null && headers.get('cache-control') !== cacheControl) {
    problems.push(`cache-control: ${String(headers.get('cache-control'))}, expected ${cacheControl}`);
  }
  return problems;
}

export function expectApiHeaders(headers: Headers, what: string, cacheControl: string | null = 'no-store'): void {
  assert.deepEqual(apiHeaderProblems(headers, cacheControl), [], what);
}
