// grpc.health.v1.Health, the standard health checking protocol (what Kubernetes' grpc probes and
// grpc_health_probe ask): SERVING while the database answers and the service is not shutting down.
// The empty service name means the whole server; the bastion.v1 services are named individually.
import { Code, ConnectError, type ServiceImpl } from '@connectrpc/connect';
import { HealthCheckResponse_ServingStatus as ServingStatus, type Health } from './gen/grpc/health/v1/health_pb.js';

const WATCH_INTERVAL_MS = 1_000;

export interface HealthDependencies {
  /** The service names a client may ask about ('' included). */
  readonly services: readonly string[];
  /** Whether the service can serve: readiness (the database), and not shutting down. */
  readonly isReady: () => Promise<boolean>;
  /** Ends Watch streams when the server closes. */
  readonly shutdownSignal: AbortSignal;
}

export function healthServiceImpl({ services, isReady, shutdownSignal }: HealthDependencies): ServiceImpl<typeof Health> {
  const statusNow = async () => ((await isReady().catch(() => false)) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  return {
    async check(request) {
      if (!services.includes(request.service)) throw new ConnectError(`Unknown service "${request.service}"`, Code.NotFound);
      return { status: await statusNow() };
    },

    async list() {
      const status = await statusNow();
      return { statuses: Object.fromEntries(services.map((service) => [service, { status }])) };
    },

    // As the protocol says: the current status at once, then each change, until the client leaves.
    async *watch(request, context) {
      if (!services.includes(request.service)) {
        yield { status: ServingStatus.SERVICE_UNKNOWN };
        return;
      }
      let last: ServingStatus | undefined;
      while (!context.signal.aborted && !shutdownSignal.aborted) {
        const status = await statusNow();
        if (status !== last) {
          last = status;
          yield { status };
        }
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            context.signal.removeEventListener('abort', done);
            shutdownSignal.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, WATCH_INTERVAL_MS);
          context.signal.addEventListener('abort', done, { once: true });
          shutdownSignal.addEventListener('abort', done, { once: true });
        });
      }
      if (shutdownSignal.aborted && last !== ServingStatus.NOT_SERVING) yield { status: ServingStatus.NOT_SERVING };
    },
  };
}
