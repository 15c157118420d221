// The caller on an HTTP request: the principal the auth component's `authenticate` hook sets, and the
// preValidation hook that refuses an operation the caller's role never allows. Part of the access
// component, so that the platform's HTTP kit knows nothing of principals or permissions.
import type { FastifyRequest } from 'fastify';
import { unauthenticated } from '../../platform/errors.js';
import { authorize, type Permission, type Principal } from './permissions.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined;
  }
}

/** The caller, set by `authenticate`; a route that reads it without that onRequest hook is a bug. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw unauthenticated();
  return request.principal;
}

/**
 * preValidation hook for operations a role may never perform: answers 403 before the body is even
 * validated. The use case checks again (with ownership), for the transports that skip HTTP.
 */
export function requirePermission(permission: Permission) {
  return async (request: FastifyRequest): Promise<void> => {
    authorize(principalOf(request), permission);
  };
}
