/**
 * Strict request validation for the operator API, with TypeBox's own compiler. Fastify's
 * default validator quietly *removes* properties a schema does not allow (removeAdditional)
 * and turns a string into a one-element array (coerceTypes: 'array'); for an operator API a
 * typo (`{"label": [...]}`) must be refused with a message that names it, not ignored.
 * Query strings and path parameters arrive as text, so they are converted to the schema's
 * types first (`?limit=5` → 5); bodies are JSON and are checked as they are.
 */
import type { FastifySchemaCompiler } from 'fastify';
import { Type, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';

/** A body a route takes but does not need (a POST with no body at all is `{}`'s equal). */
export function OptionalBody<T extends TSchema>(schema: T) {
  return Type.Union([schema, Type.Null(), Type.Undefined()]);
}

export const strictValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = TypeCompiler.Compile(schema);
  const convert = httpPart !== 'body';
  const part = httpPart === 'querystring' ? 'query' : (httpPart ?? 'request');
  return (data: unknown) => {
    const value = convert ? Value.Convert(schema, Value.Default(schema, Value.Clone(data))) : data;
    if (check.Check(value)) return { value };
    const first = check.Errors(value).First();
    const where = first?.path ? `${part}${first.path.replaceAll('/', '.')}` : part;
    const why = first
      ? first.message === 'Unexpected property'
        ? 'unknown field'
        : first.message.toLowerCase()
      : 'does not match the schema';
    return { error: new Error(`${where}: ${why}`) };
  };
};
