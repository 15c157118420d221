// schema.graphql is the published contract: the schema a running server answers with (read through
// introspection, as any client would) must print exactly as the committed file. A change to the SDL
// without the file fails here. Regenerate: node --import tsx src/transports/graphql/print-schema.ts > schema.graphql
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { buildClientSchema, getIntrospectionQuery, lexicographicSortSchema, printSchema, type IntrospectionQuery } from 'graphql';
import { printedSchema } from '../../src/transports/graphql/schema.js';
import { describeOnBackends } from '../helpers/describe-on-backends.js';
import type { TestServer } from '../helpers/server.js';
import { dataOf, gql } from './gql.js';

const committed = () => readFile(new URL('../../schema.graphql', import.meta.url), 'utf8');

describeOnBackends('graphql schema file', ({ it, before, startServer }) => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ GRAPHQL_INTROSPECTION: 'true' });
  });

  it('when the running schema is printed, then it equals schema.graphql', async () => {
    const introspection = dataOf(await gql<IntrospectionQuery>(server.client, getIntrospectionQuery()));
    const running = `${printSchema(lexicographicSortSchema(buildClientSchema(introspection)))}\n`;
    assert.equal(running, await committed(), 'schema.graphql is stale: regenerate it (see this file\'s header) and commit it');
  });

  it('when the SDL in the source is printed, then it equals schema.graphql too (the generator prints what runs)', async () => {
    assert.equal(printedSchema(), await committed());
  });
});
