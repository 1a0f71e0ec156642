/** What a decision says: the outcome, why, by which entry. Shared by decide.ts and request-rules.ts. */
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
  | 'ambiguous-host'
  | 'sni-mismatch'
  | 'encrypted-client-hello'
  | 'malformed-request'
  // egress-guard's own limit (max-tunnels), not the policy's.
  | 'at-capacity'
  // A connection to the transparent listener that no redirect rule sent there: there is no destination to decide.
  | 'not-redirected'
  // A DNS query of another class than IN, or a zone transfer: not a lookup egress-guard forwards.
  | 'unsupported-query'
  | 'upstream-unresolvable'
  // Method and path rules (request-rules.ts).
  | 'denied-endpoint'
  | 'path-not-allowed'
  | 'method-not-allowed'
  | 'invalid-path'
  | 'inspection-required'
  // Reported by the redirect rules (netlog/), not decided by the policy: no policy entry allows them.
  | 'not-proxied'
  | 'inbound-reply'
  | 'own-connection'
  // A connection open before the rules, still sending: reported, let through in either mode (rules/iptables-rules.ts RULES_SEEN_MARK).
  | 'established-before-rules';

export interface DecisionRequest {
  /** The host as the client wrote it (name or address in any spelling). */
  host: string;
  port: number;
  /**
   * Addresses the name resolved to. Absent: decide on the name alone (before any lookup, so a blocked
   * name is never resolved). Present: also check them and pick the one to connect to.
   */
  addresses?: readonly string[];
  /** One HTTP request (plain, or inside inspected TLS): decided on its method and request target too. */
  method?: string;
  /** The request target as sent (`/a/b?q`), normalised here (request-path.ts). */
  path?: string;
  /**
   * Methods the request asks a server to take instead of its own (X-HTTP-Method-Override and its like): each must be
   * allowed too where the host has method entries.
   */
  methodOverrides?: readonly string[];
  /**
   * Why the request's body, which may name such a method too (a `_method` form field), could not be read (too large,
   * unfinished): the request is refused where the path refuses a method its own is not (request-rules.ts refusedOverride).
   */
  unreadBody?: string;
  /**
   * A connection (no method/path) whose requests the caller can inspect one by one: a host whose entries name
   * paths or methods is then allowed with `inspect` set; without, such a host cannot be enforced and is refused.
   */
  inspectable?: boolean;
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
  /** The connection's requests must be decided one by one (its host has method or path entries). */
  inspect?: boolean;
}

function outcomeOf(policy: Policy, permitted: boolean): Outcome {
  if (permitted) return 'allowed';
  return policy.mode === 'block' ? 'blocked' : 'would-block';
}

export function decision(policy: Policy, permitted: boolean, fields: Omit<Decision, 'outcome' | 'permitted'>): Decision {
  return { outcome: outcomeOf(policy, permitted), permitted, ...fields };
}
