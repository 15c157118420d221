// The cross-protocol conformance matrix (issue 11): the same scenarios run through REST, GraphQL and
// gRPC against one server per backend, each asserting the same domain outcome (the same value, or
// the same domain code) and, for a refusal, the protocol's own status as its transport maps that code.
// Every scenario uses fresh users and accounts per protocol; fixtures (users, funded accounts) are
// made over REST, the scenario's calls themselves go through the protocol under test. A last test
// per backend compares the outcomes the three protocols recorded for each scenario.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { generate } from 'otplib';
import { login, loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import { msUntil } from '../helpers/poll.js';
import { createLoopbackClient, randomLoopbackAddress } from '../helpers/loopback.js';
import type { TestServer } from '../helpers/server.js';
import {
  createGraphqlDriver,
  createGrpcDriver,
  createRestDriver,
  PROTOCOLS,
  type GrpcStatusName,
  type Outcome,
  type ProtocolDriver,
  type ProtocolName,
} from './protocols.js';

/**
 * Each domain code's status per protocol, as documented: REST by the contract (../shared/api-contract.md),
 * GraphQL's extensions.status as REST's, gRPC by the transport's mapping (src/transports/grpc/errors.ts).
 * Written out here, not imported, so that a changed mapping fails this suite.
 */
const MAPPED: Readonly<Record<string, { readonly REST: number; readonly GraphQL: number; readonly gRPC: GrpcStatusName }>> = {
  UNAUTHENTICATED: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
  INVALID_CREDENTIALS: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
  INVALID_REFRESH_TOKEN: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
  TOKEN_REUSED: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
  FORBIDDEN: { REST: 403, GraphQL: 403, gRPC: 'PERMISSION_DENIED' },
  NOT_FOUND: { REST: 404, GraphQL: 404, gRPC: 'NOT_FOUND' },
  EMAIL_TAKEN: { REST: 409, GraphQL: 409, gRPC: 'ALREADY_EXISTS' },
  IDEMPOTENCY_IN_PROGRESS: { REST: 409, GraphQL: 409, gRPC: 'ABORTED' },
  INSUFFICIENT_FUNDS: { REST: 422, GraphQL: 422, gRPC: 'FAILED_PRECONDITION' },
  IDEMPOTENCY_KEY_REUSED: { REST: 422, GraphQL: 422, gRPC: 'INVALID_ARGUMENT' },
  RATE_LIMITED: { REST: 429, GraphQL: 429, gRPC: 'RESOURCE_EXHAUSTED' },
  VALIDATION_FAILED: { REST: 400, GraphQL: 400, gRPC: 'INVALID_ARGUMENT' },
  INVALID_MFA_CODE: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
  MFA_REQUIRED: { REST: 401, GraphQL: 401, gRPC: 'UNAUTHENTICATED' },
};

/** The rate-limited server's budget per client: this many calls at once, then RATE_LIMITED. */
const RATE_LIMIT_MAX = 3;
const RATE_LIMIT_WINDOW_MS = 600_000;
const CONCURRENT_REQUESTS = 8;

const PHRASE: Readonly<Record<ProtocolName, string>> = { REST: 'REST', GraphQL: 'GraphQL', gRPC: 'gRPC' };

function valueOf<T>(driver: ProtocolDriver, outcome: Outcome<T>, what: string): T {
  assert.ok(outcome.ok, `${driver.name} ${what}: refused ${outcome.ok ? '' : `${outcome.code} (${String(outcome.status)})`}`);
  return outcome.value;
}

/** A refusal with `code`, and the status this protocol maps `code` to. Returns the code for the matrix. */
function refused<T>(driver: ProtocolDriver, outcome: Outcome<T>, code: string, what: string): string {
  assert.ok(!outcome.ok, `${driver.name} ${what}: expected ${code}, got a value: ${JSON.stringify(outcome.ok ? outcome.value : null)}`);
  assert.equal(outcome.code, code, `${driver.name} ${what}: domain code`);
  const mapped = MAPPED[code];
  assert.ok(mapped, `no mapping written for ${code}`);
  assert.equal(outcome.status, mapped[driver.name], `${driver.name} ${what}: the status ${driver.name} maps ${code} to`);
  return code;
}

describeOnBackends('conformance matrix: REST, GraphQL and gRPC', ({ it, before, startServer, defer }) => {
  let server: TestServer;
  let admin: Session;
  const drivers = new Map<ProtocolName, ProtocolDriver>();
  /** Drivers of the rate-limited server, each from its own client address (the limit is per client, across protocols). */
  const limitedDrivers = new Map<ProtocolName, ProtocolDriver>();
  /** scenario -> protocol -> what it observed (codes and normalized facts), compared across protocols at the end. */
  const observed = new Map<string, Map<ProtocolName, unknown>>();

  before(async () => {
    // Both at once: on PGlite a start is most of this file's time.
    let limited: TestServer;
    [server, limited] = await Promise.all([
      startServer({ GRPC_PORT: '0', REFRESH_REUSE_GRACE_SECONDS: '0' }),
      startServer({ GRPC_PORT: '0', RATE_LIMIT_MAX: String(RATE_LIMIT_MAX), RATE_LIMIT_WINDOW_MS: String(RATE_LIMIT_WINDOW_MS) }),
    ]);
    assert.ok(server.app.grpc, 'GRPC_PORT set: the application has a gRPC server');
    const grpcPort = await server.app.grpc.listen(0, '127.0.0.1');
    drivers.set('REST', createRestDriver(server.client));
    drivers.set('GraphQL', createGraphqlDriver(server.client));
    drivers.set('gRPC', createGrpcDriver(`127.0.0.1:${grpcPort}`));

    assert.ok(limited.app.grpc);
    // The limiter is one budget per client address for every transport: each protocol calls from its
    // own. REST and GraphQL from random addresses outside 127.0.0.0/16, gRPC (grpc-js picks no source
    // address) from 127.0.0.1.
    const limitedGrpcPort = await limited.app.grpc.listen(0, '127.0.0.1');
    const restClient = createLoopbackClient(limited.baseUrl, randomLoopbackAddress());
    let graphqlAddress = randomLoopbackAddress();
    while (graphqlAddress === restClient.localAddress) graphqlAddress = randomLoopbackAddress();
    const graphqlClient = createLoopbackClient(limited.baseUrl, graphqlAddress);
    defer(() => restClient.close());
    defer(() => graphqlClient.close());
    limitedDrivers.set('REST', createRestDriver(restClient));
    limitedDrivers.set('GraphQL', createGraphqlDriver(graphqlClient));
    limitedDrivers.set('gRPC', createGrpcDriver(`127.0.0.1:${limitedGrpcPort}`));
    defer(() => {
      for (const driver of [...drivers.values(), ...limitedDrivers.values()]) driver.close();
    });

    admin = await loginAdmin(server.client);
  });

  const driverOf = (protocol: ProtocolName): ProtocolDriver => {
    const driver = drivers.get(protocol);
    assert.ok(driver);
    return driver;
  };
  const record = (scenario: string, protocol: ProtocolName, facts: unknown): void => {
    let row = observed.get(scenario);
    if (!row) observed.set(scenario, (row = new Map()));
    row.set(protocol, facts);
  };

  // Fixtures over REST: the scenarios below call through the protocol under test.
  const restAccount = async (owner: Session, funds: number): Promise<string> => {
    const created = await server.client.post<{ data: { id: string } }>('/api/v1/accounts', { currency: 'USD' }, { token: owner.accessToken });
    assert.equal(created.status, 201, created.text);
    if (funds > 0) {
      const deposit = await server.client.post(`/api/v1/accounts/${created.body.data.id}/deposits`, { amount: funds }, {
        token: admin.accessToken,
        headers: { 'idempotency-key': randomUUID() },
      });
      assert.equal(deposit.status, 201, deposit.text);
    }
    return created.body.data.id;
  };
  const restUser = async (id: string) => {
    const response = await server.client.get<{ data: unknown }>(`/api/v1/users/${id}`, { token: admin.accessToken });
    assert.equal(response.status, 200, response.text);
    return response.body.data;
  };
  /** A user who confirmed TOTP (over REST), with the recovery codes the confirmation answered. */
  const userWithSecondFactor = async () => {
    const session = await registerAndLogin(server.client);
    const enrolment = await server.client.post<{ data: { secret: string } }>('/api/v1/auth/mfa/totp', undefined, { token: session.accessToken });
    assert.equal(enrolment.status, 201, enrolment.text);
    const code = await generate({ secret: enrolment.body.data.secret });
    const confirmed = await server.client.post<{ data: { recoveryCodes: string[] } }>('/api/v1/auth/mfa/totp/confirm', { code }, { token: session.accessToken });
    assert.equal(confirmed.status, 200, confirmed.text);
    return { ...session, recoveryCodes: confirmed.body.data.recoveryCodes };
  };
  /** The session an access token belongs to, as REST lists it. */
  const currentSession = async (accessToken: string) => {
    const response = await server.client.get<{ data: Array<{ current: boolean; userAgent: string | null; ip: string | null }> }>('/api/v1/auth/sessions', {
      token: accessToken,
    });
    assert.equal(response.status, 200, response.text);
    const current = response.body.data.find((session) => session.current);
    assert.ok(current, response.text);
    return current;
  };
  const balanceOf = async (driver: ProtocolDriver, token: string, accountId: string): Promise<string> =>
    valueOf(driver, await driver.getAccount(token, accountId), 'read the balance').balance;

  interface Scenario {
    readonly name: string;
    readonly when: string;
    readonly then: string;
    /** Runs the scenario through `driver`; returns what the matrix compares across protocols. */
    readonly run: (driver: ProtocolDriver, protocol: ProtocolName) => Promise<unknown>;
  }

  const scenarios: Scenario[] = [
    {
      name: 'register',
      when: 'a user registers, then registers the same email again',
      then: 'the user comes back as REST shows it, and the second is EMAIL_TAKEN',
      async run(driver) {
        const email = uniqueEmail('conformance');
        const user = valueOf(driver, await driver.register({ email: `  ${email.toUpperCase()} `, name: 'Matrix User', password: 'matrix-password-1' }), 'register');
        assert.equal(user.email, email, 'the email is trimmed and lower-cased');
        assert.equal(user.name, 'Matrix User');
        assert.equal(user.role, 'user');
        assert.deepEqual(user, await restUser(user.id), 'the same user REST reads');
        const again = refused(driver, await driver.register({ email, name: 'Again', password: 'matrix-password-1' }), 'EMAIL_TAKEN', 'register again');
        return { role: user.role, again };
      },
    },
    {
      name: 'login',
      when: 'a user logs in, with the right password, a wrong one and an unknown email',
      then: 'a Bearer pair for that user whose access token works, and INVALID_CREDENTIALS for both failures',
      async run(driver) {
        const { user, password } = await registerAndLogin(server.client);
        const login = valueOf(driver, await driver.login(user.email, password), 'login');
        assert.equal(login.tokenType, 'Bearer');
        assert.ok(login.expiresIn > 0);
        assert.ok(login.refreshToken.length > 0);
        assert.deepEqual(login.user, await restUser(user.id));
        const me = valueOf(driver, await driver.me(login.accessToken), 'me with the new access token');
        assert.equal(me.id, user.id);
        const wrong = refused(driver, await driver.login(user.email, `${password}-wrong`), 'INVALID_CREDENTIALS', 'wrong password');
        const unknown = refused(driver, await driver.login(uniqueEmail('nobody'), password), 'INVALID_CREDENTIALS', 'unknown email');
        return { tokenType: login.tokenType, expiresIn: login.expiresIn, wrong, unknown };
      },
    },
    {
      name: 'refresh reuse',
      when: 'a refresh token is used twice',
      then: 'the second use is TOKEN_REUSED and the login is revoked: its newest refresh token is INVALID_REFRESH_TOKEN',
      async run(driver) {
        const { user, password } = await registerAndLogin(server.client);
        const login = valueOf(driver, await driver.login(user.email, password), 'login');
        const rotated = valueOf(driver, await driver.refresh(login.refreshToken), 'first refresh');
        assert.notEqual(rotated.refreshToken, login.refreshToken);
        assert.equal(rotated.tokenType, 'Bearer');
        const reused = refused(driver, await driver.refresh(login.refreshToken), 'TOKEN_REUSED', 'second use of the spent token');
        const newest = refused(driver, await driver.refresh(rotated.refreshToken), 'INVALID_REFRESH_TOKEN', 'the newest token after the reuse');
        return { reused, newest };
      },
    },
    {
      name: 'forbidden read',
      when: "a user reads another user's account, transfer and profile, or deposits (admin only)",
      then: 'each read is NOT_FOUND as if absent, the deposit FORBIDDEN, and nothing moved',
      async run(driver) {
        const alice = await registerAndLogin(server.client);
        const bob = await registerAndLogin(server.client);
        const aliceAccount = await restAccount(alice, 500);
        const bobAccount = await restAccount(bob, 0);
        const sent = await server.client.post<{ data: { id: string } }>(
          '/api/v1/transfers',
          { fromAccountId: aliceAccount, toAccountId: bobAccount, amount: 100 },
          { token: alice.accessToken, headers: { 'idempotency-key': randomUUID() } },
        );
        assert.equal(sent.status, 201, sent.text);
        // Carol is party to neither.
        const carol = await registerAndLogin(server.client);
        const account = refused(driver, await driver.getAccount(carol.accessToken, aliceAccount), 'NOT_FOUND', "another user's account");
        const transfer = refused(driver, await driver.getTransfer(carol.accessToken, sent.body.data.id), 'NOT_FOUND', "another user's transfer");
        const history = refused(driver, await driver.listAccountTransfers(carol.accessToken, aliceAccount), 'NOT_FOUND', "another user's history");
        const profile = refused(driver, await driver.getUser(carol.accessToken, alice.user.id), 'NOT_FOUND', "another user's profile");
        const deposit = refused(driver, await driver.deposit(carol.accessToken, bobAccount, 1, randomUUID()), 'FORBIDDEN', 'a deposit by a user');
        // The parties themselves read it.
        assert.equal(valueOf(driver, await driver.getTransfer(bob.accessToken, sent.body.data.id), 'the payee reads it').amount, '100');
        assert.equal(await balanceOf(driver, bob.accessToken, bobAccount), '100');
        return { account, transfer, history, profile, deposit };
      },
    },
    {
      name: 'not found',
      when: 'an absent account, transfer, user or payee is named (even by the admin)',
      then: 'each is NOT_FOUND and nothing moved',
      async run(driver) {
        const owner = await registerAndLogin(server.client);
        const from = await restAccount(owner, 100);
        const absent = randomUUID();
        const account = refused(driver, await driver.getAccount(admin.accessToken, absent), 'NOT_FOUND', 'an absent account');
        const transfer = refused(driver, await driver.getTransfer(admin.accessToken, absent), 'NOT_FOUND', 'an absent transfer');
        const user = refused(driver, await driver.getUser(admin.accessToken, absent), 'NOT_FOUND', 'an absent user');
        const payee = refused(
          driver,
          await driver.transfer(owner.accessToken, { fromAccountId: from, toAccountId: absent, amount: 10 }, randomUUID()),
          'NOT_FOUND',
          'a transfer to an absent account',
        );
        assert.equal(await balanceOf(driver, owner.accessToken, from), '100');
        return { account, transfer, user, payee };
      },
    },
    {
      name: 'login with a second factor',
      when: 'a user with TOTP logs in',
      then: 'the login is a challenge; a wrong code is INVALID_MFA_CODE, a recovery code starts a session that records the client, and the spent challenge is UNAUTHENTICATED',
      async run(driver) {
        const user = await userWithSecondFactor();
        const first = valueOf(driver, await driver.beginLogin(user.user.email, user.password), 'begin the login');
        assert.equal(first.kind, 'challenge', JSON.stringify(first));
        // The one-step login of GraphQL and gRPC cannot carry a challenge: it refuses (REST has none).
        const oneStep = driver.name === 'REST' ? 'MFA_REQUIRED' : refused(driver, await driver.login(user.user.email, user.password), 'MFA_REQUIRED', 'a one-step login');
        if (first.kind !== 'challenge') return {};
        const wrong = refused(driver, await driver.verifyMfa(first.mfaToken, '000000'), 'INVALID_MFA_CODE', 'a wrong code');
        const login = valueOf(driver, await driver.verifyMfa(first.mfaToken, user.recoveryCodes[0]!), 'a recovery code');
        assert.equal(login.user.id, user.user.id);
        assert.equal(valueOf(driver, await driver.me(login.accessToken), 'me with the new token').id, user.user.id);
        const spent = refused(driver, await driver.verifyMfa(first.mfaToken, user.recoveryCodes[1]!), 'UNAUTHENTICATED', 'a spent challenge');
        // Sessions and audit records note the client whatever the protocol.
        const session = await currentSession(login.accessToken);
        assert.equal(session.ip, '127.0.0.1');
        assert.ok(session.userAgent && session.userAgent.length > 0, JSON.stringify(session));
        return { challenge: { kind: first.kind, expiresIn: first.expiresIn }, oneStep, wrong, spent, tokenType: login.tokenType };
      },
    },
    {
      name: 'sessions',
      when: 'a user logged in twice lists their sessions and ends the other one',
      then: 'both are listed with the current one marked; the ended one stops within 1 s; another user\'s session is NOT_FOUND',
      async run(driver) {
        const first = await registerAndLogin(server.client);
        const second = await login(server.client, first.user.email, first.password);
        const listed = valueOf(driver, await driver.listSessions(second.accessToken), 'list the sessions');
        assert.equal(listed.length, 2, JSON.stringify(listed));
        assert.deepEqual(listed.map((session) => session.current), [true, false], 'newest first, the caller\'s marked');
        const other = listed[1]!;
        assert.equal(valueOf(driver, await driver.revokeSession(second.accessToken, other.id), 'end the other session'), true);
        const stoppedWithin = await msUntil(performance.now(), async () => !(await driver.me(first.accessToken)).ok, 1_000);
        assert.ok(stoppedWithin !== undefined, 'the ended session\'s access token still works after 1 s');
        const stopped = refused(driver, await driver.me(first.accessToken), 'UNAUTHENTICATED', 'the ended session\'s token');
        const stranger = await registerAndLogin(server.client);
        const foreign = refused(driver, await driver.revokeSession(stranger.accessToken, listed[0]!.id), 'NOT_FOUND', 'someone else\'s session');
        assert.equal(valueOf(driver, await driver.me(second.accessToken), 'the current session').id, first.user.id);
        return { listed: listed.length, stopped, foreign, after: valueOf(driver, await driver.listSessions(second.accessToken), 'list again').length };
      },
    },
    {
      name: 'API keys',
      when: 'a user creates a key, uses it, lists and revokes it',
      then: 'the secret is shown once and acts within its scopes; the list never shows it; a revoked key stops within 1 s',
      async run(driver) {
        const owner = await registerAndLogin(server.client);
        const { apiKey, secret } = valueOf(driver, await driver.createApiKey(owner.accessToken, { name: 'ci', scopes: ['users:read'] }), 'create a key');
        assert.match(secret, /^bsk_[A-Za-z0-9_-]{43}$/);
        assert.ok(secret.startsWith(apiKey.prefix), 'the prefix is the start of the secret');
        assert.equal(valueOf(driver, await driver.me(secret), 'me with the key').id, owner.user.id);
        const outOfScope = refused(driver, await driver.createAccount(secret, 'USD'), 'FORBIDDEN', 'a write with a read-only key');
        const duplicateScope = refused(driver, await driver.createApiKey(owner.accessToken, { name: 'x', scopes: ['users:write', 'users:read', 'ledger:read', 'ledger:write', 'ledger:write'] }), 'VALIDATION_FAILED', 'a scope twice');
        const listed = valueOf(driver, await driver.listApiKeys(owner.accessToken), 'list the keys');
        assert.deepEqual(listed, [apiKey]);
        assert.ok(!JSON.stringify(listed).includes(secret.slice(12)), 'the list never carries the secret');
        const stranger = await registerAndLogin(server.client);
        const foreign = refused(driver, await driver.revokeApiKey(stranger.accessToken, apiKey.id), 'NOT_FOUND', 'someone else\'s key');
        assert.equal(valueOf(driver, await driver.revokeApiKey(owner.accessToken, apiKey.id), 'revoke the key'), true);
        const stoppedWithin = await msUntil(performance.now(), async () => !(await driver.me(secret)).ok, 1_000);
        assert.ok(stoppedWithin !== undefined, 'the revoked key still works after 1 s');
        const revoked = refused(driver, await driver.me(secret), 'UNAUTHENTICATED', 'a revoked key');
        return { scopes: apiKey.scopes, outOfScope, duplicateScope, foreign, revoked, after: valueOf(driver, await driver.listApiKeys(owner.accessToken), 'list again').length };
      },
    },
    {
      name: 'transfer',
      when: 'accounts are opened, funded and money is transferred',
      then: 'the transfer is posted and both balances, the transfer and the history read back through the protocol agree',
      async run(driver) {
        const payer = await registerAndLogin(server.client);
        const payee = await registerAndLogin(server.client);
        const from = valueOf(driver, await driver.createAccount(payer.accessToken, 'USD'), 'open the payer account');
        const to = valueOf(driver, await driver.createAccount(payee.accessToken, 'USD'), 'open the payee account');
        assert.deepEqual([from.balance, from.ownerId, from.currency], ['0', payer.user.id, 'USD']);
        const deposit = valueOf(driver, await driver.deposit(admin.accessToken, from.id, 1_000, randomUUID()), 'deposit');
        assert.equal(deposit.transfer.toAccountId, from.id);
        const { transfer, replayed } = valueOf(
          driver,
          await driver.transfer(payer.accessToken, { fromAccountId: from.id, toAccountId: to.id, amount: 300, description: 'rent' }, randomUUID()),
          'transfer',
        );
        assert.equal(replayed, false);
        assert.deepEqual(
          { ...transfer, id: 'id' },
          { id: 'id', fromAccountId: from.id, toAccountId: to.id, amount: '300', currency: 'USD', status: 'posted', description: 'rent' },
        );
        assert.equal(await balanceOf(driver, payer.accessToken, from.id), '700');
        assert.equal(await balanceOf(driver, payee.accessToken, to.id), '300');
        assert.deepEqual(valueOf(driver, await driver.getTransfer(payee.accessToken, transfer.id), 'read the transfer'), transfer);
        const history = valueOf(driver, await driver.listAccountTransfers(payer.accessToken, from.id), 'history');
        assert.deepEqual(history.map(({ id }) => id), [transfer.id, deposit.transfer.id], 'newest first');
        return { status: transfer.status, amount: transfer.amount, balances: ['700', '300'], history: history.length };
      },
    },
    {
      name: 'insufficient funds',
      when: 'a transfer asks for more than the balance',
      then: 'it is INSUFFICIENT_FUNDS, and neither balance nor history changed',
      async run(driver) {
        const payer = await registerAndLogin(server.client);
        const payee = await registerAndLogin(server.client);
        const from = await restAccount(payer, 100);
        const to = await restAccount(payee, 0);
        const code = refused(
          driver,
          await driver.transfer(payer.accessToken, { fromAccountId: from, toAccountId: to, amount: 101 }, randomUUID()),
          'INSUFFICIENT_FUNDS',
          'an uncovered transfer',
        );
        assert.equal(await balanceOf(driver, payer.accessToken, from), '100');
        assert.equal(await balanceOf(driver, payee.accessToken, to), '0');
        assert.equal(valueOf(driver, await driver.listAccountTransfers(payee.accessToken, to), 'payee history').length, 0);
        return { code };
      },
    },
    {
      name: 'idempotent replay',
      when: 'a transfer is sent twice with one key, then once more with that key and another body',
      then: 'the second is a replay of the same transfer, one transfer exists, money moved once, and the third is IDEMPOTENCY_KEY_REUSED',
      async run(driver) {
        const payer = await registerAndLogin(server.client);
        const payee = await registerAndLogin(server.client);
        const from = await restAccount(payer, 1_000);
        const to = await restAccount(payee, 0);
        const key = randomUUID();
        const body = { fromAccountId: from, toAccountId: to, amount: 250 };
        const first = valueOf(driver, await driver.transfer(payer.accessToken, body, key), 'first');
        const second = valueOf(driver, await driver.transfer(payer.accessToken, body, key), 'replay');
        assert.equal(first.replayed, false);
        assert.equal(second.replayed, true);
        assert.deepEqual(second.transfer, first.transfer);
        const reused = refused(driver, await driver.transfer(payer.accessToken, { ...body, amount: 251 }, key), 'IDEMPOTENCY_KEY_REUSED', 'the key with another body');
        const history = valueOf(driver, await driver.listAccountTransfers(payee.accessToken, to), 'payee history');
        assert.deepEqual(history.map(({ id }) => id), [first.transfer.id], 'one transfer');
        assert.equal(await balanceOf(driver, payer.accessToken, from), '750');
        assert.equal(await balanceOf(driver, payee.accessToken, to), '250');
        return { replayed: [first.replayed, second.replayed], reused, transfers: history.length };
      },
    },
    {
      name: 'concurrent idempotent requests',
      when: `${CONCURRENT_REQUESTS} transfers with one key are sent at once`,
      then: 'exactly one transfer is created, and every answer is that transfer or IDEMPOTENCY_IN_PROGRESS',
      async run(driver) {
        const payer = await registerAndLogin(server.client);
        const payee = await registerAndLogin(server.client);
        const from = await restAccount(payer, 1_000);
        const to = await restAccount(payee, 0);
        const key = randomUUID();
        const answers = await Promise.all(
          Array.from({ length: CONCURRENT_REQUESTS }, () => driver.transfer(payer.accessToken, { fromAccountId: from, toAccountId: to, amount: 40 }, key)),
        );
        const created = answers.flatMap((answer) => (answer.ok ? [answer.value] : []));
        for (const answer of answers) {
          if (!answer.ok) refused(driver, answer, 'IDEMPOTENCY_IN_PROGRESS', 'a concurrent request with the key');
        }
        assert.ok(created.length >= 1, 'the request that ran answers with its transfer');
        const ids = new Set(created.map(({ transfer }) => transfer.id));
        assert.equal(ids.size, 1, `one transfer, never another: ${[...ids].join(', ')}`);
        const originals = created.filter(({ replayed }) => !replayed);
        assert.equal(originals.length, 1, 'exactly one answer is not a replay');
        for (const { transfer } of created) assert.deepEqual(transfer, originals[0]?.transfer, 'a replay is the first answer');
        const history = valueOf(driver, await driver.listAccountTransfers(payer.accessToken, from), 'payer history');
        // The deposit, then the one transfer.
        assert.deepEqual(history.map(({ id }) => id).slice(0, -1), [...ids]);
        assert.equal(history.length, 2);
        assert.equal(await balanceOf(driver, payer.accessToken, from), '960');
        assert.equal(await balanceOf(driver, payee.accessToken, to), '40');
        // How many were IN_PROGRESS rather than replays depends on timing: not a fact to compare.
        return { transfers: ids.size, originals: 1, balances: ['960', '40'] };
      },
    },
    {
      name: 'rate limited',
      when: `a client goes past its budget (${RATE_LIMIT_MAX} calls)`,
      then: 'the calls within it are answered (UNAUTHENTICATED, no token), and the next is RATE_LIMITED with a retry-after hint',
      async run(_driver, protocol) {
        const driver = limitedDrivers.get(protocol);
        assert.ok(driver);
        const within: string[] = [];
        for (let call = 0; call < RATE_LIMIT_MAX; call += 1) within.push(refused(driver, await driver.me(), 'UNAUTHENTICATED', `call ${call + 1} within the budget`));
        const over = await driver.me();
        const code = refused(driver, over, 'RATE_LIMITED', 'the call over the budget');
        assert.ok(!over.ok);
        // GCRA: one call comes back every window / max (here 200 s); the hint is whole seconds within that.
        const hint = over.retryAfterSeconds;
        assert.ok(hint !== undefined && Number.isInteger(hint) && hint >= 1 && hint <= RATE_LIMIT_WINDOW_MS / 1000 / RATE_LIMIT_MAX, `${protocol}: retry-after hint ${hint}`);
        return { within, over: code, retryAfterHint: true };
      },
    },
  ];

  for (const scenario of scenarios) {
    for (const protocol of PROTOCOLS) {
      it(`when ${scenario.when} through ${PHRASE[protocol]}, then ${scenario.then}`, async () => {
        record(scenario.name, protocol, await scenario.run(driverOf(protocol), protocol));
      });
    }
  }

  it('when every scenario has run through REST, GraphQL and gRPC, then the three recorded the same domain outcome for each', () => {
    const mismatches: string[] = [];
    for (const scenario of scenarios) {
      const row = observed.get(scenario.name);
      const rest = row?.get('REST');
      for (const protocol of PROTOCOLS) {
        const facts = row?.get(protocol);
        if (facts === undefined) mismatches.push(`${scenario.name}: no outcome through ${protocol} (its test did not run or did not pass)`);
        else if (protocol !== 'REST' && rest !== undefined) {
          try {
            assert.deepEqual(facts, rest);
          } catch {
            mismatches.push(`${scenario.name}: ${protocol} ${JSON.stringify(facts)} vs REST ${JSON.stringify(rest)}`);
          }
        }
      }
    }
    assert.deepEqual(mismatches, []);
  });
});
