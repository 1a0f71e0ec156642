import type { Decision, Reason } from './decide.js';
import type { Policy } from './policy.js';

/** The message of an `encrypted-client-hello` refusal (a TLS connection decided by its SNI, whose ClientHello carries ECH). */
export const ENCRYPTED_CLIENT_HELLO_REFUSED =
  'the ClientHello carries an encrypted inner ClientHello (ECH) whose server name egress-guard cannot read (policy encrypted-client-hello: refuse)';

/**
 * A decision that refuses, made outside decide() (an SNI that disagrees with its destination, a DNS name
 * that is no host name): `blocked` in block mode, `would-block` in audit mode, where it is only reported.
 */
export function refusal(policy: Pick<Policy, 'mode'>, fields: { reason: Reason; host: string; ip?: string; message: string }): Decision {
  return {
    outcome: policy.mode === 'block' ? 'blocked' : 'would-block',
    permitted: false,
    reason: fields.reason,
    rule: null,
    host: fields.host,
    ...(fields.ip !== undefined && { ip: fields.ip }),
    message: fields.message,
  };
}
