// Schema validation: the Ajv setup of every route, and Ajv's errors as the contract's field errors.
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { Static, TSchema } from 'typebox';
import { validationFailed, type FieldError } from '../../platform/errors.js';

/**
 * The contract's ids: 8-4-4-4-12 hex, either case. ajv-formats' `uuid` also takes `urn:uuid:…`,
 * which PostgreSQL's uuid type refuses (a 500 where a 400 is due).
 */
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Fastify's validator compiler, with two validators: bodies are never coerced ("10" is not an
 * integer) and unknown fields are errors, while query strings and path params are parsed as their
 * declared types.
 */
export function createValidatorCompiler() {
  const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
  const withFormats = (ajv: Ajv) => addFormats(ajv).addFormat('uuid', UUID_PATTERN);
  const common = { allErrors: true, removeAdditional: false, strict: false, useDefaults: true } as const;
  const bodyAjv = withFormats(new Ajv({ ...common, coerceTypes: false }));
  const queryAjv = withFormats(new Ajv({ ...common, coerceTypes: 'array' }));
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) => {
    const ajv = httpPart === 'body' ? bodyAjv : queryAjv;
    return ajv.compile(schema);
  };
}

/** Ajv's errors as field errors: a dotted path to the field (`context`, e.g. "querystring", at the root). */
export function fieldErrorsFromAjv(errors: readonly ErrorObject[], context: string | undefined): FieldError[] {
  return errors.map((error) => {
    const segments = error.instancePath.split('/').filter(Boolean);
    let message = error.message ?? 'is invalid';
    if (error.keyword === 'required' && typeof error.params['missingProperty'] === 'string') {
      segments.push(error.params['missingProperty']);
      message = 'is required';
    } else if (error.keyword === 'additionalProperties' && typeof error.params['additionalProperty'] === 'string') {
      segments.push(error.params['additionalProperty']);
      message = 'is not allowed';
    }
    return { path: segments.length > 0 ? segments.join('.') : (context ?? 'body'), message };
  });
}

let inputCompiler: ReturnType<typeof createValidatorCompiler> | undefined;

/**
 * Validation for the transports that parse their own messages (GraphQL arguments, gRPC requests)
 * with REST's body rules and schemas: no coercion, unknown fields refused, a failure thrown as
 * VALIDATION_FAILED with field errors (`context` names the root). `rename` maps a field named as in
 * REST to the transport's own name in those errors (`limit` -> `first`).
 */
export function inputValidator<S extends TSchema>(
  schema: S,
  context: string,
  rename: Readonly<Record<string, string>> = {},
): (value: unknown) => Static<S> {
  inputCompiler ??= createValidatorCompiler();
  const validate = inputCompiler({ schema, httpPart: 'body' });
  return (value) => {
    if (validate(value)) return value as Static<S>;
    throw validationFailed(
      fieldErrorsFromAjv(validate.errors ?? [], context).map((error) => {
        const [head, ...rest] = error.path.split('.');
        const renamed = head !== undefined ? rename[head] : undefined;
        return renamed ? { ...error, path: [renamed, ...rest].join('.') } : error;
      }),
    );
  };
}
