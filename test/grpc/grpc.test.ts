// The gRPC transport end to end: the real service on a real database, called by an independent
// client (@grpc/grpc-js with stubs from the committed .proto files), and once by Connect's own
// clients (gRPC and Connect protocols) to show that one handler speaks each.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { randomUUID } from 'node:crypto';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { ErrorDetailSchema } from '../../src/transports/grpc/gen/bastion/v1/common_pb.js';
import { CreateTransferRequestSchema } from '../../src/transports/grpc/gen/bastion/v1/ledger_service_pb.js';
import { UserService } from '../../src/transports/grpc/gen/bastion/v1/user_service_pb.js';
import { loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { createGrpcJsClient, grpc, reflect, type GrpcJsClient } from './grpc-js-client.js';

interface ProtoUser {
  id: string;
  email: string;
  name: string;
  role: string;
}
interface ProtoAccount {
  id: string;
  balance: string;
  availableBalance: string;
  currency: string;
}
interface ProtoTransfer {
  id: string;
  amount: string;
  status: string;
  fromAccountId: string;
  toAccountId: string;
}

async function startGrpc(startServer: (env?: Record<string, string>) => Promise<TestServer>, env: Record<string, string> = {}) {
  const server = await startServer({ GRPC_PORT: '0', ...env });
  assert.ok(server.app.grpc, 'GRPC_PORT set: the application has a gRPC server');
  const port = await server.app.grpc.listen(0, '127.0.0.1');
  const address = `127.0.0.1:${port}`;
  return { server, address, baseUrl: `http://${address}` };
}

describeOnBackends('gRPC transport', ({ it, before, startServer, defer }) => {
  let server: TestServer;
  let address: string;
  let baseUrl: string;
  let client: GrpcJsClient;
  let admin: Session;

  before(async () => {
    ({ server, address, baseUrl } = await startGrpc(startServer, { REFRESH_REUSE_GRACE_SECONDS: '0' }));
    client = createGrpcJsClient(address);
    defer(() => client.close());
    admin = await loginAdmin(server.client);
  });

  /** A user (registered over REST) with an account holding `funds` minor units (deposited by the admin). */
  async function userWithAccount(funds: number): Promise<{ session: Session; accountId: string }> {
    const session = await registerAndLogin(server.client);
    const { response } = await client.call<{ account: ProtoAccount }>('bastion.v1.LedgerService', 'CreateAccount', { currency: 'USD' }, { token: session.accessToken });
    if (funds > 0) {
      await client.call('bastion.v1.LedgerService', 'Deposit', { accountId: response.account.id, amount: String(funds), idempotencyKey: randomUUID() }, { token: admin.accessToken });
    }
    return { session, accountId: response.account.id };
  }

  const balanceOf = async (accountId: string, token: string): Promise<string> =>
    (await client.call<{ account: ProtoAccount }>('bastion.v1.LedgerService', 'GetAccount', { id: accountId }, { token })).response.account.balance;

  it('when a user registers, logs in and refreshes over gRPC, then each step answers as REST does, and a spent refresh token is TOKEN_REUSED', async () => {
    const email = uniqueEmail('grpc');
    const registered = await client.call<{ user: ProtoUser }>('bastion.v1.AuthService', 'Register', { email: `  ${email.toUpperCase()} `, name: 'Grpc User', password: 'grpc-password-1' });
    assert.equal(registered.response.user.email, email);
    assert.equal(registered.response.user.role, 'ROLE_USER');

    const taken = await client.fail('bastion.v1.AuthService', 'Register', { email, name: 'Again', password: 'grpc-password-1' });
    assert.equal(taken.code, grpc.status.ALREADY_EXISTS);
    assert.equal(taken.domainCode, 'EMAIL_TAKEN');

    const { response: login } = await client.call<{ accessToken: string; refreshToken: string; tokenType: string; expiresIn: number; user: ProtoUser }>(
      'bastion.v1.AuthService', 'Login', { email, password: 'grpc-password-1' });
    assert.equal(login.tokenType, 'Bearer');
    assert.equal(login.user.id, registered.response.user.id);

    const { response: me } = await client.call<{ user: ProtoUser }>('bastion.v1.UserService', 'GetMe', {}, { token: login.accessToken });
    assert.equal(me.user.id, registered.response.user.id);

    const { response: refreshed } = await client.call<{ refreshToken: string; accessToken: string }>('bastion.v1.AuthService', 'Refresh', { refreshToken: login.refreshToken });
    assert.notEqual(refreshed.refreshToken, login.refreshToken);
    const reused = await client.fail('bastion.v1.AuthService', 'Refresh', { refreshToken: login.refreshToken });
    assert.equal(reused.code, grpc.status.UNAUTHENTICATED);
    assert.equal(reused.domainCode, 'TOKEN_REUSED');

    const wrong = await client.fail('bastion.v1.AuthService', 'Login', { email, password: 'not-the-password' });
    assert.equal(wrong.code, grpc.status.UNAUTHENTICATED);
    assert.equal(wrong.domainCode, 'INVALID_CREDENTIALS');
  });

  it('when a call has no token or a bad one, then it is UNAUTHENTICATED with the domain code in the trailers and no internals', async () => {
    for (const token of [undefined, 'not-a-jwt']) {
      const error = await client.fail('bastion.v1.UserService', 'GetMe', {}, token ? { token } : {});
      assert.equal(error.code, grpc.status.UNAUTHENTICATED);
      assert.equal(error.domainCode, 'UNAUTHENTICATED');
      assert.ok(error.requestId);
      assert.doesNotMatch(error.details, /at |\.ts|sql/i);
    }
  });

  it('when a user reads another user or an admin-only list, then NOT_FOUND and PERMISSION_DENIED, as REST 404 and 403', async () => {
    const alice = await registerAndLogin(server.client);
    const bob = await registerAndLogin(server.client);
    const hidden = await client.fail('bastion.v1.UserService', 'GetUser', { id: alice.user.id }, { token: bob.accessToken });
    assert.equal(hidden.code, grpc.status.NOT_FOUND);
    assert.equal(hidden.domainCode, 'NOT_FOUND');
    const denied = await client.fail('bastion.v1.UserService', 'ListUsers', {}, { token: bob.accessToken });
    assert.equal(denied.code, grpc.status.PERMISSION_DENIED);
    assert.equal(denied.domainCode, 'FORBIDDEN');
    // The admin sees both; the list's defaults are REST's.
    const { response } = await client.call<{ users: ProtoUser[]; meta: { page: number; limit: number; total: string } }>(
      'bastion.v1.UserService', 'ListUsers', {}, { token: admin.accessToken });
    assert.equal(response.meta.page, 1);
    assert.equal(response.meta.limit, 10);
    const own = await client.call<{ user: ProtoUser }>('bastion.v1.UserService', 'GetUser', { id: alice.user.id }, { token: alice.accessToken });
    assert.equal(own.response.user.email, alice.user.email);
  });

  it('when VerifyMfa gets an empty or oversized token or code, then INVALID_ARGUMENT; an unknown token is UNAUTHENTICATED', async () => {
    for (const request of [{ mfaToken: '', code: '123456' }, { mfaToken: 'x', code: '' }, { mfaToken: 'x'.repeat(513), code: '123456' }, { mfaToken: 'x', code: '1'.repeat(65) }]) {
      const refused = await client.fail('bastion.v1.AuthService', 'VerifyMfa', request);
      assert.equal(refused.code, grpc.status.INVALID_ARGUMENT, JSON.stringify(request));
      assert.equal(refused.domainCode, 'VALIDATION_FAILED');
    }
    const unknown = await client.fail('bastion.v1.AuthService', 'VerifyMfa', { mfaToken: 'not-a-challenge', code: '123456' });
    assert.equal(unknown.code, grpc.status.UNAUTHENTICATED);
    assert.equal(unknown.domainCode, 'UNAUTHENTICATED');
  });

  it('when an account does not exist or an id is malformed, then NOT_FOUND, or INVALID_ARGUMENT naming the proto field', async () => {
    const user = await registerAndLogin(server.client);
    const missing = await client.fail('bastion.v1.LedgerService', 'GetAccount', { id: randomUUID() }, { token: user.accessToken });
    assert.equal(missing.code, grpc.status.NOT_FOUND);
    assert.equal(missing.domainCode, 'NOT_FOUND');
    const malformed = await client.fail('bastion.v1.LedgerService', 'ListAccountTransfers', { accountId: 'nope' }, { token: user.accessToken });
    assert.equal(malformed.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(malformed.domainCode, 'VALIDATION_FAILED');
  });

  it('when money moves over gRPC, then balances change exactly once, insufficient funds is FAILED_PRECONDITION, and a missing key is INVALID_ARGUMENT', async () => {
    const from = await userWithAccount(1_000);
    const to = await userWithAccount(0);
    const { response } = await client.call<{ transfer: ProtoTransfer }>(
      'bastion.v1.LedgerService', 'CreateTransfer',
      { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '300', idempotencyKey: randomUUID() },
      { token: from.session.accessToken });
    assert.equal(response.transfer.status, 'TRANSFER_STATUS_POSTED');
    assert.equal(response.transfer.amount, '300');
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '700');
    assert.equal(await balanceOf(to.accountId, to.session.accessToken), '300');
    // The same transfer as REST shows it.
    const rest = await server.client.get<{ data: { amount: number } }>(`/api/v1/transfers/${response.transfer.id}`, { token: from.session.accessToken });
    assert.equal(rest.body.data.amount, 300);

    const poor = await client.fail('bastion.v1.LedgerService', 'CreateTransfer',
      { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '701', idempotencyKey: randomUUID() },
      { token: from.session.accessToken });
    assert.equal(poor.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(poor.domainCode, 'INSUFFICIENT_FUNDS');

    const noKey = await client.fail('bastion.v1.LedgerService', 'CreateTransfer',
      { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '1' }, { token: from.session.accessToken });
    assert.equal(noKey.code, grpc.status.INVALID_ARGUMENT);
    const tooBig = await client.fail('bastion.v1.LedgerService', 'Deposit',
      { accountId: to.accountId, amount: '9007199254740992', idempotencyKey: randomUUID() }, { token: admin.accessToken });
    assert.equal(tooBig.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '700');
  });

  it('when a transfer is retried with its key (over gRPC, or first over REST), then the first outcome is replayed and money moves once; another body is IDEMPOTENCY_KEY_REUSED', async () => {
    const from = await userWithAccount(1_000);
    const to = await userWithAccount(0);
    const request = { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '100', idempotencyKey: randomUUID() };
    const first = await client.call<{ transfer: ProtoTransfer }>('bastion.v1.LedgerService', 'CreateTransfer', request, { token: from.session.accessToken });
    assert.deepEqual(first.headers.get('idempotent-replayed'), []);
    const again = await client.call<{ transfer: ProtoTransfer }>('bastion.v1.LedgerService', 'CreateTransfer', request, { token: from.session.accessToken });
    assert.equal(again.response.transfer.id, first.response.transfer.id);
    assert.deepEqual(again.headers.get('idempotent-replayed'), ['true']);
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '900');

    const reused = await client.fail('bastion.v1.LedgerService', 'CreateTransfer', { ...request, amount: '101' }, { token: from.session.accessToken });
    assert.equal(reused.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(reused.domainCode, 'IDEMPOTENCY_KEY_REUSED');

    // REST first, then gRPC with the same key and operation: one request, replayed.
    const key = randomUUID();
    const viaRest = await server.client.post<{ data: { id: string } }>(
      '/api/v1/transfers', { fromAccountId: from.accountId, toAccountId: to.accountId, amount: 50 },
      { token: from.session.accessToken, headers: { 'idempotency-key': key } });
    assert.equal(viaRest.status, 201);
    const viaGrpc = await client.call<{ transfer: ProtoTransfer }>('bastion.v1.LedgerService', 'CreateTransfer',
      { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '50', idempotencyKey: key }, { token: from.session.accessToken });
    assert.equal(viaGrpc.response.transfer.id, viaRest.body.data.id);
    assert.deepEqual(viaGrpc.headers.get('idempotent-replayed'), ['true']);
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '850');

    // A refusal is a kept outcome too: replayed with the first request's id.
    const refusedKey = randomUUID();
    const refused = await client.fail('bastion.v1.LedgerService', 'CreateTransfer',
      { ...request, amount: '5000', idempotencyKey: refusedKey }, { token: from.session.accessToken, metadata: { 'x-request-id': 'first-try' } });
    assert.equal(refused.domainCode, 'INSUFFICIENT_FUNDS');
    assert.equal(refused.requestId, 'first-try');
    const refusedAgain = await client.fail('bastion.v1.LedgerService', 'CreateTransfer',
      { ...request, amount: '5000', idempotencyKey: refusedKey }, { token: from.session.accessToken, metadata: { 'x-request-id': 'second-try' } });
    assert.equal(refusedAgain.domainCode, 'INSUFFICIENT_FUNDS');
    assert.equal(refusedAgain.requestId, 'first-try');
  });

  it('when a call\'s deadline is too short, then it is DEADLINE_EXCEEDED', async () => {
    const error = await client.fail('bastion.v1.AuthService', 'Login', { email: uniqueEmail(), password: 'whatever-password' }, { deadlineMs: 1 });
    assert.equal(error.code, grpc.status.DEADLINE_EXCEEDED);
  });

  it('when a transfer\'s message arrives after its deadline, then the server answers DEADLINE_EXCEEDED and moves no money (its key stays unused)', async () => {
    const from = await userWithAccount(1_000);
    const to = await userWithAccount(0);
    const key = randomUUID();
    const message = toBinary(
      CreateTransferRequestSchema,
      create(CreateTransferRequestSchema, { fromAccountId: from.accountId, toAccountId: to.accountId, amount: 100n, idempotencyKey: key }),
    );
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    const session = http2.connect(baseUrl);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/bastion.v1.LedgerService/CreateTransfer',
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': '50m',
        authorization: `Bearer ${from.session.accessToken}`,
      });
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => {
        stream.on('trailers', resolve);
        stream.on('response', (headers) => {
          if (headers['grpc-status'] !== undefined) resolve(headers);
        });
      });
      stream.resume();
      await new Promise((resolve) => setTimeout(resolve, 300));
      stream.end(frame);
      const received = await trailers;
      assert.equal(received['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
    } finally {
      session.close();
    }
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '1000');
    const fresh = await client.call('bastion.v1.LedgerService', 'CreateTransfer',
      { fromAccountId: from.accountId, toAccountId: to.accountId, amount: '100', idempotencyKey: key }, { token: from.session.accessToken });
    assert.deepEqual(fresh.headers.get('idempotent-replayed'), []);
    assert.equal(await balanceOf(from.accountId, from.session.accessToken), '900');
  });

  /** One raw HTTP/2 call on the port: its status (headers of a trailers-only answer, or trailers) and :status. */
  async function rawCall(headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<{ status: number | undefined; grpcStatus: string | undefined }> {
    const session = http2.connect(baseUrl);
    try {
      const stream = session.request({ ':method': 'POST', te: 'trailers', ...headers });
      return await new Promise((resolve, reject) => {
        let status: number | undefined;
        stream.on('response', (responseHeaders) => {
          status = responseHeaders[':status'];
          if (responseHeaders['grpc-status'] !== undefined) resolve({ status, grpcStatus: String(responseHeaders['grpc-status']) });
        });
        stream.on('trailers', (trailers) => resolve({ status, grpcStatus: trailers['grpc-status'] === undefined ? undefined : String(trailers['grpc-status']) }));
        stream.on('end', () => resolve({ status, grpcStatus: undefined }));
        stream.on('error', reject);
        stream.resume();
        stream.end(body);
      });
    } finally {
      session.close();
    }
  }

  it('when a message is not protobuf, then INVALID_ARGUMENT (not INTERNAL); when an HTTP/2 call is not gRPC, then a refusal, not a hang', async () => {
    // A frame whose payload is a field with wire type 7 (no such type): no protobuf parser accepts it.
    // GetMe, whose empty request would otherwise succeed with this token.
    const garbage = Buffer.from([0, 0, 0, 0, 3, 0x0f, 0xff, 0xff]);
    const bad = await rawCall({ ':path': '/bastion.v1.UserService/GetMe', 'content-type': 'application/grpc', authorization: `Bearer ${admin.accessToken}` }, garbage);
    assert.equal(bad.grpcStatus, String(grpc.status.INVALID_ARGUMENT));
    const json = await rawCall({ ':path': '/bastion.v1.UserService/GetMe', 'content-type': 'application/json' }, Buffer.from('{}'));
    assert.ok(json.status === 415 || (json.grpcStatus !== undefined && json.grpcStatus !== '0'), JSON.stringify(json));
  });

  it('when a connection speaks neither HTTP/2 nor HTTP/1.1, then it gets a 400 and is closed', async () => {
    const net = await import('node:net');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(baseUrl).port), '127.0.0.1', () => socket.write('HELLO THERE\r\n\r\n'));
      let received = '';
      socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
      socket.on('close', () => resolve(received));
      socket.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 400/);
  });

  it('when the standard health service is asked, then the server and each bastion.v1 service are SERVING, an unknown one NOT_FOUND', async () => {
    for (const service of ['', 'bastion.v1.LedgerService', 'bastion.v1.UserService', 'bastion.v1.AuthService']) {
      const { response } = await client.call<{ status: string }>('grpc.health.v1.Health', 'Check', { service });
      assert.equal(response.status, 'SERVING', service);
    }
    const unknown = await client.fail('grpc.health.v1.Health', 'Check', { service: 'nope.v1.Nothing' });
    assert.equal(unknown.code, grpc.status.NOT_FOUND);
  });

  it('when a client explores the server by reflection (as grpcurl does), then it lists the services and gets the descriptors to call them', async () => {
    const [listed, described, missing] = await reflect(address, [
      { listServices: '*' },
      { fileContainingSymbol: 'bastion.v1.LedgerService.CreateTransfer' },
      { fileContainingSymbol: 'bastion.v1.Nothing' },
    ]);
    const names = ((listed?.['listServicesResponse'] as { service: Array<{ name: string }> }).service).map((service) => service.name);
    for (const name of ['bastion.v1.UserService', 'bastion.v1.AuthService', 'bastion.v1.LedgerService', 'bastion.v1.ApiKeyService', 'grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection']) {
      assert.ok(names.includes(name), name);
    }
    const files = (described?.['fileDescriptorResponse'] as { fileDescriptorProto: Buffer[] }).fileDescriptorProto.map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes));
    assert.equal(files[0]?.name, 'bastion/v1/ledger_service.proto');
    assert.ok(files[0]?.service[0]?.method.some((method) => method.name === 'CreateTransfer'));
    // Its imports come along, so a client can resolve every type.
    const fileNames = files.map((file) => file.name);
    assert.ok(fileNames.includes('bastion/v1/common.proto'));
    assert.ok(fileNames.includes('google/protobuf/timestamp.proto'));
    assert.equal((missing?.['errorResponse'] as { errorCode: number }).errorCode, grpc.status.NOT_FOUND);
  });

  it('when Connect\'s own clients call the same port over gRPC (HTTP/2), gRPC-Web and the Connect protocol (HTTP/1.1), then all three answer from the same services', async () => {
    const viaGrpc = createClient(UserService, createGrpcTransport({ baseUrl }));
    const viaGrpcWeb = createClient(UserService, createGrpcWebTransport({ baseUrl, httpVersion: '1.1' }));
    const viaConnect = createClient(UserService, createConnectTransport({ baseUrl, httpVersion: '1.1' }));
    const headers = { authorization: `Bearer ${admin.accessToken}` };
    assert.equal((await viaGrpc.getMe({}, { headers })).user?.id, admin.user.id);
    assert.equal((await viaGrpcWeb.getMe({}, { headers })).user?.id, admin.user.id);
    assert.equal((await viaConnect.getMe({}, { headers })).user?.id, admin.user.id);
    const webError = await viaGrpcWeb.getUser({ id: randomUUID() }, { headers }).then(
      () => assert.fail('expected NOT_FOUND over gRPC-Web'),
      (thrown: unknown) => ConnectError.from(thrown),
    );
    assert.equal(webError.code, Code.NotFound);
    // The domain code travels in the error details too (google.rpc.Status details).
    const error = await viaGrpc.getUser({ id: randomUUID() }, { headers }).then(
      () => assert.fail('expected NOT_FOUND'),
      (thrown: unknown) => ConnectError.from(thrown),
    );
    assert.equal(error.code, Code.NotFound);
    const [detail] = error.findDetails(ErrorDetailSchema);
    assert.equal(detail?.code, 'NOT_FOUND');
    assert.ok(detail?.requestId);
  });
});

describeOnBackends('gRPC transport, limits', ({ it, startServer, defer }) => {
  it('when a client passes the rate limit across REST and gRPC, then gRPC answers RESOURCE_EXHAUSTED RATE_LIMITED with retry-after', async () => {
    const { server, address } = await startGrpc(startServer, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' });
    const client = createGrpcJsClient(address);
    defer(() => client.close());
    // One budget per client address: two REST requests and one gRPC call use it up.
    await server.client.get('/api/v1/users/me');
    await server.client.get('/api/v1/users/me');
    const allowed = await client.fail('bastion.v1.UserService', 'GetMe', {});
    assert.equal(allowed.domainCode, 'UNAUTHENTICATED');
    const limited = await client.fail('bastion.v1.UserService', 'GetMe', {});
    assert.equal(limited.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(limited.domainCode, 'RATE_LIMITED');
    assert.ok(Number(limited.metadata.get('retry-after')[0]) >= 1);
    // Health checks are not rate limited (as REST's /health).
    const { response } = await client.call<{ status: string }>('grpc.health.v1.Health', 'Check', { service: '' });
    assert.equal(response.status, 'SERVING');
  });

  it('when wrong logins for one email come over REST and gRPC, then the sixth is throttled (RESOURCE_EXHAUSTED) even with the right password', async () => {
    const { server, address } = await startGrpc(startServer);
    const client = createGrpcJsClient(address);
    defer(() => client.close());
    const user = await registerAndLogin(server.client);
    for (let attempt = 0; attempt < 3; attempt++) {
      const response = await server.client.post('/api/v1/auth/login', { email: user.user.email, password: 'wrong-password' });
      assert.equal(response.status, 401);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await client.fail('bastion.v1.AuthService', 'Login', { email: user.user.email, password: 'wrong-password' });
      assert.equal(error.domainCode, 'INVALID_CREDENTIALS');
    }
    const throttled = await client.fail('bastion.v1.AuthService', 'Login', { email: user.user.email, password: user.password });
    assert.equal(throttled.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(throttled.domainCode, 'RATE_LIMITED');
  });
});
