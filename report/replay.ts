import { buildPolicy, decide, decideName, parsePolicyFile, POLICY_KEYS, type Policy, type PolicySettings } from '../policy/index.js';
import type { EgressEvent, RequestKind } from '../events/schema.js';
import { NOT_POLICY_REASONS, RULES_ONLY_REASONS } from './suggest.js';
import { destinationKey, isDecision } from './summary.js';

export interface WouldBlock {
  host: string;
  port: number;
  kinds: RequestKind[];
  count: number;
  reason: string;
  message: string;
  first: string;
}

export interface ReplayResult {
  /** Destinations the policy in block mode would have refused, in order of first use. */
  blocked: WouldBlock[];
  decisions: number;
  /** Decisions left out: the request was unusable whatever the policy (invalid host, malformed request). */
  ignored: number;
}

/** Read a policy file's policy settings (other settings, such as listen, are ignored). */
export function policyFromFile(text: string, file: string): Policy {
  const settings: PolicySettings = {};
  for (const [key, setting] of parsePolicyFile(text, file)) {
    if ((POLICY_KEYS as readonly string[]).includes(key)) settings[key as keyof PolicySettings] = setting;
  }
  return buildPolicy(settings);
}

/**
 * Decide every recorded decision again under `policy` in block mode: connections with decide() on the
 * recorded host, port and address (the one the proxy connected to), DNS queries with decideName().
 */
export function replay(policy: Policy, events: readonly EgressEvent[]): ReplayResult {
  const strict: Policy = { ...policy, mode: 'block' };
  const blocked = new Map<string, WouldBlock>();
  const seen = new Set<string>();
  let ignored = 0;
  for (const event of events) {
    if (!isDecision(event) || seen.has(event.id)) continue;
    seen.add(event.id);
    if (NOT_POLICY_REASONS.has(event.reason)) {
      ignored++;
      continue;
    }
    // What the redirect rules refuse whatever the policy says (UDP but DNS, ICMP, answers to outside hosts).
    const decision = RULES_ONLY_REASONS.has(event.reason)
      ? { permitted: false, reason: event.reason, host: event.host, message: `${event.kind}: the redirect rules refuse it in block mode whatever the policy says` }
      : event.kind === 'dns'
        ? decideName(strict, event.host)
        : decide(strict, { host: event.host, port: event.port, ...(event.ip !== undefined && { addresses: [event.ip] }) });
    if (decision.permitted) continue;
    if (decision.reason === 'invalid-host') {
      ignored++;
      continue;
    }
    const prefix = event.kind === 'dns' || RULES_ONLY_REASONS.has(event.reason) ? `${event.kind} ` : '';
    const key = `${prefix}${destinationKey(decision.host, event.port)}`;
    const entry = blocked.get(key);
    if (entry) {
      entry.count++;
      if (!entry.kinds.includes(event.kind)) entry.kinds.push(event.kind);
    } else {
      blocked.set(key, {
        host: decision.host,
        port: event.port,
        kinds: [event.kind],
        count: 1,
        reason: decision.reason,
        message: decision.message,
        first: event.time,
      });
    }
  }
  return { blocked: [...blocked.values()].sort((a, b) => Date.parse(a.first) - Date.parse(b.first)), decisions: seen.size, ignored };
}
