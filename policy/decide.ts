import { classifyAddress } from './address-safety.js';
import { findCidr } from './cidr.js';
import { canonicalHost, parseAddress, type Address } from './host.js';
import { matchHost } from './host-pattern.js';
import { formatHostPort } from './host-port.js';
import type { Policy } from './policy.js';

export type Outcome = 'allowed' | 'blocked' | 'would-block';

export type Reason =
  | 'allowed-endpoint'
  | 'allowed-ip'
  | 'trusted-range'
  | 'dns-any'
  | 'local-name'
  | 'not-allowed-endpoint'
  | 'raw-ip'
  | 'denied-address'
  | 'invalid-host'
  | 'sni-mismatch'
  | 'malformed-request'
  | 'upstream-unresolvable'
  // Reported by the redirect rules (netlog/), not decided by the policy: no policy entry allows them.
  | 'not-proxied'
  | 'inbound-reply'
  | 'own-connection';

export interface DecisionRequest {
  /** The host as the client wrote it (name or address in any spelling). */
  host: string;
  port: number;
  /**
   * Addresses the name resolved to. Absent: decide on the name alone (before any lookup, so a blocked
   * name is never resolved). Present: also check them and pick the one to connect to.
   */
  addresses?: readonly string[];
}

export interface Decision {
  outcome: Outcome;
  /** What the policy says, whatever the mode: audit forwards a `false` here and reports would-block. */
  permitted: boolean;
  reason: Reason;
  /** The policy entry that decided, as written; null when no rule matched. */
  rule: string | null;
  /** A sentence a person understands, sent to blocked clients in X-Egress-Guard-Reason. */
  message: string;
  /** Canonical host (lowercase punycode name, or address text). */
  host: string;
  /** The address checked and to connect to (for raw-IP requests: the canonical address). */
  ip?: string;
}

function outcomeOf(policy: Policy, permitted: boolean): Outcome {
  if (permitted) return 'allowed';
  return policy.mode === 'block' ? 'blocked' : 'would-block';
}

function decision(policy: Policy, permitted: boolean, fields: Omit<Decision, 'outcome' | 'permitted'>): Decision {
  return { outcome: outcomeOf(policy, permitted), permitted, ...fields };
}

/** The first endpoint rule allowing name:port, or, with port undefined, allowing the name on any port. */
export function findEndpoint(policy: Policy, name: string, port?: number) {
  return policy.endpoints.find((rule) => (port === undefined || rule.port === '*' || rule.port === port) && matchHost(rule.host, name));
}

/** Check resolved addresses against address safety; returns the address to connect to, if any. */
function decideAddresses(policy: Policy, host: string, port: number, rule: string, addresses: readonly string[]): Decision {
  let firstDenied: { text: string; range: string } | undefined;
  for (const text of addresses) {
    const ip = parseAddress(text);
    if (!ip) continue;
    const cls = classifyAddress(ip);
    if (cls.publicUnicast) return decision(policy, true, { reason: 'allowed-endpoint', rule, host, ip: ip.toString(), message: `${host}:${port} is allowed by "${rule}"` });
    const trusted = findCidr(policy.trustedRanges, ip) ?? (cls.embedded ? findCidr(policy.trustedRanges, cls.embedded) : undefined);
    if (trusted) {
      return decision(policy, true, {
        reason: 'trusted-range',
        rule: `${rule} + trusted-ranges ${trusted.source}`,
        host,
        ip: ip.toString(),
        message: `${host}:${port} is allowed by "${rule}" and resolves into trusted range ${trusted.source}`,
      });
    }
    firstDenied ??= { text: ip.toString(), range: cls.range };
  }
  if (!firstDenied) {
    return decision(policy, false, { reason: 'upstream-unresolvable', rule: null, host, message: `${host} did not resolve to a usable address` });
  }
  return decision(policy, false, {
    reason: 'denied-address',
    rule: null,
    host,
    ip: firstDenied.text,
    message: `${host} resolves to ${firstDenied.text} (${firstDenied.range}), which is not in trusted-ranges`,
  });
}

function decideRawIp(policy: Policy, ip: Address, text: string, port: number): Decision {
  const allowed = findCidr(policy.allowedIps, ip);
  if (allowed) return decision(policy, true, { reason: 'allowed-ip', rule: allowed.source, host: text, ip: text, message: `${text} is in allowed-ips ${allowed.source}` });
  return decision(policy, false, { reason: 'raw-ip', rule: null, host: text, ip: text, message: `${formatHostPort(text, port)} is a raw IP address and not in allowed-ips` });
}

/** The one decision function every listener calls (HTTP, CONNECT, transparent). Pure. */
export function decide(policy: Policy, request: DecisionRequest): Decision {
  const canonical = canonicalHost(request.host);
  const port = request.port;
  if (canonical.type === 'invalid') {
    // Blocked in audit mode too: a request to no valid host cannot be forwarded, so audit has nothing to let through.
    return { outcome: 'blocked', permitted: false, reason: 'invalid-host', rule: null, host: request.host, message: canonical.why };
  }
  if (canonical.type === 'ip') return decideRawIp(policy, canonical.ip, canonical.text, port);
  const name = canonical.name;
  const rule = findEndpoint(policy, name, port);
  if (!rule) {
    return decision(policy, false, { reason: 'not-allowed-endpoint', rule: null, host: name, message: `${name}:${port} is not in allowed-endpoints` });
  }
  if (request.addresses === undefined) {
    return decision(policy, true, { reason: 'allowed-endpoint', rule: rule.source, host: name, message: `${name}:${port} is allowed by "${rule.source}"` });
  }
  return decideAddresses(policy, name, port, rule.source, request.addresses);
}

/** Decide a DNS query name: allowed if any endpoint's host pattern matches it, whatever the port. */
export function decideName(policy: Policy, queryName: string): Decision {
  const canonical = canonicalHost(queryName);
  if (canonical.type === 'invalid') {
    return decision(policy, false, { reason: 'invalid-host', rule: null, host: queryName, message: canonical.why });
  }
  const name = canonical.type === 'ip' ? canonical.text : canonical.name;
  if (policy.dns === 'any') return decision(policy, true, { reason: 'dns-any', rule: 'dns: any', host: name, message: 'dns: any resolves every name' });
  const rule = canonical.type === 'name' ? findEndpoint(policy, name) : undefined;
  if (!rule) return decision(policy, false, { reason: 'not-allowed-endpoint', rule: null, host: name, message: `${name} is not in allowed-endpoints` });
  return decision(policy, true, { reason: 'allowed-endpoint', rule: rule.source, host: name, message: `${name} is allowed by "${rule.source}"` });
}

/** Addresses of a raw-IP host, or null for names. */
export function literalAddress(host: string): string | null {
  const canonical = canonicalHost(host);
  return canonical.type === 'ip' ? canonical.text : null;
}
