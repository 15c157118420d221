// What a GraphQL document may ask for, checked at validation (before any resolver runs): depth,
// cost (list sizes multiply what is selected under them), aliases, one mutation field per request,
// and introspection only when enabled. A refused document is QUERY_TOO_COMPLEX or
// INTROSPECTION_DISABLED (transport codes, see errors.ts), never a partial execution.
import {
  GraphQLError,
  getNamedType,
  isInterfaceType,
  isLeafType,
  isObjectType,
  Kind,
  type ASTVisitor,
  type FieldNode,
  type GraphQLField,
  type GraphQLNamedType,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';

export interface QueryLimits {
  readonly maxDepth: number;
  readonly maxCost: number;
  readonly maxAliases: number;
  readonly introspection: boolean;
}

/** Arguments that size a list: `first` (connections) and `limit` (pages). */
const SIZE_ARGUMENTS = new Set(['first', 'limit']);
/** A size given by a variable is not known at validation: the largest the API allows. */
const MAX_LIST_SIZE = 100;

const refusal = (message: string, code: 'QUERY_TOO_COMPLEX' | 'INTROSPECTION_DISABLED') =>
  new GraphQLError(message, { extensions: { code } });

interface Measure {
  depth: number;
  cost: number;
}

function listSize(node: FieldNode, field: GraphQLField<unknown, unknown>): number {
  for (const definition of field.args) {
    if (!SIZE_ARGUMENTS.has(definition.name)) continue;
    const given = node.arguments?.find((argument) => argument.name.value === definition.name);
    if (!given) return typeof definition.defaultValue === 'number' ? definition.defaultValue : MAX_LIST_SIZE;
    if (given.value.kind === Kind.INT) return Math.max(0, Number(given.value.value));
    return MAX_LIST_SIZE;
  }
  return 1;
}

/**
 * Depth counts nested fields (leaves included): `{ me { id } }` is 2. Cost counts every object field
 * (each a possible load), times the sizes of the lists above it; scalars are free.
 */
function measure(
  context: ValidationContext,
  limits: QueryLimits,
  selectionSet: SelectionSetNode,
  parentType: GraphQLNamedType | undefined,
  depth: number,
  multiplier: number,
  fragmentsOnPath: ReadonlySet<string>,
): Measure {
  const result: Measure = { depth: depth - 1, cost: 0 };
  const add = (inner: Measure) => {
    result.depth = Math.max(result.depth, inner.depth);
    result.cost += inner.cost;
  };
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      const name = selection.name.value;
      if (name.startsWith('__')) {
        if (!limits.introspection && (name === '__schema' || name === '__type')) {
          context.reportError(refusal('Introspection is disabled on this server', 'INTROSPECTION_DISABLED'));
        }
        continue;
      }
      const field = isObjectType(parentType) || isInterfaceType(parentType) ? parentType.getFields()[name] : undefined;
      if (!field) continue; // the spec's own rules report unknown fields
      const type = getNamedType(field.type);
      if (isLeafType(type) || !selection.selectionSet) {
        add({ depth, cost: 0 });
        continue;
      }
      const inner = measure(context, limits, selection.selectionSet, type, depth + 1, multiplier * listSize(selection, field), fragmentsOnPath);
      add({ depth: inner.depth, cost: inner.cost + multiplier });
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const type = selection.typeCondition ? context.getSchema().getType(selection.typeCondition.name.value) : parentType;
      add(measure(context, limits, selection.selectionSet, type ?? undefined, depth, multiplier, fragmentsOnPath));
    } else {
      const name = selection.name.value;
      const fragment = context.getFragment(name);
      if (!fragment || fragmentsOnPath.has(name)) continue; // a cycle: NoFragmentCyclesRule reports it
      const type = context.getSchema().getType(fragment.typeCondition.name.value);
      add(measure(context, limits, fragment.selectionSet, type ?? undefined, depth, multiplier, new Set([...fragmentsOnPath, name])));
    }
  }
  return result;
}

function countMutationFields(context: ValidationContext, selectionSet: SelectionSetNode, fragmentsOnPath: ReadonlySet<string>): number {
  let count = 0;
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      if (!selection.name.value.startsWith('__')) count++;
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      count += countMutationFields(context, selection.selectionSet, fragmentsOnPath);
    } else {
      const fragment = context.getFragment(selection.name.value);
      if (fragment && !fragmentsOnPath.has(selection.name.value)) {
        count += countMutationFields(context, fragment.selectionSet, new Set([...fragmentsOnPath, selection.name.value]));
      }
    }
  }
  return count;
}

export function queryLimitRule(limits: QueryLimits): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    let aliases = 0;
    return {
      Field(node) {
        if (node.alias) aliases++;
      },
      OperationDefinition(node) {
        const schema = context.getSchema();
        const rootType =
          node.operation === 'query' ? schema.getQueryType() : node.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
        const { depth, cost } = measure(context, limits, node.selectionSet, rootType ?? undefined, 1, 1, new Set());
        if (depth > limits.maxDepth) {
          context.reportError(refusal(`Query depth ${depth} exceeds the maximum of ${limits.maxDepth}`, 'QUERY_TOO_COMPLEX'));
        }
        if (cost > limits.maxCost) {
          context.reportError(refusal(`Query cost ${cost} exceeds the maximum of ${limits.maxCost}`, 'QUERY_TOO_COMPLEX'));
        }
        // One state change per request, so that the per-request rate limit bounds what a client can do.
        if (node.operation === 'mutation' && countMutationFields(context, node.selectionSet, new Set()) > 1) {
          context.reportError(refusal('A request may run at most one mutation field', 'QUERY_TOO_COMPLEX'));
        }
      },
      Document: {
        leave() {
          if (aliases > limits.maxAliases) {
            context.reportError(refusal(`The query uses ${aliases} aliases; at most ${limits.maxAliases} are allowed`, 'QUERY_TOO_COMPLEX'));
          }
        },
      },
    };
  };
}
