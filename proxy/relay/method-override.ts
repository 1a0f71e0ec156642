import type { IncomingHttpHeaders } from 'node:http';

/**
 * Headers by which a client asks a server to act on another method than its request line's: honoured by Express's
 * method-override, Rails, Laravel, ASP.NET and others, so a POST allowed on a path could act as a PUT or DELETE there.
 */
const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

/**
 * The query parameter that does the same: Laravel and Symfony (http_method_override) read `_method` from the query
 * when the body has none, and an application may do so on its own (Express's method-override with a query getter).
 */
const OVERRIDE_PARAMETER = '_method';

/**
 * The methods a request's override headers and `_method` query parameters name (each value, comma-separated values
 * apart), or undefined for none. `target`: the request target as sent (origin or absolute form), whose query is read.
 */
export function methodOverrides(headers: IncomingHttpHeaders, target?: string): string[] | undefined {
  let methods: string[] | undefined;
  const add = (text: string) => {
    const named = methodsNamed(text);
    if (named.length > 0) (methods ??= []).push(...named);
  };
  for (const name of OVERRIDE_HEADERS) {
    const value = headers[name];
    if (value === undefined) continue;
    for (const text of Array.isArray(value) ? value : [value]) add(text);
  }
  if (target !== undefined) for (const value of overrideParameters(target)) add(value);
  return methods;
}

/**
 * The values of the target's `_method` query parameters, decoded as servers decode them: `%5Fmethod` is `_method`,
 * `+` a space, and PHP (Laravel, Symfony) drops leading spaces from a parameter's name, reads a `.` or a space in
 * it as `_` (`.method`) and ends it at a NUL (`_method%00junk`).
 */
function overrideParameters(target: string): string[] {
  const q = target.indexOf('?');
  if (q === -1) return [];
  const hash = target.indexOf('#', q);
  return overrideFields(target.slice(q + 1, hash === -1 ? undefined : hash));
}

/**
 * The values of the `_method` fields of URL-encoded text (a query, or an `application/x-www-form-urlencoded` body),
 * decoded as overrideParameters says.
 */
export function overrideFields(encoded: string): string[] {
  // Most texts cannot name it, in any spelling: no `method`, and no escape that could spell it.
  if (!/method|%/i.test(encoded)) return [];
  const values: string[] = [];
  for (const [name, value] of new URLSearchParams(encoded)) if (isOverrideName(name)) values.push(value);
  return values;
}

/** Whether a field's name (decoded) is `_method` to a server: itself, or what PHP makes `_method` of it. */
export function isOverrideName(name: string): boolean {
  // PHP also cuts the name at its first NUL (php_register_variable_ex takes its strlen): `_method%00junk` is `_method`.
  const cut = name.indexOf('\0');
  return (cut === -1 ? name : name.slice(0, cut)).replace(/^ +/, '').replace(/[ .]/g, '_') === OVERRIDE_PARAMETER;
}

/** Each method named in `text`, comma-separated values apart (what methodOverrides adds for a header or field value). */
export function methodsNamed(text: string): string[] {
  const into: string[] = [];
  for (const part of text.split(',')) {
    const method = part.trim();
    if (method !== '') into.push(method);
  }
  return into;
}
