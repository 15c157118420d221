// GraphQL at /graphql over the real service: every query and mutation's happy path and its main
// refusals, with the codes (and HTTP statuses in extensions.status) REST gives the same cases.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { ACCOUNT_FIELDS, dataOf, errorOf, gql, TRANSFER_FIELDS, USER_FIELDS } from './gql.js';

interface Account {
  id: string;
  ownerId: string | null;
  currency: string;
  balance: string;
  availableBalance: string;
}
interface Transfer {
  id: string;
  fromAccountId: string;
  toAccountId: string;
  amount: number;
  status: string;
}
interface MoneyPayload {
  transfer: Transfer;
  replayed: boolean;
  requestId: string;
}

const key = (): string => `key-${randomUUID()}`;

const CREATE_ACCOUNT = `mutation ($input: CreateAccountInput!) { createAccount(input: $input) { ${ACCOUNT_FIELDS} } }`;
const DEPOSIT = `mutation ($accountId: ID!, $amount: SafeInt!, $key: String!) {
  deposit(accountId: $accountId, amount: $amount, idempotencyKey: $key) { transfer { ${TRANSFER_FIELDS} } replayed requestId } }`;
const WITHDRAW = `mutation ($accountId: ID!, $amount: SafeInt!, $key: String!) {
  withdraw(accountId: $accountId, amount: $amount, idempotencyKey: $key) { transfer { ${TRANSFER_FIELDS} } replayed requestId } }`;
const TRANSFER = `mutation ($input: TransferInput!, $key: String!) {
  transfer(input: $input, idempotencyKey: $key) { transfer { ${TRANSFER_FIELDS} } replayed requestId } }`;
const ACCOUNT = `query ($id: ID!) { account(id: $id) { ${ACCOUNT_FIELDS} owner { ${USER_FIELDS} } } }`;

describeOnBackends('graphql operations', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;
  let alice: Session & { password: string };
  let bob: Session & { password: string };

  const openAccount = async (as: Session, currency = 'USD'): Promise<Account> =>
    dataOf(await gql<{ createAccount: Account }>(server.client, CREATE_ACCOUNT, { input: { currency } }, { token: as.accessToken })).createAccount;
  const deposit = async (accountId: string, amount: number): Promise<Transfer> =>
    dataOf(await gql<{ deposit: MoneyPayload }>(server.client, DEPOSIT, { accountId, amount, key: key() }, { token: admin.accessToken })).deposit.transfer;

  before(async () => {
    server = await startServer();
    admin = await loginAdmin(server.client);
    alice = await registerAndLogin(server.client);
    bob = await registerAndLogin(server.client);
  });

  it('when me is asked with a token, then it is the caller, as REST /users/me gives it', async () => {
    const data = dataOf(await gql<{ me: unknown }>(server.client, `{ me { ${USER_FIELDS} } }`, {}, { token: alice.accessToken }));
    const rest = await server.client.get<{ data: unknown }>('/api/v1/users/me', { token: alice.accessToken });
    assert.deepEqual(data.me, rest.body.data);
  });

  it('when no token (or a bad one) is sent to a protected field, then it is UNAUTHENTICATED (401) and the field is null', async () => {
    const none = await gql(server.client, '{ me { id } }');
    assert.equal(errorOf(none, 'UNAUTHENTICATED', 401).path?.[0], 'me');
    assert.deepEqual(none.body.data, { me: null });
    errorOf(await gql(server.client, '{ me { id } }', {}, { token: 'not-a-jwt' }), 'UNAUTHENTICATED', 401);
  });

  it('when a user reads another user, then it is NOT_FOUND (404); themselves and an admin read fine', async () => {
    errorOf(await gql(server.client, 'query ($id: ID!) { user(id: $id) { id } }', { id: bob.user.id }, { token: alice.accessToken }), 'NOT_FOUND', 404);
    const self = dataOf(await gql<{ user: { id: string } }>(server.client, 'query ($id: ID!) { user(id: $id) { id } }', { id: alice.user.id }, { token: alice.accessToken }));
    assert.equal(self.user.id, alice.user.id);
    const byAdmin = dataOf(await gql<{ user: { email: string } }>(server.client, 'query ($id: ID!) { user(id: $id) { email } }', { id: bob.user.id }, { token: admin.accessToken }));
    assert.equal(byAdmin.user.email, bob.user.email);
  });

  it('when verifyMfa gets an empty or oversized token or code, then VALIDATION_FAILED (400) naming it; an unknown token is UNAUTHENTICATED', async () => {
    const verify = (input: Record<string, string>) =>
      gql(server.client, 'mutation ($input: VerifyMfaInput!) { verifyMfa(input: $input) { accessToken } }', { input });
    for (const [input, path] of [
      [{ mfaToken: '', code: '123456' }, 'mfaToken'],
      [{ mfaToken: 'x', code: '' }, 'code'],
      [{ mfaToken: 'x', code: '1'.repeat(65) }, 'code'],
    ] as const) {
      const error = errorOf(await verify(input), 'VALIDATION_FAILED', 400);
      assert.deepEqual(error.extensions.errors?.map((fieldError) => fieldError.path), [path]);
    }
    errorOf(await verify({ mfaToken: 'not-a-challenge', code: '123456' }), 'UNAUTHENTICATED', 401);
  });

  it('when an id is malformed, then it is VALIDATION_FAILED (400) naming the field', async () => {
    const error = errorOf(await gql(server.client, 'query ($id: ID!) { user(id: $id) { id } }', { id: 'nope' }, { token: admin.accessToken }), 'VALIDATION_FAILED', 400);
    assert.deepEqual(error.extensions.errors?.map((fieldError) => fieldError.path), ['id']);
  });

  it('when users is asked, then an admin gets a page and a user is FORBIDDEN (403); a bad limit is 400', async () => {
    const page = dataOf(await gql<{ users: { nodes: unknown[]; pageInfo: { page: number; limit: number; total: number } } }>(
      server.client, `{ users(limit: 2) { nodes { ${USER_FIELDS} } pageInfo { page limit total totalPages } } }`, {}, { token: admin.accessToken }));
    assert.equal(page.users.nodes.length, 2);
    assert.equal(page.users.pageInfo.limit, 2);
    assert.ok(page.users.pageInfo.total >= 3);
    errorOf(await gql(server.client, '{ users { nodes { id } } }', {}, { token: alice.accessToken }), 'FORBIDDEN', 403);
    const bad = errorOf(await gql(server.client, '{ users(limit: 101) { nodes { id } } }', {}, { token: admin.accessToken }), 'VALIDATION_FAILED', 400);
    assert.deepEqual(bad.extensions.errors?.map((fieldError) => fieldError.path), ['limit']);
  });

  it('when register, login, refresh and logout run, then each behaves as on REST (an unknown or revoked refresh token is INVALID_REFRESH_TOKEN)', async () => {
    const email = uniqueEmail('gql');
    const registered = dataOf(await gql<{ register: { email: string; role: string } }>(
      server.client, `mutation ($input: RegisterInput!) { register(input: $input) { ${USER_FIELDS} } }`,
      { input: { email: `  ${email.toUpperCase()} `, name: 'Gee', password: 'password-123' } }));
    assert.equal(registered.register.email, email);
    assert.equal(registered.register.role, 'user');
    errorOf(await gql(server.client, 'mutation ($input: RegisterInput!) { register(input: $input) { id } }',
      { input: { email, name: 'Gee', password: 'password-123' } }), 'EMAIL_TAKEN', 409);
    const short = errorOf(await gql(server.client, 'mutation ($input: RegisterInput!) { register(input: $input) { id } }',
      { input: { email: uniqueEmail(), name: 'Gee', password: 'short' } }), 'VALIDATION_FAILED', 400);
    assert.deepEqual(short.extensions.errors?.map((fieldError) => fieldError.path), ['password']);

    const LOGIN = 'mutation ($input: LoginInput!) { login(input: $input) { accessToken refreshToken tokenType expiresIn user { id } } }';
    errorOf(await gql(server.client, LOGIN, { input: { email, password: 'wrong-password' } }), 'INVALID_CREDENTIALS', 401);
    const login = dataOf(await gql<{ login: { accessToken: string; refreshToken: string; tokenType: string } }>(
      server.client, LOGIN, { input: { email, password: 'password-123' } })).login;
    assert.equal(login.tokenType, 'Bearer');
    const me = dataOf(await gql<{ me: { email: string } }>(server.client, '{ me { email } }', {}, { token: login.accessToken }));
    assert.equal(me.me.email, email);

    const REFRESH = 'mutation ($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken tokenType expiresIn } }';
    const rotated = dataOf(await gql<{ refresh: { refreshToken: string } }>(server.client, REFRESH, { t: login.refreshToken })).refresh;
    assert.notEqual(rotated.refreshToken, login.refreshToken);
    errorOf(await gql(server.client, REFRESH, { t: 'unknown-token' }), 'INVALID_REFRESH_TOKEN', 401);

    const logout = dataOf(await gql<{ logout: boolean }>(server.client, 'mutation ($t: String!) { logout(refreshToken: $t) }', { t: rotated.refreshToken }));
    assert.equal(logout.logout, true);
    errorOf(await gql(server.client, REFRESH, { t: rotated.refreshToken }), 'INVALID_REFRESH_TOKEN', 401);
  });

  it('when createUser, changePassword and logoutAll run, then they behave as their REST routes', async () => {
    const CREATE = `mutation ($input: CreateUserInput!) { createUser(input: $input) { ${USER_FIELDS} } }`;
    const input = { email: uniqueEmail('made'), name: 'Made', password: 'password-123', role: 'admin' };
    errorOf(await gql(server.client, CREATE, { input }, { token: alice.accessToken }), 'FORBIDDEN', 403);
    const created = dataOf(await gql<{ createUser: { role: string } }>(server.client, CREATE, { input }, { token: admin.accessToken }));
    assert.equal(created.createUser.role, 'admin');

    const dave = await registerAndLogin(server.client);
    const CHANGE = 'mutation ($input: ChangePasswordInput!) { changePassword(input: $input) { accessToken refreshToken user { id } } }';
    errorOf(await gql(server.client, CHANGE, { input: { currentPassword: 'wrong-password', newPassword: 'new-password-1' } }, { token: dave.accessToken }), 'INVALID_CURRENT_PASSWORD', 403);
    const changed = dataOf(await gql<{ changePassword: { accessToken: string } }>(
      server.client, CHANGE, { input: { currentPassword: dave.password, newPassword: 'new-password-1' } }, { token: dave.accessToken })).changePassword;
    const REFRESH = 'mutation ($t: String!) { refresh(refreshToken: $t) { accessToken } }';
    errorOf(await gql(server.client, REFRESH, { t: dave.refreshToken }), 'INVALID_REFRESH_TOKEN', 401);

    assert.equal(dataOf(await gql<{ logoutAll: boolean }>(server.client, 'mutation { logoutAll }', {}, { token: changed.accessToken })).logoutAll, true);
    errorOf(await gql(server.client, 'mutation { logoutAll }'), 'UNAUTHENTICATED', 401);
  });

  it('when updateUser and deleteUser run, then self-update works, role changes and deletes are admin-only', async () => {
    const carol = await registerAndLogin(server.client);
    const UPDATE = `mutation ($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { ${USER_FIELDS} } }`;
    const renamed = dataOf(await gql<{ updateUser: { name: string } }>(server.client, UPDATE, { id: carol.user.id, input: { name: 'Carol' } }, { token: carol.accessToken }));
    assert.equal(renamed.updateUser.name, 'Carol');
    errorOf(await gql(server.client, UPDATE, { id: carol.user.id, input: { role: 'admin' } }, { token: carol.accessToken }), 'FORBIDDEN', 403);
    errorOf(await gql(server.client, UPDATE, { id: bob.user.id, input: { name: 'Mallory' } }, { token: carol.accessToken }), 'NOT_FOUND', 404);

    const DELETE = 'mutation ($id: ID!) { deleteUser(id: $id) }';
    errorOf(await gql(server.client, DELETE, { id: carol.user.id }, { token: carol.accessToken }), 'FORBIDDEN', 403);
    assert.equal(dataOf(await gql<{ deleteUser: boolean }>(server.client, DELETE, { id: carol.user.id }, { token: admin.accessToken })).deleteUser, true);
    errorOf(await gql(server.client, DELETE, { id: carol.user.id }, { token: admin.accessToken }), 'NOT_FOUND', 404);
  });

  it('when accounts are opened and read, then owner and admin see one, anyone else gets NOT_FOUND; owner resolves', async () => {
    const account = await openAccount(alice);
    assert.equal(account.ownerId, alice.user.id);
    assert.equal(account.balance, '0');
    const read = dataOf(await gql<{ account: Account & { owner: { id: string } } }>(server.client, ACCOUNT, { id: account.id }, { token: alice.accessToken }));
    assert.equal(read.account.owner.id, alice.user.id);
    errorOf(await gql(server.client, ACCOUNT, { id: account.id }, { token: bob.accessToken }), 'NOT_FOUND', 404);
    errorOf(await gql(server.client, CREATE_ACCOUNT, { input: { currency: 'usd' } }, { token: alice.accessToken }), 'VALIDATION_FAILED', 400);
    errorOf(await gql(server.client, CREATE_ACCOUNT, { input: { currency: 'USD', ownerId: bob.user.id } }, { token: alice.accessToken }), 'FORBIDDEN', 403);

    const mine = dataOf(await gql<{ accounts: { nodes: Account[] } }>(server.client, `{ accounts(limit: 100) { nodes { id ownerId } pageInfo { total } } }`, {}, { token: alice.accessToken }));
    assert.ok(mine.accounts.nodes.length > 0 && mine.accounts.nodes.every((node) => node.ownerId === alice.user.id));
    errorOf(await gql(server.client, '{ accounts(system: true) { nodes { id } } }', {}, { token: alice.accessToken }), 'FORBIDDEN', 403);
    const system = dataOf(await gql<{ accounts: { nodes: Array<Account & { owner: null }> } }>(
      server.client, '{ accounts(system: true) { nodes { ownerId owner { id } balance } } }', {}, { token: admin.accessToken }));
    assert.ok(system.accounts.nodes.length > 0 && system.accounts.nodes.every((node) => node.ownerId === null && node.owner === null));
  });

  it('when money moves, then deposit, withdraw and transfer work; INSUFFICIENT_FUNDS (422) moves nothing; transfer(id) follows REST visibility', async () => {
    const from = await openAccount(alice);
    const to = await openAccount(bob);
    const deposited = await deposit(from.id, 1_000);
    assert.equal(deposited.status, 'posted');
    errorOf(await gql(server.client, DEPOSIT, { accountId: from.id, amount: 5, key: key() }, { token: alice.accessToken }), 'FORBIDDEN', 403);

    const withdrawn = dataOf(await gql<{ withdraw: MoneyPayload }>(server.client, WITHDRAW, { accountId: from.id, amount: 100, key: key() }, { token: alice.accessToken }));
    assert.equal(withdrawn.withdraw.transfer.amount, 100);

    const moved = dataOf(await gql<{ transfer: MoneyPayload }>(
      server.client, TRANSFER, { input: { fromAccountId: from.id, toAccountId: to.id, amount: 400, description: 'rent' }, key: key() }, { token: alice.accessToken }));
    assert.equal(moved.transfer.replayed, false);
    assert.equal(moved.transfer.transfer.toAccountId, to.id);

    errorOf(await gql(server.client, TRANSFER, { input: { fromAccountId: from.id, toAccountId: to.id, amount: 501 }, key: key() }, { token: alice.accessToken }), 'INSUFFICIENT_FUNDS', 422);
    errorOf(await gql(server.client, TRANSFER, { input: { fromAccountId: to.id, toAccountId: from.id, amount: 1 }, key: key() }, { token: alice.accessToken }), 'NOT_FOUND', 404);
    errorOf(await gql(server.client, TRANSFER, { input: { fromAccountId: from.id, toAccountId: to.id, amount: 0 }, key: key() }, { token: alice.accessToken }), 'VALIDATION_FAILED', 400);
    const balances = dataOf(await gql<{ account: Account }>(server.client, ACCOUNT, { id: from.id }, { token: alice.accessToken }));
    assert.equal(balances.account.balance, '500');

    const TRANSFER_BY_ID = `query ($id: ID!) { transfer(id: $id) { ${TRANSFER_FIELDS} fromAccount { id } toAccount { id } } }`;
    const seenByAlice = dataOf(await gql<{ transfer: { fromAccount: { id: string } | null; toAccount: { id: string } | null } }>(
      server.client, TRANSFER_BY_ID, { id: moved.transfer.transfer.id }, { token: alice.accessToken }));
    assert.equal(seenByAlice.transfer.fromAccount?.id, from.id);
    assert.equal(seenByAlice.transfer.toAccount, null, "bob's account is not alice's to see: null, as REST shows only its id");
    const carol = await registerAndLogin(server.client);
    errorOf(await gql(server.client, TRANSFER_BY_ID, { id: moved.transfer.transfer.id }, { token: carol.accessToken }), 'NOT_FOUND', 404);
  });

  it('when a money mutation repeats its idempotencyKey, then the same transfer is replayed; another body is IDEMPOTENCY_KEY_REUSED; REST shares the key', async () => {
    const from = await openAccount(alice);
    const to = await openAccount(bob);
    await deposit(from.id, 100);
    const idempotencyKey = key();
    const input = { fromAccountId: from.id, toAccountId: to.id, amount: 30 };
    const first = dataOf(await gql<{ transfer: MoneyPayload }>(server.client, TRANSFER, { input, key: idempotencyKey }, { token: alice.accessToken })).transfer;
    const again = dataOf(await gql<{ transfer: MoneyPayload }>(server.client, TRANSFER, { input, key: idempotencyKey }, { token: alice.accessToken })).transfer;
    assert.equal(again.replayed, true);
    assert.deepEqual(again.transfer, first.transfer);
    assert.equal(again.requestId, first.requestId);

    // The fingerprint is the operation's, not the transport's: REST with the same key replays it too.
    const rest = await server.client.post<{ data: Transfer }>('/api/v1/transfers', input, { token: alice.accessToken, headers: { 'idempotency-key': idempotencyKey } });
    assert.equal(rest.status, 201, rest.text);
    assert.equal(rest.headers.get('idempotent-replayed'), 'true');
    assert.equal(rest.body.data.id, first.transfer.id);

    errorOf(await gql(server.client, TRANSFER, { input: { ...input, amount: 31 }, key: idempotencyKey }, { token: alice.accessToken }), 'IDEMPOTENCY_KEY_REUSED', 422);
    const balances = dataOf(await gql<{ account: Account }>(server.client, ACCOUNT, { id: from.id }, { token: alice.accessToken }));
    assert.equal(balances.account.balance, '70');

    const refusedKey = key();
    const refused = errorOf(await gql(server.client, TRANSFER, { input: { ...input, amount: 1_000 }, key: refusedKey }, { token: alice.accessToken }), 'INSUFFICIENT_FUNDS', 422);
    const replayedRefusal = errorOf(await gql(server.client, TRANSFER, { input: { ...input, amount: 1_000 }, key: refusedKey }, { token: alice.accessToken }), 'INSUFFICIENT_FUNDS', 422);
    assert.equal(replayedRefusal.extensions.requestId, refused.extensions.requestId, 'a kept refusal names the request that first produced it');

    const emptyKey = errorOf(await gql(server.client, TRANSFER, { input, key: '' }, { token: alice.accessToken }), 'VALIDATION_FAILED', 400);
    assert.deepEqual(emptyKey.extensions.errors?.map((fieldError) => fieldError.path), ['idempotencyKey']);
    const missingKey = await gql(server.client, 'mutation ($input: TransferInput!) { transfer(input: $input) { replayed } }', { input }, { token: alice.accessToken });
    errorOf(missingKey, 'VALIDATION_FAILED', 400);
    assert.equal(missingKey.status, 400, 'a document missing a required argument is refused as a whole');
  });

  it('when the same key runs twice at once, then one moves the money and the other replays it or is IDEMPOTENCY_IN_PROGRESS (409)', async () => {
    const from = await openAccount(alice);
    const to = await openAccount(bob);
    await deposit(from.id, 100);
    const idempotencyKey = key();
    const input = { fromAccountId: from.id, toAccountId: to.id, amount: 10 };
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => gql<{ transfer: MoneyPayload | null }>(server.client, TRANSFER, { input, key: idempotencyKey }, { token: alice.accessToken })),
    );
    const transfers = new Set<string>();
    for (const answer of answers) {
      if (answer.body.errors) errorOf(answer, 'IDEMPOTENCY_IN_PROGRESS', 409);
      else if (answer.body.data?.transfer) transfers.add(answer.body.data.transfer.transfer.id);
    }
    assert.equal(transfers.size, 1, 'at most one transfer for one key');
    const balances = dataOf(await gql<{ account: Account }>(server.client, ACCOUNT, { id: from.id }, { token: alice.accessToken }));
    assert.equal(balances.account.balance, '90');
  });

  it('when a pending transfer is posted or voided, then postTransfer and voidTransfer resolve it; a second resolution is refused', async () => {
    const from = await openAccount(alice);
    const to = await openAccount(bob);
    await deposit(from.id, 100);
    const pending = dataOf(await gql<{ transfer: MoneyPayload }>(
      server.client, TRANSFER, { input: { fromAccountId: from.id, toAccountId: to.id, amount: 40, pending: true }, key: key() }, { token: alice.accessToken })).transfer.transfer;
    assert.equal(pending.status, 'pending');
    const POST = `mutation ($id: ID!, $amount: SafeInt) { postTransfer(id: $id, amount: $amount) { transfer { ${TRANSFER_FIELDS} pendingId } replayed } }`;
    const posted = dataOf(await gql<{ postTransfer: { transfer: Transfer & { pendingId: string } } }>(server.client, POST, { id: pending.id, amount: 25 }, { token: alice.accessToken }));
    assert.equal(posted.postTransfer.transfer.amount, 25);
    assert.equal(posted.postTransfer.transfer.pendingId, pending.id);
    errorOf(await gql(server.client, 'mutation ($id: ID!) { voidTransfer(id: $id) { replayed } }', { id: pending.id }, { token: alice.accessToken }), 'PENDING_ALREADY_POSTED', 409);

    const other = dataOf(await gql<{ transfer: MoneyPayload }>(
      server.client, TRANSFER, { input: { fromAccountId: from.id, toAccountId: to.id, amount: 10, pending: true }, key: key() }, { token: alice.accessToken })).transfer.transfer;
    const voided = dataOf(await gql<{ voidTransfer: { transfer: Transfer } }>(
      server.client, `mutation ($id: ID!, $key: String) { voidTransfer(id: $id, idempotencyKey: $key) { transfer { ${TRANSFER_FIELDS} } } }`, { id: other.id, key: key() }, { token: alice.accessToken }));
    assert.equal(voided.voidTransfer.transfer.status, 'voided');
    const balances = dataOf(await gql<{ account: Account }>(server.client, ACCOUNT, { id: from.id }, { token: alice.accessToken }));
    assert.equal(balances.account.balance, '75');
    assert.equal(balances.account.availableBalance, '75');
  });

  it('when accountTransfers pages through history, then edges come newest first and after: endCursor continues where the page ended', async () => {
    const from = await openAccount(alice);
    for (const amount of [1, 2, 3]) await deposit(from.id, amount);
    const HISTORY = `query ($id: ID!, $first: Int, $after: String) { accountTransfers(accountId: $id, first: $first, after: $after) {
      edges { cursor node { amount } } pageInfo { hasNextPage endCursor } } }`;
    type History = { accountTransfers: { edges: Array<{ cursor: string; node: { amount: number } }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } } };
    const first = dataOf(await gql<History>(server.client, HISTORY, { id: from.id, first: 2 }, { token: alice.accessToken })).accountTransfers;
    assert.deepEqual(first.edges.map((edge) => edge.node.amount), [3, 2]);
    assert.equal(first.pageInfo.hasNextPage, true);
    assert.equal(first.pageInfo.endCursor, first.edges[1]?.cursor);
    const second = dataOf(await gql<History>(server.client, HISTORY, { id: from.id, first: 2, after: first.pageInfo.endCursor }, { token: alice.accessToken })).accountTransfers;
    assert.deepEqual(second.edges.map((edge) => edge.node.amount), [1]);
    assert.equal(second.pageInfo.hasNextPage, false);
    // An edge's cursor is accepted by REST's history too.
    const rest = await server.client.get<{ data: Array<{ amount: number }> }>(`/api/v1/accounts/${from.id}/transfers?limit=5&cursor=${first.edges[0]?.cursor ?? ''}`, { token: alice.accessToken });
    assert.deepEqual(rest.body.data.map((transfer) => transfer.amount), [2, 1]);
    errorOf(await gql(server.client, HISTORY, { id: from.id, after: 'garbage!' }, { token: alice.accessToken }), 'VALIDATION_FAILED', 400);
    errorOf(await gql(server.client, HISTORY, { id: from.id }, { token: bob.accessToken }), 'NOT_FOUND', 404);
  });

  it('when amounts are not safe integers or come as strings, then the document is refused (no coercion)', async () => {
    const from = await openAccount(alice);
    for (const amount of ['10', 2 ** 53, 1.5]) {
      const response = await gql(server.client, DEPOSIT, { accountId: from.id, amount, key: key() }, { token: admin.accessToken });
      errorOf(response, 'VALIDATION_FAILED', 400);
    }
  });
});
