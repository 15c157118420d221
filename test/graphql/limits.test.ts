// What a GraphQL request may ask for: depth, cost and alias attacks refused before any resolver runs,
// introspection and GraphiQL off unless enabled, the per-client rate limit and the login throttle as
// on REST, and errors that never leak internals.
import assert from 'node:assert/strict';
import { describe, it as test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { loginAdmin, registerAndLogin, uniqueEmail, type Session } from '../helpers/auth.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { dataOf, errorOf, gql } from './gql.js';

describeOnBackends('graphql limits', ({ it, before, startServer }) => {
  let server: TestServer;
  let admin: Session;

  before(async () => {
    server = await startServer({ GRAPHQL_MAX_DEPTH: '4', GRAPHQL_MAX_COST: '200', GRAPHQL_MAX_ALIASES: '5' });
    admin = await loginAdmin(server.client);
  });

  const accessLogCount = (needle: string) => server.logs.filter((line) => line.includes(needle)).length;

  it('when a query nests deeper than GRAPHQL_MAX_DEPTH, then it is refused QUERY_TOO_COMPLEX (400) and nothing runs', async () => {
    const deep = '{ accountTransfers(accountId: "00000000-0000-7000-8000-000000000000") { edges { node { fromAccount { owner { id } } } } } }';
    const response = await gql(server.client, deep, {}, { token: admin.accessToken });
    assert.equal(response.status, 400);
    const error = errorOf(response, 'QUERY_TOO_COMPLEX', 400);
    assert.match(error.message, /depth 6 exceeds the maximum of 4/);
    assert.equal(response.body.data ?? null, null, 'refused before execution: no data at all');
    const shallow = dataOf(await gql<{ me: { id: string } }>(server.client, '{ me { id } }', {}, { token: admin.accessToken }));
    assert.equal(shallow.me.id, admin.user.id);
  });

  it('when list sizes multiply past GRAPHQL_MAX_COST, then it is refused before execution; a variable size counts as the maximum', async () => {
    const costly = '{ accounts(limit: 100) { nodes { owner { id } } } }';
    const error = errorOf(await gql(server.client, costly, {}, { token: admin.accessToken }), 'QUERY_TOO_COMPLEX', 400);
    assert.match(error.message, /cost \d+ exceeds the maximum of 200/);
    errorOf(await gql(server.client, 'query ($n: Int) { accounts(limit: $n) { nodes { owner { id } } } }', { n: 1 }, { token: admin.accessToken }), 'QUERY_TOO_COMPLEX', 400);
    dataOf(await gql(server.client, '{ accounts(limit: 50) { nodes { owner { id } } } }', {}, { token: admin.accessToken }));
  });

  it('when a query repeats a field under many aliases, then it is refused (alias amplification), in fragments too', async () => {
    const aliased = `{ ${Array.from({ length: 6 }, (_, index) => `a${index}: me { id }`).join(' ')} }`;
    const error = errorOf(await gql(server.client, aliased, {}, { token: admin.accessToken }), 'QUERY_TOO_COMPLEX', 400);
    assert.match(error.message, /6 aliases; at most 5/);
    const viaFragment = `query { ...F } fragment F on Query { ${Array.from({ length: 6 }, (_, index) => `b${index}: me { id }`).join(' ')} }`;
    errorOf(await gql(server.client, viaFragment, {}, { token: admin.accessToken }), 'QUERY_TOO_COMPLEX', 400);
  });

  it('when one request carries two mutation fields, then it is refused, so a request is one operation for the rate limit', async () => {
    const twice = 'mutation { a: logout(refreshToken: "x") b: logout(refreshToken: "y") }';
    errorOf(await gql(server.client, twice), 'QUERY_TOO_COMPLEX', 400);
  });

  it('when introspection is asked and GRAPHQL_INTROSPECTION is not set, then it is INTROSPECTION_DISABLED; GraphiQL is not served', async () => {
    const schema = await gql(server.client, '{ __schema { types { name } } }');
    errorOf(schema, 'INTROSPECTION_DISABLED', 400);
    errorOf(await gql(server.client, '{ __type(name: "User") { name } }'), 'INTROSPECTION_DISABLED', 400);
    // __typename is not introspection of the schema: allowed.
    const typename = dataOf(await gql<{ __typename: string }>(server.client, '{ __typename }'));
    assert.equal(typename.__typename, 'Query');
    const graphiql = await server.client.get('/graphiql');
    assert.equal(graphiql.status, 404);
  });

  it('when a mutation is sent with GET, then it is refused; a query with GET works', async () => {
    const mutation = await server.client.get(`/graphql?query=${encodeURIComponent('mutation { logout(refreshToken: "x") }')}`);
    assert.equal(mutation.status, 405, mutation.text);
    const query = await server.client.get<{ data: { me: { id: string } } }>(`/graphql?query=${encodeURIComponent('{ me { id } }')}`, { token: admin.accessToken });
    assert.equal(query.status, 200, query.text);
    assert.equal(query.body.data.me.id, admin.user.id);
  });

  it('when the document is malformed or names an unknown field, then it is VALIDATION_FAILED (400) with no internals', async () => {
    const syntax = await gql(server.client, '{ me { id }');
    assert.equal(syntax.status, 400);
    errorOf(syntax, 'VALIDATION_FAILED', 400);
    errorOf(await gql(server.client, '{ me { passwordHash } }', {}, { token: admin.accessToken }), 'VALIDATION_FAILED', 400);
    const notJson = await server.client.post('/graphql', undefined, { raw: '{"query": ', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(accessLogCount('graphql: unhandled error'), 0, 'none of these is the service’s fault');
  });
});

describeOnBackends('graphql introspection and GraphiQL enabled', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ GRAPHQL_INTROSPECTION: 'true', GRAPHIQL: 'true' });
  });

  it('when GRAPHQL_INTROSPECTION=true, then __schema answers', async () => {
    const data = dataOf(await gql<{ __schema: { queryType: { name: string } } }>(server.client, '{ __schema { queryType { name } } }'));
    assert.equal(data.__schema.queryType.name, 'Query');
  });

  it('when GRAPHIQL=true, then /graphiql serves the IDE under a policy that lets its scripts load, and /graphql keeps the API policy', async () => {
    const page = await server.client.get('/graphiql');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self' https:\/\/unpkg\.com/);
    const api = await gql(server.client, '{ __typename }');
    assert.equal(api.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'");
  });
});

describe('graphql config', () => {
  test('when nothing is set, then introspection and GraphiQL are off and the limits have their defaults', () => {
    const config = loadConfig({});
    assert.equal(config.graphqlIntrospection, false);
    assert.equal(config.graphiql, false);
    assert.deepEqual([config.graphqlMaxDepth, config.graphqlMaxCost, config.graphqlMaxAliases], [8, 1_000, 10]);
  });

  test('when a value is bad, or GraphiQL is on without introspection, then the start fails naming the variable', () => {
    assert.throws(
      () => loadConfig({ GRAPHQL_INTROSPECTION: 'yes', GRAPHQL_MAX_DEPTH: '0', GRAPHQL_MAX_COST: 'many', GRAPHQL_MAX_ALIASES: '-1' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.deepEqual(error.problems.map((problem) => problem.split(':')[0]), ['GRAPHQL_INTROSPECTION', 'GRAPHQL_MAX_DEPTH', 'GRAPHQL_MAX_COST', 'GRAPHQL_MAX_ALIASES']);
        return true;
      },
    );
    assert.throws(() => loadConfig({ GRAPHIQL: 'true' }), /^ConfigError: GRAPHIQL: /);
  });
});

describeOnBackends('graphql rate limit', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '60000' });
  });

  it('when a client passes RATE_LIMIT_MAX on /graphql, then it is RATE_LIMITED (429) with Retry-After, as on /api/v1', async () => {
    const answers = [];
    for (let index = 0; index < 6; index++) answers.push(await gql(server.client, '{ __typename }'));
    assert.ok(answers.slice(0, 5).every((answer) => answer.status === 200));
    const limited = answers[5];
    assert.ok(limited);
    assert.equal(limited.status, 429, limited.text);
    const error = errorOf(limited, 'RATE_LIMITED', 429);
    assert.ok((error.extensions.retryAfterSeconds ?? 0) >= 1);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.ok(limited.headers.get('ratelimit-limit'));
  });
});

describeOnBackends('graphql login throttle', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ LOGIN_MAX_FAILURES: '2' });
  });

  it('when logins fail LOGIN_MAX_FAILURES times through GraphQL, then the next (even right) is RATE_LIMITED, shared with REST', async () => {
    const user = await registerAndLogin(server.client, { email: uniqueEmail('throttle') });
    const LOGIN = 'mutation ($input: LoginInput!) { login(input: $input) { accessToken } }';
    for (let attempt = 0; attempt < 2; attempt++) {
      errorOf(await gql(server.client, LOGIN, { input: { email: user.user.email, password: 'wrong-password' } }), 'INVALID_CREDENTIALS', 401);
    }
    const locked = await gql(server.client, LOGIN, { input: { email: user.user.email, password: user.password } });
    const error = errorOf(locked, 'RATE_LIMITED', 429);
    assert.ok((error.extensions.retryAfterSeconds ?? 0) >= 1);
    const rest = await server.client.post('/api/v1/auth/login', { email: user.user.email, password: user.password });
    assert.equal(rest.status, 429);
  });
});
