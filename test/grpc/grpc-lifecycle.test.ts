// GRPC_PORT: validated with the rest of the configuration; unset means no gRPC listener; and the
// listener closes with the application even while clients keep their connections open.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { createGrpcJsClient, grpc } from './grpc-js-client.js';

describe('GRPC_PORT', () => {
  it('when GRPC_PORT is unset, then there is no gRPC listener; when set, it is the port', () => {
    assert.equal(loadConfig({}).grpcPort, undefined);
    assert.equal(loadConfig({ GRPC_PORT: '50051' }).grpcPort, 50051);
    assert.equal(loadConfig({ GRPC_PORT: '0' }).grpcPort, 0);
  });

  it('when GRPC_PORT is not a port or equals PORT, then the start fails with a line naming GRPC_PORT', () => {
    for (const env of [{ GRPC_PORT: 'grpc' }, { GRPC_PORT: '70000' }, { GRPC_PORT: '3000', PORT: '3000' }]) {
      assert.throws(
        () => loadConfig(env),
        (error: unknown) => error instanceof ConfigError && error.problems.some((problem) => problem.startsWith('GRPC_PORT: ')),
      );
    }
  });
});

describeOnBackends('gRPC listener lifecycle', ({ it, startServer }) => {
  it('when GRPC_PORT is unset, then the application has no gRPC server', async () => {
    const server = await startServer();
    assert.equal(server.app.grpc, undefined);
  });

  it('when the application closes while a client holds its connection open, then close completes and the port stops accepting', async () => {
    const server = await startServer({ GRPC_PORT: '0' });
    assert.ok(server.app.grpc);
    const port = await server.app.grpc.listen(0, '127.0.0.1');
    const client = createGrpcJsClient(`127.0.0.1:${port}`);
    try {
      const { response } = await client.call<{ status: string }>('grpc.health.v1.Health', 'Check', { service: '' });
      assert.equal(response.status, 'SERVING');
      await server.stop();
      const refused = await new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(false);
        });
        socket.once('error', () => resolve(true));
      });
      assert.equal(refused, true, 'nothing listens on the gRPC port after close');
      const after = await client.fail('grpc.health.v1.Health', 'Check', { service: '' }, { deadlineMs: 2_000 });
      assert.ok([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED].includes(after.code));
    } finally {
      client.close();
    }
  });
});
