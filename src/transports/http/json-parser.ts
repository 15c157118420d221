// Request bodies: JSON only (415 for anything else, text/plain included), at most 1 MiB, parsed
// without prototype poisoning.
import type { FastifyInstance } from 'fastify';
import secureJson from 'secure-json-parse';
import { DomainError } from '../../platform/errors.js';

export const BODY_LIMIT_BYTES = 1024 * 1024;

function parseJson(_request: unknown, body: string | Buffer, done: (error: Error | null, value?: unknown) => void): void {
  const text = typeof body === 'string' ? body : body.toString('utf8');
  if (text.trim() === '') return done(null, undefined);
  try {
    done(null, secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }));
  } catch {
    done(new DomainError('INVALID_JSON', 'Request body is not valid JSON'), undefined);
  }
}

/** Replaces every content-type parser of `app` with the JSON one. */
export function acceptJsonBodiesOnly(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  const options = { parseAs: 'string' as const, bodyLimit: BODY_LIMIT_BYTES };
  // A string type matches whatever parameters follow (`; charset=utf-8`); the regex takes the
  // structured-syntax types (application/merge-patch+json …), with or without parameters.
  app.addContentTypeParser('application/json', options, parseJson);
  app.addContentTypeParser(/^application\/[\w.+-]+\+json\s*(;.*)?$/i, options, parseJson);
}
