import type { Origin } from './cidr.js';
import { parseCidrs, parseEndpoints, splitListString, type SourcedEntry } from './policy-lists.js';
import { DNS_MODES, ENCRYPTED_CLIENT_HELLO_CHOICES, MODES, PolicyError, type DnsMode, type EncryptedClientHello, type Mode, type Policy } from './policy.js';

/** A policy setting from any source (file, environment, flag), with where it came from. */
export interface PolicySetting {
  value: string | SourcedEntry[];
  origin: Origin;
}

export interface PolicySettings {
  mode?: PolicySetting;
  dns?: PolicySetting;
  'allowed-endpoints'?: PolicySetting;
  'denied-endpoints'?: PolicySetting;
  'enforce-denied-in-audit'?: PolicySetting;
  'log-query'?: PolicySetting;
  'encrypted-client-hello'?: PolicySetting;
  'allowed-ips'?: PolicySetting;
  'trusted-ranges'?: PolicySetting;
}

export const POLICY_KEYS = [
  'mode',
  'dns',
  'allowed-endpoints',
  'denied-endpoints',
  'enforce-denied-in-audit',
  'log-query',
  'encrypted-client-hello',
  'allowed-ips',
  'trusted-ranges',
] as const;

function entries(setting: PolicySetting | undefined): SourcedEntry[] {
  if (!setting) return [];
  return typeof setting.value === 'string' ? splitListString(setting.value, setting.origin) : setting.value;
}

function oneOf<T extends string>(setting: PolicySetting | undefined, key: string, allowed: readonly T[], fallback: T): T {
  if (!setting) return fallback;
  const value = typeof setting.value === 'string' ? setting.value.trim() : '';
  if (!(allowed as readonly string[]).includes(value)) {
    throw new PolicyError(setting.origin.file, setting.origin.line, value, `${key} must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

/** Build a validated policy; throws PolicyError naming the file (or variable), line and entry. */
export function buildPolicy(settings: PolicySettings): Policy {
  const endpoints = parseEndpoints(entries(settings['allowed-endpoints']));
  const deniedEndpoints = parseEndpoints(entries(settings['denied-endpoints']));
  return {
    mode: oneOf<Mode>(settings.mode, 'mode', MODES, 'audit'),
    dns: oneOf<DnsMode>(settings.dns, 'dns', DNS_MODES, 'policy'),
    endpoints,
    deniedEndpoints,
    enforceDeniedInAudit: oneOf(settings['enforce-denied-in-audit'], 'enforce-denied-in-audit', ['true', 'false'], 'false') === 'true',
    logQuery: oneOf(settings['log-query'], 'log-query', ['true', 'false'], 'false') === 'true',
    encryptedClientHello: oneOf<EncryptedClientHello>(settings['encrypted-client-hello'], 'encrypted-client-hello', ENCRYPTED_CLIENT_HELLO_CHOICES, 'refuse'),
    allowedIps: parseCidrs(entries(settings['allowed-ips']), 'allowed-ips'),
    trustedRanges: parseCidrs(entries(settings['trusted-ranges']), 'trusted-ranges'),
    warnings: [...endpoints, ...deniedEndpoints].flatMap((rule) => (rule.warning ? [`${rule.origin.file}:${rule.origin.line}: ${rule.warning}`] : [])),
  };
}
