// The response headers every answer carries, errors included: the API security set and X-Request-Id.
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * The API set of the OWASP REST Security Cheat Sheet (the contract, "Conventions"), sent on every
 * answer, errors included: JSON is never rendered, framed or shared cross-origin, and no answer is
 * cached (`no-store`: token and personal-data bodies are most of the API; a route whose answer is
 * public, the JWKS, sets its own Cache-Control). /docs replaces the CSP with the HTML policy
 * Swagger UI needs (see docs.ts).
 */
export const API_SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-dns-prefetch-control': 'off',
  'x-permitted-cross-domain-policies': 'none',
  'cache-control': 'no-store',
});

/** The first onRequest hook: whatever answers the request later, these headers are already set. */
export function securityHeadersHook(request: FastifyRequest, reply: FastifyReply, done: () => void): void {
  void reply.headers(API_SECURITY_HEADERS).header('x-request-id', request.id);
  done();
}
