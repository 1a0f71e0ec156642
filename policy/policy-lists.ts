import { parseCidr, type CidrRule, type Origin } from './cidr.js';
import { EntryError, METHOD_LIST, parseEndpoint, type EndpointRule } from './endpoint.js';
import { PolicyError } from './policy.js';

/** One entry of a list setting, with where it was written. */
export interface SourcedEntry {
  text: string;
  origin: Origin;
}

/**
 * Split a list written as one string (spaces, commas or newlines between entries, `#` comments), the way a
 * harden-runner `allowed-endpoints: >` block is written, keeping each entry's line.
 */
export function splitListString(text: string, origin: Origin): SourcedEntry[] {
  const entries: SourcedEntry[] = [];
  text.split('\n').forEach((rawLine, i) => {
    const line = rawLine.replace(/#.*$/, '');
    for (const token of line.split(/[\s,]+/)) {
      if (token) entries.push({ text: token, origin: { file: origin.file, line: origin.line + i } });
    }
  });
  return entries;
}

/** A method name in lower case, which would otherwise read as a one-label host. */
const LOWER_CASE_METHOD = /^(get|head|post|put|patch|delete|options|connect|trace)$/i;

/**
 * Endpoint entries, a method list attaching to the entry after it: `GET,HEAD registry.npmjs.org` is one entry
 * whether it came as one YAML item or as the words of a `>` block (where the comma splits the list in two).
 */
export function parseEndpoints(entries: readonly SourcedEntry[]): EndpointRule[] {
  const rules: EndpointRule[] = [];
  let methods: string[] = [];
  let methodsAt: SourcedEntry | undefined;
  const words = entries.flatMap((entry) => entry.text.split(/[\s,]+/).flatMap((text) => (text ? [{ text, origin: entry.origin }] : [])));
  for (const { text, origin } of words) {
    if (LOWER_CASE_METHOD.test(text) && text !== text.toUpperCase())
      throw new PolicyError(origin.file, origin.line, text, `"${text}" looks like a method: write methods in upper case (${text.toUpperCase()})`);
    // A method list and its host are written on one line (one YAML item): a lone `*` item is a bare star.
    if (methodsAt && (methodsAt.origin.line !== origin.line || methodsAt.origin.file !== origin.file)) break;
    if (METHOD_LIST.test(text)) {
      methods.push(text);
      methodsAt ??= { text, origin };
      continue;
    }
    try {
      rules.push(parseEndpoint(text, origin, methods.length > 0 ? methods.join(',') : undefined));
    } catch (err) {
      if (err instanceof EntryError) throw new PolicyError(origin.file, origin.line, text, err.message);
      throw err;
    }
    methods = [];
    methodsAt = undefined;
  }
  if (methodsAt) {
    const list = methods.join(',');
    const why = list === '*' ? '"*" allows every host: a bare * is not accepted' : `"${list}" names methods but no host follows on its line`;
    throw new PolicyError(methodsAt.origin.file, methodsAt.origin.line, methodsAt.text, why);
  }
  return rules;
}

export function parseCidrs(entries: readonly SourcedEntry[], setting: string): CidrRule[] {
  return entries.map(({ text, origin }) => {
    const range = parseCidr(text);
    if (!range) throw new PolicyError(origin.file, origin.line, text, `not an address or CIDR range in ${setting}`);
    return { source: text, range, origin };
  });
}
