/** The action's inputs (action.yml), read and checked before anything is changed on the runner. */
export type EgressPolicy = 'audit' | 'block';
export type DnsPolicy = 'policy' | 'any';
export type EncryptedClientHelloInput = 'refuse' | 'allow';

export interface ActionInputs {
  /** Unset: the policy file's mode, else egress-guard's default (audit). */
  mode?: EgressPolicy;
  /** host[:port] words, exactly as a peer's `allowed-endpoints:` block lists them. */
  allowedEndpoints: string[];
  /** As written in the workflow (relative to the workspace). */
  policyFile?: string;
  allowedIps: string[];
  trustedRanges: string[];
  dnsPolicy?: DnsPolicy;
  /** Unset: the policy file's, else egress-guard's default (refuse). */
  encryptedClientHello?: EncryptedClientHelloInput;
  disableSudo: boolean;
  collectorUrl?: string;
  collectorToken?: string;
  failOnBlock: boolean;
  jobSummary: boolean;
}

export class InputError extends Error {}

/** Reads one input: the empty string when the workflow does not set it (as `core.getInput` does). */
export type InputReader = (name: string) => string;

/** Words of a block scalar or a one-line list: spaces, newlines and commas separate, `#` starts a comment. */
export function inputWords(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.replace(/(^|\s)#.*$/, ''))
    .flatMap((line) => line.split(/[\s,]+/))
    .filter(Boolean);
}

function choice<T extends string>(read: InputReader, name: string, allowed: readonly T[]): T | undefined {
  const value = read(name).trim();
  if (value === '') return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new InputError(`input ${name}: "${value}" is not one of ${allowed.join(', ')}`);
  return value as T;
}

/** The YAML 1.2 core-schema booleans, as the toolkit's getBooleanInput accepts them. */
function flag(read: InputReader, name: string, fallback: boolean): boolean {
  const value = read(name).trim();
  if (value === '') return fallback;
  if (['true', 'True', 'TRUE'].includes(value)) return true;
  if (['false', 'False', 'FALSE'].includes(value)) return false;
  throw new InputError(`input ${name}: "${value}" is not true or false`);
}

function optional(read: InputReader, name: string): string | undefined {
  const value = read(name).trim();
  return value === '' ? undefined : value;
}

export function parseActionInputs(read: InputReader): ActionInputs {
  const inputs: ActionInputs = {
    allowedEndpoints: inputWords(read('allowed-endpoints')),
    allowedIps: inputWords(read('allowed-ips')),
    trustedRanges: inputWords(read('trusted-ranges')),
    disableSudo: flag(read, 'disable-sudo', false),
    failOnBlock: flag(read, 'fail-on-block', false),
    jobSummary: flag(read, 'job-summary', true),
  };
  const mode = choice(read, 'egress-policy', ['audit', 'block'] as const);
  if (mode) inputs.mode = mode;
  const dnsPolicy = choice(read, 'dns-policy', ['policy', 'any'] as const);
  if (dnsPolicy) inputs.dnsPolicy = dnsPolicy;
  const encryptedClientHello = choice(read, 'encrypted-client-hello', ['refuse', 'allow'] as const);
  if (encryptedClientHello) inputs.encryptedClientHello = encryptedClientHello;
  const policyFile = optional(read, 'policy-file');
  if (policyFile) inputs.policyFile = policyFile;
  const collectorUrl = optional(read, 'collector-url');
  if (collectorUrl) {
    let url: URL;
    try {
      url = new URL(collectorUrl);
    } catch {
      throw new InputError(`input collector-url: "${collectorUrl}" is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InputError(`input collector-url: "${collectorUrl}" is not http(s)`);
    inputs.collectorUrl = collectorUrl;
  }
  const collectorToken = optional(read, 'collector-token');
  if (collectorToken) {
    if (!inputs.collectorUrl) throw new InputError('input collector-token is set but collector-url is not');
    inputs.collectorToken = collectorToken;
  }
  return inputs;
}
