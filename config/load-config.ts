import { isIP } from 'node:net';
import { buildPolicy, parsePolicyFile, PolicyError, splitListString, type FileSetting, type Policy, type PolicySettings, type SourcedEntry } from '../policy/index.js';
import { DEFAULT_POLICY_NAME, DEFAULT_POLICY_YAML } from './default-policy.js';
import { SETTINGS, settingSpec } from './settings.js';
import { defaultStateDir } from './state-dir.js';

export type Flags = Map<string, string[]>;

/** A setting's effective value and where it came from (for the start-up log). */
export interface ResolvedSetting {
  value: string | SourcedEntry[];
  source: 'flag' | 'env' | 'file' | 'default';
  origin: { file: string; line: number };
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Config {
  policy: Policy;
  policyFile?: string;
  listen: ListenAddress;
  eventsFile?: string;
  /** Empty: no DNS server. */
  dnsListen: ListenAddress[];
  dnsUpstream: string[];
  transparentListen: ListenAddress[];
  adminListen?: ListenAddress;
  collectorUrl?: string;
  collectorToken?: string;
  spoolDir?: string;
  resolve: Map<string, string[]>;
  localNames: Map<string, string[]>;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  halfCloseTimeoutMs: number;
  headTimeoutMs: number;
  /** How the DNS server reads and answers UDP (net/udp-batch.ts or node's dgram). */
  dnsUdp: 'batch' | 'dgram';
  /** How decided tunnels are relayed (net/kernel-relay.ts). */
  relay: 'kernel' | 'js';
  /** Bytes a decided tunnel moves in JavaScript before the kernel relay takes it. */
  relayHandOverAfter: number;
  /** Setting relay-thread-after: bytes a kernel relay moves on node's event loop before its thread takes it. */
  relayThreadAfter: number;
  /** Whether V8's young generation may grow (sidecar/young-generation.ts). */
  youngGeneration: 'fixed' | 'grow';
  /** ulogd's JSON file of the rules' NFLOG reports (netlog/). */
  netfilterLog?: string;
  /** Reload when the policy file changes (sidecar/policy-watch.ts). */
  watchPolicy: boolean;
  /** SO_MARK of egress-guard's own outbound sockets (net/socket-mark.ts). */
  socketMark?: number;
  maxTunnels: number;
  drainTimeoutMs: number;
  logLevel: string;
  /** Which events stdout shows (setting `stdout-events`): all, or refused decisions only (the events file has every one). */
  stdoutEvents: 'all' | 'refused';
  /** Generated CA and CA bundle (config/state-dir.ts has the default). */
  stateDir: string;
  /** A supplied CA for TLS inspection: both files or neither. */
  caCert?: string;
  caKey?: string;
  /** The key type of inspection's leaf certificates (certs/leaf-issuer.ts). */
  leafKeyType: 'ecdsa' | 'rsa';
  /** Extra CAs for verifying inspected upstream servers. */
  upstreamCa?: string;
  settings: Map<string, ResolvedSetting>;
}

export class ConfigError extends Error {}

export interface ConfigSources {
  flags: Flags;
  env: NodeJS.ProcessEnv;
  readFile: (path: string) => string;
}

function envOrigin(name: string) {
  return { file: `environment ${name}`, line: 1 };
}

function flagOrigin(key: string) {
  return { file: `flag --${key}`, line: 1 };
}

function layer(sources: ConfigSources): Map<string, ResolvedSetting> {
  const resolved = new Map<string, ResolvedSetting>();
  const put = (key: string, value: FileSetting['value'], source: ResolvedSetting['source'], origin: ResolvedSetting['origin']) => resolved.set(key, { value, source, origin });

  for (const [key, setting] of parsePolicyFile(DEFAULT_POLICY_YAML, DEFAULT_POLICY_NAME)) put(key, setting.value, 'default', setting.origin);
  for (const spec of SETTINGS) if (spec.default !== undefined) put(spec.key, spec.default, 'default', { file: '<default>', line: 0 });

  const policyPath = sources.flags.get('policy')?.at(-1) ?? sources.env.EGRESS_POLICY_FILE;
  if (policyPath) {
    let text: string;
    try {
      text = sources.readFile(policyPath);
    } catch (err) {
      throw new PolicyError(policyPath, 0, '', `cannot read policy file: ${(err as Error).message}`);
    }
    for (const [key, setting] of parsePolicyFile(text, policyPath)) {
      const spec = settingSpec(key);
      if (!spec || key === 'policy') throw new PolicyError(policyPath, setting.origin.line, key, `unknown setting "${key}"`);
      put(key, setting.value, 'file', setting.origin);
    }
    put('policy', policyPath, policyPath === sources.env.EGRESS_POLICY_FILE ? 'env' : 'flag', { file: policyPath, line: 0 });
  }
  for (const spec of SETTINGS) {
    const value = sources.env[spec.env];
    if (value !== undefined && value !== '') put(spec.key, value, 'env', envOrigin(spec.env));
  }
  for (const [key, values] of sources.flags) {
    const spec = settingSpec(key);
    if (!spec) throw new ConfigError(`unknown option --${key}`);
    const origin = flagOrigin(key);
    put(key, spec.list ? values.flatMap((v) => splitListString(v, origin)) : values.at(-1)!, 'flag', origin);
  }
  return resolved;
}

function text(settings: Map<string, ResolvedSetting>, key: string): string | undefined {
  const s = settings.get(key);
  if (!s) return undefined;
  return typeof s.value === 'string' ? s.value.trim() : s.value.map((e) => e.text).join(' ');
}

function list(settings: Map<string, ResolvedSetting>, key: string): string[] {
  const s = settings.get(key);
  if (!s) return [];
  return typeof s.value === 'string' ? splitListString(s.value, s.origin).map((e) => e.text) : s.value.map((e) => e.text);
}

export function parseListen(value: string, key: string): ListenAddress {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]+):(\d+)$/.exec(value) ?? /^()(\d+)$/.exec(value);
  if (!m) throw new ConfigError(`${key}: "${value}" is not host:port`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(`${key}: port ${port} out of range`);
  return { host: m[1] || '127.0.0.1', port };
}

function optionalListen(settings: Map<string, ResolvedSetting>, key: string): ListenAddress | undefined {
  const value = text(settings, key);
  return !value || value === 'off' ? undefined : parseListen(value, key);
}

function integer(settings: Map<string, ResolvedSetting>, key: string): number {
  const value = text(settings, key) ?? '';
  if (!/^\d+$/.test(value)) throw new ConfigError(`${key}: "${value}" is not a whole number`);
  return Number(value);
}

/**
 * A timeout that must be one: 0 would be a timer that fires at once (the sniffing of every connection's first bytes
 * ended before a byte came, every upgrade's connect destroyed at once) here and no timeout at all there (the kernel
 * relay, socket.setTimeout), so it is refused rather than given either meaning.
 */
function timeoutMs(settings: Map<string, ResolvedSetting>, key: string): number {
  const value = text(settings, key) ?? '';
  if (!/^\d+$/.test(value) || Number(value) === 0) throw new ConfigError(`${key}: "${value}" is not a whole number of milliseconds above 0`);
  return Number(value);
}

/** A setting that takes one of a few words; its default (SETTINGS) is the first of them. */
function oneOf<T extends string>(settings: Map<string, ResolvedSetting>, key: string, words: readonly T[]): T {
  const value = (text(settings, key) ?? words[0]!).trim();
  if (!words.includes(value as T)) throw new ConfigError(`${key}: "${value}" is not ${words.join(' or ')}`);
  return value as T;
}

/**
 * `refused` leaves allowed decisions and closes out of stdout: only with an events file, the record of every event.
 * `auto` (the default): refused where there is one, all where stdout is the only record.
 */
function stdoutEvents(settings: Map<string, ResolvedSetting>): 'all' | 'refused' {
  const value = oneOf(settings, 'stdout-events', ['auto', 'all', 'refused'] as const);
  const eventsFile = Boolean(text(settings, 'events-file'));
  if (value === 'refused' && !eventsFile) throw new ConfigError('stdout-events: refused needs events-file (stdout would then be the only record of the events it leaves out)');
  return value === 'auto' ? (eventsFile ? 'refused' : 'all') : value;
}

function boolean(settings: Map<string, ResolvedSetting>, key: string): boolean {
  const value = (text(settings, key) ?? 'false').trim();
  if (value !== 'true' && value !== 'false') throw new ConfigError(`${key}: "${value}" is not true or false`);
  return value === 'true';
}

/** A socket mark: decimal or 0x hex, 1 to 0xffffffff; off (or nothing) for none. */
export function socketMark(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === 'off') return undefined;
  const mark = /^(0x[0-9a-f]{1,8}|\d{1,10})$/i.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!(mark >= 1 && mark <= 0xffffffff)) throw new ConfigError(`socket-mark: "${value}" is not off or a number from 1 to 0xffffffff (decimal or 0x hex)`);
  return mark;
}

/** `name=address` pairs (repeatable names) into name -> addresses. */
function parseNameAddresses(entries: string[], setting: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const entry of entries) {
    const [name, address] = entry.split('=');
    const host = address?.replace(/^\[|\]$/g, '');
    if (!name || !host || !isIP(host)) throw new ConfigError(`${setting}: "${entry}" is not name=address`);
    const key = name.toLowerCase().replace(/\.$/, '');
    map.set(key, [...(map.get(key) ?? []), host]);
  }
  return map;
}

function suppliedCa(settings: Map<string, ResolvedSetting>): { caCert?: string; caKey?: string } {
  const caCert = text(settings, 'ca-cert') || undefined;
  const caKey = text(settings, 'ca-key') || undefined;
  if (!caCert !== !caKey) throw new ConfigError(caCert ? 'ca-cert needs ca-key (the CA private key file)' : 'ca-key needs ca-cert (the CA certificate file)');
  return { caCert, caKey };
}

/** Merge flag > env > file > default and validate; throws PolicyError or ConfigError. */
export function loadConfig(sources: ConfigSources): Config {
  const settings = layer(sources);
  const policySettings: PolicySettings = {};
  for (const spec of SETTINGS) {
    const s = settings.get(spec.key);
    if (spec.policy && s) policySettings[spec.key as keyof PolicySettings] = { value: s.value, origin: s.origin };
  }
  const policy = buildPolicy(policySettings);
  const transparent = list(settings, 'transparent-listen').filter((v) => v !== 'off');
  return {
    policy,
    policyFile: text(settings, 'policy'),
    listen: parseListen(text(settings, 'listen')!, 'listen'),
    eventsFile: text(settings, 'events-file'),
    dnsListen: list(settings, 'dns-listen')
      .filter((v) => v !== 'off')
      .map((v) => parseListen(v, 'dns-listen')),
    dnsUpstream: list(settings, 'dns-upstream'),
    transparentListen: transparent.map((v) => parseListen(v, 'transparent-listen')),
    adminListen: optionalListen(settings, 'admin-listen'),
    collectorUrl: text(settings, 'collector-url'),
    collectorToken: text(settings, 'collector-token'),
    spoolDir: text(settings, 'spool-dir'),
    resolve: parseNameAddresses(list(settings, 'resolve'), 'resolve'),
    localNames: parseNameAddresses(list(settings, 'local-names'), 'local-names'),
    connectTimeoutMs: timeoutMs(settings, 'connect-timeout'),
    idleTimeoutMs: timeoutMs(settings, 'idle-timeout'),
    halfCloseTimeoutMs: integer(settings, 'half-close-timeout'),
    headTimeoutMs: timeoutMs(settings, 'head-timeout'),
    dnsUdp: oneOf(settings, 'dns-udp', ['batch', 'dgram'] as const),
    relay: oneOf(settings, 'relay', ['kernel', 'js'] as const),
    relayHandOverAfter: integer(settings, 'relay-hand-over-after'),
    relayThreadAfter: integer(settings, 'relay-thread-after'),
    youngGeneration: oneOf(settings, 'young-generation', ['fixed', 'grow'] as const),
    netfilterLog: text(settings, 'netfilter-log'),
    socketMark: socketMark(text(settings, 'socket-mark')),
    watchPolicy: boolean(settings, 'watch-policy'),
    maxTunnels: integer(settings, 'max-tunnels'),
    drainTimeoutMs: integer(settings, 'drain-timeout'),
    logLevel: text(settings, 'log-level') ?? 'info',
    stdoutEvents: stdoutEvents(settings),
    stateDir: text(settings, 'state-dir') || defaultStateDir(sources.env),
    ...suppliedCa(settings),
    leafKeyType: oneOf(settings, 'leaf-key-type', ['ecdsa', 'rsa'] as const),
    upstreamCa: text(settings, 'upstream-ca') || undefined,
    settings,
  };
}

/** The effective configuration for the start-up log, secrets redacted. */
export function describeConfig(config: Config): Record<string, { value: string; source: string }> {
  const out: Record<string, { value: string; source: string }> = {};
  for (const [key, s] of config.settings) {
    const spec = settingSpec(key);
    const value = typeof s.value === 'string' ? s.value : s.value.map((e) => e.text).join(' ');
    out[key] = { value: spec?.secret ? '<redacted>' : value, source: s.source };
  }
  return out;
}
