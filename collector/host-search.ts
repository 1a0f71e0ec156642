import { canonicalHost, compileHostPattern, matchHost } from '../policy/index.js';

/**
 * "Which of our jobs talked to this host, and when?" A pattern in the policy's syntax (`codecov.io`,
 * `*.codecov.io`, `uploader*.codecov.io`) or an address. A name without a wildcard also finds its subdomains
 * (registrable-domain match: `codecov.io` finds `uploader.codecov.io`). The stores filter with SQL LIKE
 * patterns that every match satisfies; `matches` is the exact test of the hosts they find.
 */
export interface HostQuery {
  pattern: string;
  likes: string[];
  matches: (host: string) => boolean;
}

export class SearchError extends Error {}

function like(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%');
}

export function hostQuery(text: string): HostQuery {
  const pattern = text.trim().toLowerCase().replace(/\.$/, '');
  const literal = canonicalHost(pattern.replace(/^\[|\]$/g, ''));
  if (literal.type === 'ip') return { pattern: literal.text, likes: [like(literal.text)], matches: (host) => host === literal.text };
  if (!/^[a-z0-9*_-]+(\.[a-z0-9*_-]+)*$/.test(pattern) || /^[*.]+$/.test(pattern)) {
    throw new SearchError(`host: "${text}" is not a host pattern (name, *.name, or address)`);
  }
  if (!pattern.includes('*')) {
    return { pattern, likes: [like(pattern), `%.${like(pattern)}`], matches: (host) => host === pattern || host.endsWith(`.${pattern}`) };
  }
  const compiled = compileHostPattern(pattern);
  return { pattern, likes: [like(pattern)], matches: (host) => matchHost(compiled, host) };
}
