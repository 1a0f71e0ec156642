/**
 * Request paths for method/path rules: one normaliser and one matcher, so that a path matches exactly as its
 * canonical form does. What the normaliser cannot make canonical is refused, never guessed.
 */

/** A path as the policy judges it, or why it cannot be judged. */
export type NormalisedPath = { ok: true; path: string; query: string | undefined } | { ok: false; why: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
/** RFC 3986 pchar without percent-encodings: unreserved, sub-delims, ':' and '@' (and '/' between segments). */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;

/**
 * The canonical form of an origin-form request target (`/a/b?q`): unreserved characters percent-decoded, other
 * encodings upper-cased, dot-segments resolved. Refused: an encoded `/` or `\`, a `\`, a `;` (path parameters) literal
 * or encoded, an encoded `%` before two hex digits (double encoding), an empty segment (`//`, which servers disagree on), a `..` above the root, bytes outside RFC 3986 path
 * characters, bad `%` escapes.
 */
export function normalisePath(target: string): NormalisedPath {
  const hash = target.indexOf('#');
  if (hash !== -1) return { ok: false, why: 'a request target has no fragment' };
  const q = target.indexOf('?');
  const raw = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? undefined : target.slice(q + 1);
  if (!raw.startsWith('/')) return { ok: false, why: 'the path does not start with /' };
  if (raw.includes('\\')) return { ok: false, why: 'the path has a backslash' };
  // Path parameters: Tomcat, Jetty and Spring drop them before resolving dot-segments (`/a/..;/b` is /b there).
  if (raw.includes(';')) return { ok: false, why: 'the path has a ; (path parameters, which servers read differently)' };
  if (!PATH_CHARS.test(raw)) return { ok: false, why: 'the path has characters that must be percent-encoded' };
  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== '%') {
      decoded += c;
      continue;
    }
    const hex = raw.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { ok: false, why: 'the path has a malformed percent-encoding' };
    const char = String.fromCharCode(parseInt(hex, 16));
    if (char === '/' || char === '\\' || char === ';') return { ok: false, why: `the path has an encoded ${char}` };
    // `%252e` is `%2e` once decoded: a server that decodes twice (a front proxy, then the application) reads `.`.
    if (char === '%' && /^[0-9A-Fa-f]{2}$/.test(raw.slice(i + 3, i + 5))) return { ok: false, why: 'the path has a double percent-encoding (%25 before an escape)' };
    decoded += UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
    i += 2;
  }
  const segments = decoded.slice(1).split('/');
  const out: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    if (segment === '.') {
      if (last) out.push('');
      continue;
    }
    if (segment === '..') {
      if (out.length === 0) return { ok: false, why: 'the path climbs above the root' };
      out.pop();
      if (last) out.push('');
      continue;
    }
    // A trailing slash is an empty last segment, and fine; one in the middle is not canonical.
    if (segment === '' && !last) return { ok: false, why: 'the path has an empty segment (//)' };
    out.push(segment);
  }
  return { ok: true, path: `/${out.join('/')}`, query };
}

/** A compiled path pattern: `*` within one segment, `**` (a whole segment) any number of segments. */
export interface PathPattern {
  source: string;
  /** Matched against normalised paths. */
  exact: RegExp;
  /** The same, case-insensitive: deny entries match whatever case a server may ignore. */
  folded: RegExp;
}

export class PathPatternError extends Error {}

function escape(text: string): string {
  return text.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}

/** Compile a pattern written as a path (`/my-org/**`); throws PathPatternError when it is not one. */
export function compilePathPattern(source: string): PathPattern {
  // The pattern is written in the same canonical form it is matched against; `*` is a path character.
  const normalised = normalisePath(source);
  if (!normalised.ok) throw new PathPatternError(`path "${source}": ${normalised.why}`);
  if (normalised.query !== undefined) throw new PathPatternError(`path "${source}": the query string is not matched; leave it out`);
  const segments = normalised.path.slice(1).split('/');
  let pattern = '';
  segments.forEach((segment, i) => {
    if (segment === '**') {
      // Zero or more segments; as the last segment it also takes a trailing slash.
      pattern += i === segments.length - 1 ? '(?:/.*)?' : '(?:/[^/]*)*?';
      return;
    }
    if (segment.includes('**')) throw new PathPatternError(`path "${source}": ** stands for whole segments only (/a/**/b)`);
    pattern += `/${segment
      .split('*')
      .map((part) => escape(part))
      .join('[^/]*')}`;
  });
  const regex = `^${pattern}$`;
  return { source, exact: new RegExp(regex), folded: new RegExp(regex, 'i') };
}

/** Whether a normalised path matches; `caseInsensitive` for deny entries. */
export function matchPath(pattern: PathPattern, normalisedPath: string, caseInsensitive = false): boolean {
  return (caseInsensitive ? pattern.folded : pattern.exact).test(normalisedPath);
}
