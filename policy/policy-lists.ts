import { parseCidr, type CidrRule, type Origin } from './cidr.js';
import { EntryError, parseEndpoint, type EndpointRule } from './endpoint.js';
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

export function parseEndpoints(entries: readonly SourcedEntry[]): EndpointRule[] {
  return entries.map(({ text, origin }) => {
    try {
      return parseEndpoint(text, origin);
    } catch (err) {
      if (err instanceof EntryError) throw new PolicyError(origin.file, origin.line, text, err.message);
      throw err;
    }
  });
}

export function parseCidrs(entries: readonly SourcedEntry[], setting: string): CidrRule[] {
  return entries.map(({ text, origin }) => {
    const range = parseCidr(text);
    if (!range) throw new PolicyError(origin.file, origin.line, text, `not an address or CIDR range in ${setting}`);
    return { source: text, range, origin };
  });
}
