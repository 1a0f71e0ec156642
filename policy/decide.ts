export type { Decision, DecisionRequest, Outcome, Reason } from './decision.js';
import { classifyAddress } from './address-safety.js';
import { findCidr } from './cidr.js';
import { canonicalHost, parseAddress, type Address, type CanonicalHost } from './host.js';
import { matchHost } from './host-pattern.js';
import { answersOf, keepAnswer } from './kept-answers.js';
import { formatHostPort } from './host-port.js';
import type { Policy } from './policy.js';
import { decision, type Decision, type DecisionRequest } from './decision.js';
import { decideConnection, decideRequest, deniedHost, refusedOverride } from './request-rules.js';

/** The first endpoint rule allowing name:port, or, with port undefined, allowing the name on any port. */
export function findEndpoint(policy: Policy, name: string, port?: number) {
  return policy.endpoints.find((rule) => (port === undefined || rule.port === '*' || rule.port === port) && matchHost(rule.host, name));
}

/**
 * Answers of decideAddresses for one address, per policy (pure: the addresses' parse and class, and the policy's
 * trusted ranges): every request of an inspected keep-alive connection, and every redirected connection, is checked
 * against one address the same way. Frozen: callers share them. Emptied when full.
 */
const addressAnswersByPolicy = new WeakMap<Policy, Map<string, Decision>>();
const MAX_ADDRESS_ANSWERS = 4096;

function decideAddressesOnce(policy: Policy, host: string, port: number, rule: string, addresses: readonly string[]): Decision {
  if (addresses.length !== 1) return decideAddresses(policy, host, port, rule, addresses);
  const answers = answersOf(addressAnswersByPolicy, policy);
  // The rule's length first: neither a canonical host nor a port has a space, so the key reads back one way only.
  const key = `${rule.length}:${rule}${port} ${host} ${addresses[0]}`;
  return answers.get(key) ?? keepAnswer(answers, key, Object.freeze(decideAddresses(policy, host, port, rule, addresses)), MAX_ADDRESS_ANSWERS);
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

/**
 * canonicalHost's answers by the text asked (pure; frozen: callers share them), for decide(): the requests of a
 * keep-alive connection and the connections of a job name the same few hosts again and again. Emptied when full.
 */
const canonicalHosts = new Map<string, CanonicalHost>();
const MAX_CANONICAL_HOSTS = 4096;
/** A name's longest text, with a trailing dot, or an IPv6 address's in brackets with a zone. */
const MAX_NAME_LENGTH = 256;

function canonicalHostOnce(host: string): CanonicalHost {
  // A text longer than any host name is answered without being kept (the memo holds at most 4096 short texts).
  if (host.length > MAX_NAME_LENGTH) return canonicalHost(host);
  return canonicalHosts.get(host) ?? keepAnswer(canonicalHosts, host, Object.freeze(canonicalHost(host)), MAX_CANONICAL_HOSTS);
}

/** The one decision function every listener calls (HTTP, CONNECT, transparent). Pure. */
export function decide(policy: Policy, request: DecisionRequest): Decision {
  const canonical = canonicalHostOnce(request.host);
  const port = request.port;
  if (canonical.type === 'invalid') {
    // Blocked in audit mode too: a request to no valid host cannot be forwarded, so audit has nothing to let through.
    return { outcome: 'blocked', permitted: false, reason: 'invalid-host', rule: null, host: request.host, message: canonical.why };
  }
  if (canonical.type === 'ip') return decideRawIp(policy, canonical.ip, canonical.text, port);
  const name = canonical.name;
  const judged =
    request.method !== undefined || request.path !== undefined
      ? decideRequest(policy, name, port, request.method ?? 'GET', request.path ?? '/', request.methodOverrides, request.unreadBody)
      : decideConnection(policy, name, port, request.inspectable === true);
  if ('outcome' in judged) return judged;
  const { rule, inspect } = judged;
  const decided =
    request.addresses === undefined
      ? decision(policy, true, { reason: 'allowed-endpoint', rule: rule.source, host: name, message: `${name}:${port} is allowed by "${rule.source}"` })
      : decideAddressesOnce(policy, name, port, rule.source, request.addresses);
  return inspect ? { ...decided, inspect } : decided;
}

/**
 * Whether a method the request could ask for in its body (a `_method` form field) would change its decision: some
 * method is refused on its host and path that its own method is not (request-rules.ts refusedOverride). Only then
 * is its body worth reading before it is decided (proxy/relay/body-method.ts).
 */
export function bodyMethodMatters(policy: Policy, request: { host: string; port: number; method: string; path: string }): boolean {
  const canonical = canonicalHostOnce(request.host);
  // Addresses are decided by allowed-ips alone, and an invalid host is refused: no method rules for either.
  if (canonical.type !== 'name') return false;
  return refusedOverride(policy, canonical.name, request.port, request.method, request.path) !== undefined;
}

/**
 * What decide(policy, { ...request, addresses }) returns, from decide(policy, request)'s answer on the name alone:
 * the addresses are checked only when the name was let through by an endpoint rule (`allowed-endpoint`, no address
 * yet); every other answer (a refusal, a would-block, a raw IP) does not depend on them and is the same. Saves the
 * second canonicalisation and rule search of a tunnel's two-step decision (policy-decide.test.ts compares the two).
 */
export function decideOnAddresses(policy: Policy, onName: Decision, port: number, addresses: readonly string[]): Decision {
  if (!onName.permitted || onName.reason !== 'allowed-endpoint' || onName.ip !== undefined || onName.rule === null) return onName;
  const decided = decideAddressesOnce(policy, onName.host, port, onName.rule, addresses);
  return onName.inspect ? { ...decided, inspect: true } : decided;
}

/** Decide a DNS query name: allowed if any endpoint's host pattern matches it, whatever the port. */
export function decideName(policy: Policy, queryName: string): Decision {
  const canonical = canonicalHost(queryName);
  if (canonical.type === 'invalid') {
    return decision(policy, false, { reason: 'invalid-host', rule: null, host: queryName, message: canonical.why });
  }
  const name = canonical.type === 'ip' ? canonical.text : canonical.name;
  // A host denied whole is not resolved either (dns: any included): its name is the first step of the way out.
  const denied = canonical.type === 'name' ? deniedHost(policy, name) : undefined;
  if (denied) return denied;
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
