import { decision, type Decision } from './decision.js';
import { isRequestRule, type EndpointRule } from './endpoint.js';
import { matchHost } from './host-pattern.js';
import { answersOf, keepAnswer } from './kept-answers.js';
import type { Policy } from './policy.js';
import { matchPath, normalisePath } from './request-path.js';

/**
 * Method and path rules. A host whose entries (allowed or denied) name methods or paths has its requests decided
 * one by one; a host with host-level entries only is decided once per connection, as before. Denied entries win.
 */

/** The entries of `rules` for name:port. */
function entriesFor(rules: readonly EndpointRule[], name: string, port: number): EndpointRule[] {
  return rules.filter((rule) => (rule.port === '*' || rule.port === port) && matchHost(rule.host, name));
}

/** The first denied entry without methods or path (the host denied whole) for name, on `port` or (undefined) any port. */
function deniedWhole(policy: Policy, name: string, port?: number): EndpointRule | undefined {
  return policy.deniedEndpoints.find((r) => !isRequestRule(r) && (port === undefined || r.port === '*' || r.port === port) && matchHost(r.host, name));
}

/** What a policy's entries say about one host and port before any method or path: what a request's decision starts from. */
interface HostEntries {
  /** The host denied whole, on this port. */
  denied: EndpointRule | undefined;
  allowing: EndpointRule[];
  denying: EndpointRule[];
  /** Whether any of them (allowing or denying) names methods or paths. */
  requestRules: boolean;
}

/**
 * HostEntries per policy and host:port, found once and kept (the policy is not changed after it is built; a new
 * policy has a new map): every request of an inspected keep-alive connection has the same host and port, and the
 * search (each entry's port and host pattern) is then made once per policy and host, not per request. Emptied
 * when full (a job talks to tens of hosts, not thousands).
 */
const hostEntriesByPolicy = new WeakMap<Policy, Map<string, HostEntries>>();
const MAX_HOSTS_PER_POLICY = 4096;

function hostEntries(policy: Policy, name: string, port: number): HostEntries {
  const byHost = answersOf(hostEntriesByPolicy, policy);
  // A canonical name has no space: the key is unambiguous.
  const key = `${port} ${name}`;
  const kept = byHost.get(key);
  if (kept !== undefined) return kept;
  const allowing = entriesFor(policy.endpoints, name, port);
  const denying = entriesFor(policy.deniedEndpoints, name, port);
  const entries = { denied: deniedWhole(policy, name, port), allowing, denying, requestRules: allowing.some(isRequestRule) || denying.some(isRequestRule) };
  return keepAnswer(byHost, key, entries, MAX_HOSTS_PER_POLICY);
}

const hasPath = (rule: EndpointRule): boolean => rule.path !== undefined;

function methodMatches(rule: EndpointRule, method: string): boolean {
  return rule.methods === undefined || rule.methods.includes(method.toUpperCase());
}

/** Refused whatever the mode says when enforce-denied-in-audit is set. */
function denial(policy: Policy, name: string, rule: EndpointRule, what: string): Decision {
  const refused = decision(policy, false, { reason: 'denied-endpoint', rule: rule.source, host: name, message: `${what} is denied by "${rule.source}" (denied-endpoints)` });
  return policy.enforceDeniedInAudit ? { ...refused, outcome: 'blocked' } : refused;
}

/** A host denied whole (a denied entry without methods or path) for a DNS name, on any port. */
export function deniedHost(policy: Policy, name: string): Decision | undefined {
  const rule = deniedWhole(policy, name);
  return rule ? denial(policy, name, rule, name) : undefined;
}

function notAllowed(policy: Policy, name: string, port: number): Decision {
  return decision(policy, false, { reason: 'not-allowed-endpoint', rule: null, host: name, message: `${name}:${port} is not in allowed-endpoints` });
}

/** The entry that allows a connection, whether its requests must be inspected; or the refusal. */
export type Judgement = { rule: EndpointRule; inspect: boolean } | Decision;

/**
 * A connection whose requests the caller may not see (CONNECT, redirected TLS): allowed by a host-level entry
 * unless request rules also apply to the host; then only when the caller can inspect (`inspectable`).
 */
export function decideConnection(policy: Policy, name: string, port: number, inspectable: boolean): Judgement {
  const { denied, allowing, denying } = hostEntries(policy, name, port);
  if (denied) return denial(policy, name, denied, `${name}:${port}`);
  if (allowing.length === 0) return notAllowed(policy, name, port);
  const hostLevel = allowing.find((rule) => !isRequestRule(rule));
  const requestRules = [...allowing, ...denying].filter(isRequestRule);
  if (requestRules.length === 0 && hostLevel) return { rule: hostLevel, inspect: false };
  if (inspectable) return { rule: hostLevel ?? allowing[0]!, inspect: true };
  return decision(policy, false, {
    reason: 'inspection-required',
    rule: null,
    host: name,
    message: `${name}:${port} has method or path rules ("${requestRules[0]!.source}"), which egress-guard can only enforce on requests it can read; this connection's are not`,
  });
}

/**
 * One HTTP request: denied entries, then the allowing entries' methods and paths. `overrides`: methods the request
 * asks the server to take instead (X-HTTP-Method-Override...), judged as its method is: none may be denied, each must
 * be allowed. `unreadBody`: why a body that may name such a method could not be read (proxy/relay/body-method.ts); the
 * request is then refused where any method is refused that `method` is not (refusedOverride).
 */
export function decideRequest(policy: Policy, name: string, port: number, method: string, target: string, overrides: readonly string[] = [], unreadBody?: string): Judgement {
  const { denied, allowing, denying, requestRules } = hostEntries(policy, name, port);
  if (denied) return denial(policy, name, denied, `${name}:${port}`);
  // A host without method or path entries is judged as before, whatever its paths look like.
  if (!requestRules) return allowing.length === 0 ? notAllowed(policy, name, port) : { rule: allowing[0]!, inspect: false };
  // What the request is called in a refusal's message.
  const request = () => `${method.toUpperCase()} ${name}${target.split('?')[0]}`;
  // The path is judged only where an entry for the host has one: with methods alone, a path the normaliser refuses
  // (npm asks for scoped packages as `/@scope%2fname`) changes nothing.
  let path = '';
  if (allowing.some(hasPath) || denying.some(hasPath)) {
    const normalised = normalisePath(target);
    if (!normalised.ok) return decision(policy, false, { reason: 'invalid-path', rule: null, host: name, message: `${request()}: ${normalised.why}` });
    path = normalised.path;
  }
  // No array made per request (every request of an inspected connection comes here): overrides is empty for nearly all.
  const deniedRequest = denying.find(
    (r) => (methodMatches(r, method) || (overrides.length > 0 && overrides.some((m) => methodMatches(r, m)))) && (r.path === undefined || matchPath(r.path, path, true)),
  );
  if (deniedRequest) return denial(policy, name, deniedRequest, request());
  if (allowing.length === 0) return notAllowed(policy, name, port);
  const allows = (m: string) => allowing.find((r) => methodMatches(r, m) && (r.path === undefined || matchPath(r.path, path)));
  const rule = allows(method);
  const overridden = rule && overrides.find((m) => !allows(m));
  if (overridden !== undefined) {
    const message = `${request()}: it asks the server to take the method ${overridden.toUpperCase()} instead (a method override header, or a _method parameter or body field), which is not allowed`;
    return decision(policy, false, { reason: 'method-not-allowed', rule: null, host: name, message });
  }
  // A body that may name a method (a `_method` form field) but could not be read: as if it named one the path refuses.
  const unreadRefused = rule && unreadBody !== undefined ? refusedOverride(policy, name, port, method, target) : undefined;
  if (unreadRefused !== undefined) {
    const which = unreadRefused === UNNAMED_METHOD ? 'not every method is' : `${unreadRefused} is not`;
    const message = `${request()}: ${unreadBody}, so a _method field in it (which the server would take as the method) could not be judged; ${which} allowed here`;
    return decision(policy, false, { reason: 'method-not-allowed', rule: null, host: name, message });
  }
  if (rule) return { rule, inspect: allowing.some(isRequestRule) };
  const listed = allowing.map((r) => `"${r.source}"`).join(', ');
  if (allowing.some((r) => r.path === undefined || matchPath(r.path, path))) {
    return decision(policy, false, { reason: 'method-not-allowed', rule: null, host: name, message: `${request()}: the method is not allowed (${listed})` });
  }
  return decision(policy, false, { reason: 'path-not-allowed', rule: null, host: name, message: `${request()}: the path is not allowed (${listed})` });
}

/** A method none of a policy's entries can name (they name upper-case letters and `-`): it stands for every such method. */
const UNNAMED_METHOD = 'UNNAMED METHOD';

/**
 * A method that, named as an override (a `_method` field), would refuse a request the entries let through as `method`
 * on `target`, or undefined: every method is judged alike there, or `method` is refused anyway, so what the request
 * asks for in its body changes nothing and the body need not be read. The methods tried: each one an entry for the host
 * names, and one none names (which stands for all the others).
 */
export function refusedOverride(policy: Policy, name: string, port: number, method: string, target: string): string | undefined {
  const { allowing, denying, requestRules } = hostEntries(policy, name, port);
  if (!requestRules || 'outcome' in decideRequest(policy, name, port, method, target)) return undefined;
  // Denied methods first, so that a refusal names the one it is for.
  const tried = new Set<string>();
  for (const rule of denying) for (const m of rule.methods ?? []) tried.add(m);
  for (const rule of allowing) for (const m of rule.methods ?? []) tried.add(m);
  tried.add(UNNAMED_METHOD);
  for (const m of tried) if ('outcome' in decideRequest(policy, name, port, method, target, [m])) return m;
  return undefined;
}
