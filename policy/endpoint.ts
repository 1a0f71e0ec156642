import { domainToASCII } from 'node:url';
import { getDomain } from 'tldts';
import { canonicalHost, NOT_IN_A_HOST } from './host.js';
import { compileHostPattern, type HostPattern } from './host-pattern.js';
import type { Origin } from './cidr.js';
import { compilePathPattern, PathPatternError, type PathPattern } from './request-path.js';

export const DEFAULT_PORT = 443;

export interface EndpointRule {
  /** The entry as written in the policy, reported as `rule` in events. */
  source: string;
  host: HostPattern;
  port: number | '*';
  origin: Origin;
  /** Set when the wildcard sits directly over a private-section public suffix (github.io, ...). */
  warning?: string;
  /** Request rules only: the methods (upper case) the entry names; absent, any method. */
  methods?: readonly string[];
  /** Request rules only: the paths the entry covers; absent, any path. */
  path?: PathPattern;
}

/** An entry that names methods or a path judges requests, so its host must be inspected (TLS) to enforce it. */
export function isRequestRule(rule: EndpointRule): boolean {
  return rule.methods !== undefined || rule.path !== undefined;
}

/** `GET`, `GET,HEAD`, `*` (any): the method list that may precede an entry. */
export const METHOD_LIST = /^(\*|[A-Z][A-Z-]*(,[A-Z][A-Z-]*)*)$/;

export class EntryError extends Error {}

const PATTERN_LABEL = /^[a-z0-9_*]([a-z0-9_*-]*[a-z0-9_*])?$/;

function parsePort(text: string, entry: string): number | '*' {
  if (text === '*') return '*';
  if (!/^\d{1,5}$/.test(text)) throw new EntryError(`invalid port "${text}" in "${entry}"`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new EntryError(`port ${port} out of range 1-65535 in "${entry}"`);
  return port;
}

function splitHostPort(entry: string): [string, string | undefined] {
  if (entry.startsWith('[')) throw new EntryError(`"${entry}" is an address: list addresses under allowed-ips`);
  const colons = entry.split(':').length - 1;
  if (colons === 0) return [entry, undefined];
  if (colons > 1) throw new EntryError(`"${entry}" is not host[:port]`);
  const at = entry.lastIndexOf(':');
  return [entry.slice(0, at), entry.slice(at + 1)];
}

/** Validate and canonicalise a host pattern; throws EntryError with a reason a user can act on. */
export function canonicalPattern(rawHost: string, entry: string): { pattern: string; warning?: string } {
  let host = rawHost.toLowerCase().replace(/\.$/, '');
  if (host === '') throw new EntryError(`"${entry}" has no host`);
  if (host === '*') throw new EntryError(`"${entry}" allows every host: a bare * is not accepted`);
  if (/^\d+(\.\d+){0,3}$/.test(host) || /^0x[0-9a-f]+$/.test(host)) {
    throw new EntryError(`"${entry}" is an address: list addresses under allowed-ips`);
  }
  const labels = host.split('.');
  host = labels
    .map((label) => {
      if (label === '') throw new EntryError(`"${entry}" has an empty label`);
      if (label.includes('*')) {
        if (/[^\x00-\x7f]/.test(label)) throw new EntryError(`"${entry}": a wildcard label must be ASCII`);
        return label;
      }
      const ascii = domainToASCII(label);
      if (!ascii) throw new EntryError(`"${entry}" has an invalid label "${label}"`);
      return ascii;
    })
    .join('.');
  for (const label of host.split('.')) {
    if (label.length > 63 || !PATTERN_LABEL.test(label)) throw new EntryError(`"${entry}" has an invalid label "${label}"`);
    if (label.includes('**')) throw new EntryError(`"${entry}": ** is not a pattern here; use a leading "*." for any depth`);
  }
  if (host.length > 253) throw new EntryError(`"${entry}" is longer than 253 characters`);
  const parts = host.split('.');
  if (/^(\d+|0x[0-9a-f]*)$/.test(parts.at(-1)!)) {
    throw new EntryError(`"${entry}" ends in a numeric label: list addresses under allowed-ips`);
  }
  const lastWild = parts.reduce((at, label, i) => (label.includes('*') ? i : at), -1);
  if (lastWild === -1) {
    const canonical = canonicalHost(host);
    if (canonical.type === 'ip') throw new EntryError(`"${entry}" is an address: list addresses under allowed-ips`);
    if (canonical.type === 'invalid') throw new EntryError(`"${entry}": ${canonical.why}`);
    return { pattern: host };
  }
  const fixed = parts.slice(lastWild + 1).join('.');
  if (fixed === '') throw new EntryError(`"${entry}" puts a wildcard in the top-level label`);
  if (getDomain(fixed) === null) {
    throw new EntryError(`"${entry}" has a wildcard directly over the public suffix "${fixed}"`);
  }
  if (getDomain(fixed, { allowPrivateDomains: true }) === null) {
    return { pattern: host, warning: `"${entry}" wildcards over "${fixed}", a suffix where anyone can register names` };
  }
  return { pattern: host };
}

/**
 * Parse one allowed-endpoints (or denied-endpoints) entry: `host[:port][/path]`, no port means 443, `:*` any
 * port; `methods` (`GET,HEAD`, `*`) when a method list preceded it.
 */
export function parseEndpoint(entry: string, origin: Origin, methods?: string): EndpointRule {
  const written = entry.trim();
  const slash = written.indexOf('/');
  const text = slash === -1 ? written : written.slice(0, slash);
  const pathText = slash === -1 ? undefined : written.slice(slash);
  const source = methods === undefined ? written : `${methods} ${written}`;
  if (NOT_IN_A_HOST.test(text)) {
    throw new EntryError(`"${written}" is not [METHODS ]host[:port][/path]: write no scheme, user or spaces`);
  }
  const [rawHost, rawPort] = splitHostPort(text);
  const port = rawPort === undefined ? DEFAULT_PORT : parsePort(rawPort, written);
  const { pattern, warning } = canonicalPattern(rawHost, written);
  const rule: EndpointRule = { source, host: compileHostPattern(pattern), port, origin };
  if (warning) rule.warning = warning;
  if (methods !== undefined && methods !== '*') {
    if (!METHOD_LIST.test(methods)) throw new EntryError(`"${source}": "${methods}" is not a method list (GET,HEAD or *)`);
    rule.methods = methods.split(',');
  }
  if (pathText !== undefined) {
    try {
      rule.path = compilePathPattern(pathText);
    } catch (err) {
      if (err instanceof PathPatternError) throw new EntryError(`"${source}": ${err.message}`);
      throw err;
    }
  }
  return rule;
}
