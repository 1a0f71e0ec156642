import type { CidrRule } from './cidr.js';
import type { EndpointRule } from './endpoint.js';

export type Mode = 'audit' | 'block';
export const MODES: readonly Mode[] = ['audit', 'block'];

/** `policy`: DNS answers only names the endpoints allow; `any`: resolution stays open, connections filtered. */
export type DnsMode = 'policy' | 'any';
export const DNS_MODES: readonly DnsMode[] = ['policy', 'any'];

/**
 * What a TLS connection decided by its SNI (not inspected) gets when its ClientHello carries an encrypted inner one
 * (ECH): `refuse`, the inner hello names a server egress-guard cannot read; `allow`, decided on the outer SNI alone.
 */
export type EncryptedClientHello = 'refuse' | 'allow';
export const ENCRYPTED_CLIENT_HELLO_CHOICES: readonly EncryptedClientHello[] = ['refuse', 'allow'];

export interface Policy {
  mode: Mode;
  dns: DnsMode;
  endpoints: EndpointRule[];
  /** Refused whatever the allow entries say (denied-endpoint); in audit mode too with enforceDeniedInAudit. */
  deniedEndpoints: EndpointRule[];
  enforceDeniedInAudit: boolean;
  /** Events keep query strings of inspected requests (else the path alone). */
  logQuery: boolean;
  encryptedClientHello: EncryptedClientHello;
  allowedIps: CidrRule[];
  trustedRanges: CidrRule[];
  /** Warnings found at load (e.g. wildcard over github.io), logged by the caller. */
  warnings: string[];
}

export class PolicyError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly entry: string,
    readonly reason: string,
  ) {
    super(`${file}:${line}: ${entry && !reason.includes(`"${entry}"`) ? `"${entry}": ` : ''}${reason}`);
    this.name = 'PolicyError';
  }
}
