// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a request carried, or a
// new one when it carried none (this service starts the trace). Events keep the traceparent of the
// request that caused them, so a consumer can join its work to that trace.
import { randomUUID } from 'node:crypto';

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ALL_ZEROS = /^0+$/;

/** The header if it is a valid traceparent (version 00, or a later one read as 00), else undefined. */
export function parseTraceparent(header: string | readonly string[] | undefined): string | undefined {
  if (typeof header !== 'string' || header.length > 512) return undefined;
  const match = TRACEPARENT.exec(header.trim().toLowerCase());
  if (!match) return undefined;
  const [, version, traceId, parentId, flags, rest] = match;
  if (version === undefined || traceId === undefined || parentId === undefined || flags === undefined) return undefined;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (ALL_ZEROS.test(traceId) || ALL_ZEROS.test(parentId)) return undefined;
  return `00-${traceId}-${parentId}-${flags}`;
}

/**
 * A traceparent for a new trace (sampled). The ids come from randomUUID, which draws from a cached
 * pool of random bytes: randomBytes per request cost ~5 % of a transfer's CPU. A v4 UUID fixes 6 of
 * its 128 bits; the trace id keeps 122 random ones, as W3C's "randomly generated" asks.
 */
export const newTraceparent = (): string => `00-${randomUUID().replaceAll('-', '')}-${randomUUID().slice(19).replace('-', '')}-01`;

/** The request's traceparent: the one it carried if valid, else a new trace. */
export const traceparentOf = (header: string | readonly string[] | undefined): string => parseTraceparent(header) ?? newTraceparent();
