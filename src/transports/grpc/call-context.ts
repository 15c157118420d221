// What every bastion.v1 call needs besides its message: its request id, the client's address (for
// the rate limit and the login throttle), the caller (bearer token in the `authorization` metadata)
// and its deadline.
import { Code, ConnectError, createContextKey, type HandlerContext } from '@connectrpc/connect';
import { bearerTokenOf, type AuthService } from '../../components/auth/index.js';
import type { Principal } from '../../components/access/index.js';
import { unauthenticated } from '../../platform/errors.js';
import { userAgentOf, type RequestOrigin } from '../../platform/request-origin.js';
import { traceparentOf } from '../../platform/trace-context.js';

/** Set per call by the server's interceptor (server.ts) from the x-request-id metadata or anew. */
export const requestIdKey = createContextKey<string>('', { description: 'bastion request id' });
/** The connection's remote address, set by the node adapter's contextValues. */
export const clientIpKey = createContextKey<string>('', { description: 'bastion client address' });

/** The caller, from `authorization: Bearer <token>` through the auth service's one entry point. */
export async function principalOf(auth: AuthService, context: HandlerContext): Promise<Principal> {
  const token = bearerTokenOf(context.requestHeader.get('authorization'));
  if (!token) throw unauthenticated('Authentication required: send the metadata authorization: Bearer <token>');
  const principal = await auth.authenticate(token);
  throwIfPastDeadline(context);
  return principal;
}

/** Stops a call whose deadline passed (or that the client cancelled) before it starts more work. */
export function throwIfPastDeadline(context: HandlerContext): void {
  if (!context.signal.aborted) return;
  const reason: unknown = context.signal.reason;
  throw reason instanceof ConnectError ? reason : new ConnectError('The call was cancelled', Code.Canceled);
}

/**
 * The work of a call, answered as DEADLINE_EXCEEDED (or CANCELED) as soon as the call's signal
 * fires, instead of when the work ends. The services take no signal, so the work itself runs on;
 * what the deadline guarantees is checked before it starts (throwIfPastDeadline).
 */
export function untilDeadline<T>(context: HandlerContext, work: Promise<T>): Promise<T> {
  const signal = context.signal;
  if (signal.aborted) {
    work.catch(() => undefined);
    throwIfPastDeadline(context);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      try {
        throwIfPastDeadline(context);
      } catch (error) {
        reject(error);
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** The call's `traceparent` metadata (W3C trace context), or a new trace: all the money path needs of its origin. */
export const callTraceparent = (context: HandlerContext): string => traceparentOf(context.requestHeader.get('traceparent') ?? undefined);

/**
 * What sessions, audit records and events note of the call, as REST's originOfRequest: the
 * `traceparent` metadata (W3C trace context, or a new trace), the connection's address, the
 * `user-agent` metadata and the call's request id.
 */
export const callOrigin = (context: HandlerContext): RequestOrigin & { readonly traceparent: string } => {
  const userAgent = userAgentOf(context.requestHeader.get('user-agent') ?? undefined);
  return {
    traceparent: callTraceparent(context),
    ip: context.values.get(clientIpKey),
    requestId: context.values.get(requestIdKey),
    ...(userAgent ? { userAgent } : {}),
  };
};
