import type { ActionInputs } from './inputs.js';
import { PORTS, type ActionLayout } from './layout.js';

export interface SidecarFacts {
  /** Upstream resolvers egress-guard forwards allowed names to (never itself). */
  dnsUpstream: string[];
  /** ulogd's JSON file, when ulogd runs. */
  netfilterLog?: string;
  /** Where the policy file was copied for the egress-guard user (when policy-file is set). */
  policyFile?: string;
  /** Replaces the allowed-endpoints input: the effective list with the runner's own endpoints added. */
  allowedEndpoints?: readonly string[];
  /** The job's GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_JOB: every event names its job (sudo would drop them). */
  ci?: Record<string, string>;
}

const CI_VARIABLES = ['GITHUB_REPOSITORY', 'GITHUB_RUN_ID', 'GITHUB_JOB'];

export function ciVariables(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(CI_VARIABLES.filter((name) => env[name]).map((name) => [name, env[name]!]));
}

/**
 * egress-guard's settings as its environment variables (docs: README "Settings"): the inputs, over the policy
 * file when there is one (environment beats file), and the listeners the redirect rules point at.
 */
export function sidecarEnvironment(inputs: ActionInputs, layout: ActionLayout, facts: SidecarFacts): Record<string, string> {
  const env: Record<string, string> = {
    ...facts.ci,
    EGRESS_LISTEN: `127.0.0.1:${PORTS.proxy}`,
    EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:${PORTS.transparent} [::1]:${PORTS.transparent} 0.0.0.0:${PORTS.containerTransparent} [::]:${PORTS.containerTransparent}`,
    EGRESS_DNS_LISTEN: `127.0.0.1:${PORTS.dns} [::1]:${PORTS.dns} 0.0.0.0:${PORTS.containerDns} [::]:${PORTS.containerDns}`,
    EGRESS_ADMIN_LISTEN: `127.0.0.1:${PORTS.admin}`,
    EGRESS_EVENTS_FILE: layout.eventsFile,
    EGRESS_STATE_DIR: layout.sidecarStateDir,
    EGRESS_DNS_UPSTREAM: facts.dnsUpstream.join(' '),
  };
  if (facts.policyFile) env.EGRESS_POLICY_FILE = facts.policyFile;
  if (facts.netfilterLog) env.EGRESS_NETFILTER_LOG = facts.netfilterLog;
  if (inputs.mode) env.EGRESS_MODE = inputs.mode;
  if (inputs.dnsPolicy) env.EGRESS_DNS = inputs.dnsPolicy;
  if (inputs.encryptedClientHello) env.EGRESS_ENCRYPTED_CLIENT_HELLO = inputs.encryptedClientHello;
  const allowedEndpoints = facts.allowedEndpoints ?? inputs.allowedEndpoints;
  if (allowedEndpoints.length > 0) env.EGRESS_ALLOWED_ENDPOINTS = allowedEndpoints.join(' ');
  if (inputs.allowedIps.length > 0) env.EGRESS_ALLOWED_IPS = inputs.allowedIps.join(' ');
  if (inputs.trustedRanges.length > 0) env.EGRESS_TRUSTED_RANGES = inputs.trustedRanges.join(' ');
  if (inputs.collectorUrl) {
    env.EGRESS_COLLECTOR_URL = inputs.collectorUrl;
    env.EGRESS_SPOOL_DIR = layout.spoolDir;
  }
  if (inputs.collectorToken) env.EGRESS_COLLECTOR_TOKEN = inputs.collectorToken;
  return env;
}

/** The input each environment variable above comes from, to name it in errors as the workflow names it. */
const INPUT_OF_VARIABLE: Record<string, string> = {
  EGRESS_MODE: 'egress-policy',
  EGRESS_DNS: 'dns-policy',
  EGRESS_ENCRYPTED_CLIENT_HELLO: 'encrypted-client-hello',
  EGRESS_ALLOWED_ENDPOINTS: 'allowed-endpoints',
  EGRESS_ALLOWED_IPS: 'allowed-ips',
  EGRESS_TRUSTED_RANGES: 'trusted-ranges',
  EGRESS_COLLECTOR_URL: 'collector-url',
};

/** egress-guard's `environment EGRESS_ALLOWED_ENDPOINTS:1: ...` as `input allowed-endpoints: ...` (the :1 is a line of the joined value). */
export function inInputTerms(message: string): string {
  return message.replace(/environment (EGRESS_[A-Z_]+):\d+/g, (whole, variable: string) => (INPUT_OF_VARIABLE[variable] ? `input ${INPUT_OF_VARIABLE[variable]}` : whole));
}
