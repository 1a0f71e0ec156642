import type { IncomingHttpHeaders } from 'node:http';

/**
 * Headers by which a client asks a server to act on another method than its request line's: honoured by Express's
 * method-override, Rails, Laravel, ASP.NET and others, so a POST allowed on a path could act as a PUT or DELETE there.
 */
const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

/** The methods a request's override headers name (each value, comma-separated values apart), or undefined for none. */
export function methodOverrides(headers: IncomingHttpHeaders): string[] | undefined {
  let methods: string[] | undefined;
  for (const name of OVERRIDE_HEADERS) {
    const value = headers[name];
    if (value === undefined) continue;
    for (const text of Array.isArray(value) ? value : [value]) {
      for (const part of text.split(',')) {
        const method = part.trim();
        if (method !== '') (methods ??= []).push(method);
      }
    }
  }
  return methods;
}
