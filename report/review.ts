import { getDomain } from 'tldts';
import { destinationKey, SEVERITY, type Destination, type Summary } from './summary.js';

/** Why a row looks like an attack rather than an entry missing from the allowlist. */
export type FlagId = 'dns-tunnelling' | 'raw-ip' | 'fronting' | 'upload' | 'around-proxy' | 'before-rules';

export interface Flag {
  id: FlagId;
  text: string;
}

/** A row a reviewer reads: one destination, or the many names of one registrable domain folded together. */
export interface ReviewRow extends Omit<Destination, 'host' | 'outcomes'> {
  /** `host:port`, or `*.domain (N names)` for a folded group. */
  label: string;
  hosts: string[];
  flags: Flag[];
}

/** Names under one registrable domain past which they are one row (each its own row buries the report). */
const FOLD_AT = 4;
/** A label this long and this random is data, not a host name someone chose. */
const ENCODED_LABEL_LENGTH = 16;
/** Random base32/base64 chunks reach this; chosen names, however long, stay below it. */
const ENCODED_LABEL_ENTROPY = 4.0;
/** Hex has only 16 symbols (at most 4 bits a character), so for it: digits mixed in, and no word separators. */
const HEX_LIKE = /^(?=(?:[^0-9]*[0-9]){3})[0-9a-z]+$/;
const HEX_LIKE_ENTROPY = 3.0;
/** DNS tunnelling: this many encoded names under one domain. */
const TUNNEL_NAMES = 3;
/** An upload this much larger than the download, and at least this large, to a destination not allowed. */
const UPLOAD_RATIO = 10;
const UPLOAD_MIN_BYTES = 64 * 1024;

/** Shannon entropy of a string, in bits per character. */
export function entropy(text: string): number {
  const counts = new Map<string, number>();
  for (const c of text) counts.set(c, (counts.get(c) ?? 0) + 1);
  let bits = 0;
  for (const n of counts.values()) {
    const p = n / text.length;
    bits -= p * Math.log2(p);
  }
  return bits;
}

/** True for a label that carries data (hex, base32/64 chunks of a DNS tunnel), not a chosen name. */
export function looksEncoded(label: string): boolean {
  if (label.length < ENCODED_LABEL_LENGTH) return false;
  const text = label.toLowerCase();
  const bits = entropy(text);
  return bits >= ENCODED_LABEL_ENTROPY || (HEX_LIKE.test(text) && bits >= HEX_LIKE_ENTROPY);
}

/** Sizes people read: 0 B, 512 B, 1.5 KiB, 64 MiB, 2.1 GiB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function domainOf(host: string): string | undefined {
  return getDomain(host, { allowPrivateDomains: true, validHosts: ['localhost'] }) ?? undefined;
}

function rowOf(label: string, destinations: readonly Destination[]): ReviewRow {
  const first = destinations[0]!;
  const row: ReviewRow = {
    label,
    hosts: [],
    port: first.port,
    kinds: [],
    count: 0,
    first: first.first,
    last: first.last,
    decision: 'allowed',
    reasons: [],
    ips: [],
    bytesIn: 0,
    bytesOut: 0,
    flags: [],
  };
  // The row's addresses as a set beside its list (first seen first), as summarize keeps a destination's: a CDN name
  // seen on 30,000 addresses made a lookup in the list per address quadratic (~0.8 s; 60,000: ~3 s per page view).
  const ips = new Set<string>();
  for (const d of destinations) {
    row.hosts.push(d.host);
    for (const k of d.kinds) if (!row.kinds.includes(k)) row.kinds.push(k);
    for (const r of d.reasons) if (!row.reasons.includes(r)) row.reasons.push(r);
    for (const ip of d.ips) {
      if (ips.has(ip)) continue;
      ips.add(ip);
      row.ips.push(ip);
    }
    row.count += d.count;
    if (d.first < row.first) row.first = d.first;
    if (d.last > row.last) row.last = d.last;
    if (SEVERITY[d.decision] > SEVERITY[row.decision]) row.decision = d.decision;
    row.bytesIn += d.bytesIn;
    row.bytesOut += d.bytesOut;
  }
  return row;
}

function flagsOf(row: ReviewRow): Flag[] {
  const flags: Flag[] = [];
  const encoded = row.hosts.filter((h) => h.split('.').some(looksEncoded));
  if (encoded.length >= TUNNEL_NAMES) flags.push({ id: 'dns-tunnelling', text: `${encoded.length} names with long random labels under one domain: data encoded in DNS queries` });
  if (row.reasons.includes('raw-ip')) flags.push({ id: 'raw-ip', text: 'a connection to a raw IP address, with no name looked up' });
  if (row.reasons.includes('sni-mismatch')) flags.push({ id: 'fronting', text: 'the name claimed (SNI or Host) is not where the connection went: fronting or a forged SNI' });
  // Only where the policy would not allow it: an allowed cache or artifact upload is the job's own business.
  if (row.decision !== 'allowed' && row.bytesOut >= UPLOAD_MIN_BYTES && row.bytesOut >= UPLOAD_RATIO * row.bytesIn) {
    flags.push({ id: 'upload', text: `uploaded ${formatBytes(row.bytesOut)} and downloaded ${formatBytes(row.bytesIn)}` });
  }
  if (row.reasons.some((r) => r === 'not-proxied' || r === 'inbound-reply' || r === 'own-connection')) {
    flags.push({ id: 'around-proxy', text: 'traffic that goes around the proxy (UDP, ICMP, answers to outside hosts)' });
  }
  if (row.reasons.includes('established-before-rules')) {
    flags.push({ id: 'before-rules', text: 'a connection open before the rules were applied, still sending: egress-guard never saw its name' });
  }
  return flags;
}

/**
 * The rows a reviewer should read first: destinations grouped by registrable domain when one domain has many
 * names (a DNS tunnel is one row, not fifty), each flagged when it looks like an attack, flagged rows first,
 * then blocked, would-block and allowed ones.
 */
export function review(summary: Pick<Summary, 'destinations'>): ReviewRow[] {
  const byDomain = new Map<string, Destination[]>();
  const rows: ReviewRow[] = [];
  for (const d of summary.destinations) {
    const domain = domainOf(d.host);
    const key = domain ? `${domain}|${d.port}|${d.kinds.includes('dns') ? 'dns' : 'conn'}` : undefined;
    if (!key) {
      rows.push(rowOf(destinationKey(d.host, d.port), [d]));
      continue;
    }
    let group = byDomain.get(key);
    if (!group) byDomain.set(key, (group = []));
    group.push(d);
  }
  for (const [key, group] of byDomain) {
    const encoded = group.filter((d) => d.host.split('.').some(looksEncoded)).length;
    if (group.length < FOLD_AT && encoded < TUNNEL_NAMES) {
      for (const d of group) rows.push(rowOf(destinationKey(d.host, d.port), [d]));
      continue;
    }
    const domain = key.slice(0, key.indexOf('|'));
    rows.push(rowOf(`${destinationKey(`*.${domain}`, group[0]!.port)} (${group.length} names)`, group));
  }
  for (const row of rows) row.flags = flagsOf(row);
  return rows.sort(
    (a, b) => Number(b.flags.length > 0) - Number(a.flags.length > 0) || SEVERITY[b.decision] - SEVERITY[a.decision] || b.count - a.count || a.label.localeCompare(b.label),
  );
}
