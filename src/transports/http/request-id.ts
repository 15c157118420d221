// Request ids: the client's X-Request-Id when it is safe to echo back, otherwise a new one.
import type { IncomingMessage } from 'node:http';
import { newId } from '../../platform/ids.js';

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

export interface RequestIds {
  /** A new id: a random per-process prefix and a counter, far cheaper than a random UUID per request. */
  next(): string;
  /** The id of a request: its own X-Request-Id if well-formed, else a new one. */
  of(raw: IncomingMessage): string;
}

/** Ids unique across instances for every practical purpose (the prefix is random per process). */
export function createRequestIds(): RequestIds {
  const prefix = newId().slice(-12);
  let counter = 0;
  const next = () => `${prefix}-${(++counter).toString(36)}`;
  return {
    next,
    of(raw) {
      const header = raw.headers['x-request-id'];
      return typeof header === 'string' && REQUEST_ID_PATTERN.test(header) ? header : next();
    },
  };
}
