import { isOverrideName, methodsNamed, overrideFields } from './method-override.js';

/**
 * The `_method` fields of a POST body, read as the servers that honour them read it (issue 13). Rack's
 * MethodOverride (Rails, Sinatra) takes `_method` from the form parameters of a POST: an
 * `application/x-www-form-urlencoded` body, any `multipart/*` one (parsed as URL-encoded when it has no boundary),
 * and a body without a Content-Type, which Rack parses as a form too. Symfony (Laravel) takes it from PHP's `$_POST`
 * (URL-encoded and `multipart/form-data` bodies, names mangled as PHP mangles them: method-override.ts
 * isOverrideName), and Laravel also from a JSON body (a Content-Type containing `/json` or `+json`): its top-level
 * `_method` string. What differs between them is read both ways, so that a field any of them takes is found.
 */

/** How a body is read for `_method` fields: the readings its Content-Type allows (more than one may apply). */
export interface BodyForm {
  urlencoded: boolean;
  /** Multipart boundaries, as each server would cut them from the Content-Type. */
  boundaries: string[];
  json: boolean;
}

/** Where a Content-Type's media type ends: PHP cuts it at `;`, `,` or a space, Rack at `;` or `,`. */
const MEDIA_TYPE_END = /[;, \t]/;
/**
 * A boundary parameter as PHP reads it (after `boundary`, the text past the next `=`: quoted, or up to `,` or `;`)
 * and as Rack does (`boundary=`, an optional quote, then up to a quote, `;` or `,`).
 */
const PHP_BOUNDARY = /boundary[^=]*=(?:"([^"]*)"|([^,;]*))/gi;
const RACK_BOUNDARY = /boundary="?([^";,]+)/gi;

/** The readings a POST body with this Content-Type gets from some server, or undefined: none reads a `_method` in it. */
export function bodyFormOf(contentType: string | undefined): BodyForm | undefined {
  const type = contentType ?? '';
  const end = type.search(MEDIA_TYPE_END);
  const media = (end === -1 ? type : type.slice(0, end)).trim().toLowerCase();
  // Laravel's isJson: the header contains `/json` or `+json` (anywhere, whatever the media type).
  const json = /[/+]json/i.test(type);
  if (media.startsWith('multipart/')) {
    // The first and the last parameter of each reading (PHP takes the first, Rack's greedy expression the last): not
    // every one, since each is a pass over the body (a header of a thousand boundaries would be a thousand).
    const found = [...type.matchAll(PHP_BOUNDARY)].map((match) => match[1] ?? match[2]!);
    const rack = [...type.matchAll(RACK_BOUNDARY)].map((match) => match[1]!);
    const boundaries = new Set([found[0], found.at(-1), rack[0], rack.at(-1)].filter((b): b is string => b !== undefined));
    for (const boundary of [...boundaries]) boundaries.add(boundary.trim());
    boundaries.delete('');
    // Without a boundary Rack parses the body as URL-encoded.
    return { urlencoded: boundaries.size === 0, boundaries: [...boundaries], json };
  }
  const urlencoded = media === '' || media === 'application/x-www-form-urlencoded';
  return urlencoded || json ? { urlencoded, boundaries: [], json } : undefined;
}

/** The methods a body's `_method` fields name (each value, comma-separated values apart), in every reading of `form`. */
export function bodyMethods(form: BodyForm, body: Buffer): string[] {
  const values: string[] = [];
  if (form.urlencoded) values.push(...overrideFields(body.toString('utf8')));
  if (form.boundaries.length > 0) {
    const text = body.toString('latin1');
    for (const boundary of form.boundaries) values.push(...multipartFields(text, boundary));
  }
  if (form.json) {
    const value = jsonField(body);
    if (value !== undefined) values.push(value);
  }
  return values.flatMap(methodsNamed);
}

/**
 * The values of the parts named `_method` of a multipart body (`text`: its bytes as latin1), read leniently: a part
 * begins after any `--boundary` (servers want it at a line's start), its head ends at the first blank line (CRLF
 * CRLF, or LF LF as PHP also reads it: both are tried), and any `name` parameter in the head counts (PHP reads
 * `name=_method` without `form-data;`, quoted with `"` or `'`, or bare; RFC 5987's `name*=` too). A malformed body
 * is read as far as it goes; what a server would refuse is at worst read as a field it does not have.
 */
function multipartFields(text: string, boundary: string): string[] {
  const values: string[] = [];
  const parts = text.split(`--${boundary}`);
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!;
    // The closing delimiter (`--boundary--`): what follows is the epilogue.
    if (part.startsWith('--')) break;
    // The rest of the delimiter's line.
    const lineEnd = part.indexOf('\n');
    if (lineEnd === -1) continue;
    const afterLine = part.slice(lineEnd + 1);
    for (const blank of ['\r\n\r\n', '\n\n']) {
      const at = afterLine.indexOf(blank);
      if (at === -1 || !namesOverride(afterLine.slice(0, at))) continue;
      // The value ends before the line break that precedes the next delimiter.
      const value = afterLine.slice(at + blank.length).replace(/\r?\n$/, '');
      values.push(Buffer.from(value, 'latin1').toString('utf8'));
    }
  }
  return values;
}

/** A `name` parameter in a part head, whatever header it is in: `"quoted"` (backslash escapes), `'quoted'`, bare, or `name*=`. */
const NAME_PARAMETER = /(?:^|[;\s])name(\*?)\s*=\s*(?:"((?:\\.|[^"\\])*)"|'([^']*)'|([^;\s]*))/gi;

function namesOverride(head: string): boolean {
  for (const match of head.matchAll(NAME_PARAMETER)) {
    const [, extended, doubleQuoted, singleQuoted, bare] = match;
    let name = doubleQuoted !== undefined ? doubleQuoted.replace(/\\(.)/g, '$1') : (singleQuoted ?? bare ?? '');
    // RFC 5987: charset'language'percent-encoded.
    if (extended) name = percentDecoded(name.slice(name.lastIndexOf("'") + 1));
    if (isOverrideName(Buffer.from(name, 'latin1').toString('utf8'))) return true;
  }
  return false;
}

function percentDecoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Laravel's reading of a JSON body: its top-level `_method`, when a string. Not JSON (or no object): none. */
function jsonField(body: Buffer): string | undefined {
  const text = body.toString('utf8');
  // The key, spelt out or escaped (`\u005f`): no `method` and no `\u`, no such key.
  if (!/method|\\u/i.test(text)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const value = (parsed as Record<string, unknown>)['_method'];
  return typeof value === 'string' ? value : undefined;
}
