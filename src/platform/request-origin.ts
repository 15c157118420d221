// Where a change came from: the request's trace, the client's address and user agent, and the
// request id. Transports build it once per request and pass it to the use cases, which put the
// trace on events and the rest on audit records and sessions.
export interface RequestOrigin {
  /** W3C traceparent of the request (events carry it). */
  readonly traceparent?: string;
  /** The client's address (the forwarded one only when TRUST_PROXY trusts the proxy). */
  readonly ip?: string;
  readonly userAgent?: string;
  readonly requestId?: string;
}

/** User agents are kept to this many characters (they are stored with sessions and audit records). */
export const MAX_USER_AGENT_LENGTH = 512;

/** A header's user agent as stored: at most MAX_USER_AGENT_LENGTH characters, undefined when absent. */
export function userAgentOf(header: string | readonly string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return typeof value === 'string' && value.length > 0 ? value.slice(0, MAX_USER_AGENT_LENGTH) : undefined;
}
