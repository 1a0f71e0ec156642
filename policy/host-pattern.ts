import { minimatch } from 'minimatch';

/**
 * A host pattern of an allowlist entry, matched label by label:
 * - `example.com` matches only `example.com`;
 * - a leading `*` label matches one or more labels (`*.example.com` matches `a.example.com` and
 *   `a.b.example.com`, never `example.com`);
 * - `*` anywhere else matches within one label and never across a dot
 *   (`productionresultssa*.blob.core.windows.net`, `example.*` never matches `example.com.evil.net`).
 * Inputs are canonical (lowercase ASCII, no trailing dot): see canonicalHost().
 */
export interface HostPattern {
  source: string;
  anyDepthPrefix: boolean;
  /** Labels after the any-depth prefix, each an exact string or a one-label glob. */
  labels: Array<string | LabelGlob>;
}

type LabelGlob = (label: string) => boolean;

const LABEL_GLOB_OPTIONS = { nocase: true, dot: true, noext: true, nobrace: true, noglobstar: true, nocomment: true, nonegate: true };

export function compileHostPattern(pattern: string): HostPattern {
  const parts = pattern.split('.');
  const anyDepthPrefix = parts.length > 1 && parts[0] === '*';
  const rest = anyDepthPrefix ? parts.slice(1) : parts;
  const labels = rest.map((label) => {
    if (!label.includes('*')) return label;
    return (candidate: string) => minimatch(candidate, label, LABEL_GLOB_OPTIONS);
  });
  return { source: pattern, anyDepthPrefix, labels };
}

function labelMatches(pattern: string | LabelGlob, label: string): boolean {
  return typeof pattern === 'string' ? pattern === label : pattern(label);
}

export function matchHost(pattern: HostPattern, host: string): boolean {
  const labels = host.split('.');
  const fixed = pattern.labels.length;
  if (pattern.anyDepthPrefix ? labels.length <= fixed : labels.length !== fixed) return false;
  const offset = labels.length - fixed;
  for (let i = 0; i < fixed; i++) {
    if (!labelMatches(pattern.labels[i]!, labels[offset + i]!)) return false;
  }
  return true;
}
