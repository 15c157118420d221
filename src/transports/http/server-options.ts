// Fastify's options: limits, proxies, request ids, and the failures Fastify would otherwise answer
// in its own shape.
import type { Server } from 'node:http';
import type { FastifyHttpOptions } from 'fastify';
import type { Config } from '../../config.js';
import { answerFrameworkError } from './error-handler.js';
import { BODY_LIMIT_BYTES } from './json-parser.js';
import type { RequestIds } from './request-id.js';
import { answerClientError } from './socket-errors.js';

export function serverOptions(config: Config, requestIds: RequestIds): FastifyHttpOptions<Server> {
  const { trustProxy } = config;
  return {
    // No Fastify logger: it would build a child logger per request just to carry the request id.
    // The service logs through its own loggers, with reqId, where it has something to say.
    logger: false,
    bodyLimit: BODY_LIMIT_BYTES,
    trustProxy: typeof trustProxy === 'number' ? (_address: string, hop: number) => hop < trustProxy : trustProxy,
    genReqId: requestIds.of,
    requestTimeout: 30_000,
    // A request that arrives while closing is refused by the admission hook, in the contract's
    // shape; Fastify's own 503 has another body and none of the headers.
    return503OnClosing: false,
    // A missing Host is refused by the admission hook (Node's own refusal has no body at all).
    http: { requireHostHeader: false },
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: answerClientError(requestIds),
    ajv: { customOptions: { removeAdditional: false } },
  };
}
