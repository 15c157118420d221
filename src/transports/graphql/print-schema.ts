// Prints the GraphQL SDL as committed in schema.graphql:
//   node --import tsx src/transports/graphql/print-schema.ts > schema.graphql
import { printedSchema } from './schema.js';

process.stdout.write(printedSchema());
