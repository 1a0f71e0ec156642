import type { SecureContext } from 'node:tls';
import { CaError } from '../certs/ca-error.js';
import type { LeafIssuer } from '../certs/leaf-issuer.js';
import { ensureTrustBundle } from '../certs/trust-bundle.js';
import { upstreamSecureContext } from '../certs/upstream-trust.js';
import type { Config } from '../config/load-config.js';
import type { EventLog } from '../events/event-log.js';
import { isRequestRule, type Policy } from '../policy/index.js';
import type { LeafSource } from '../proxy/relay/inspection.js';

/** A policy with method or path entries needs TLS inspection for those hosts. */
export function policyInspects(policy: Policy): boolean {
  return [...policy.endpoints, ...policy.deniedEndpoints].some(isRequestRule);
}

export interface InspectionTrust {
  /** Leaf certificates of egress-guard's CA, the CA loaded (or generated) on first use. */
  leaves: LeafSource;
  /** Roots for verifying upstream servers, parsed on first use (it costs ~100 ms). */
  upstreamTrust: () => SecureContext;
  /** Load the CA now (start, reload): a CA that cannot be used stops a policy that needs it, not a connection. */
  prepare(): Promise<void>;
}

/**
 * The CA side of TLS inspection, loaded only when a policy inspects: a sidecar whose policy has host-level
 * entries only never reads or generates a CA. prepare() also writes the trust bundle (system roots + CA) into
 * the state directory, for `egress-guard env --trust-ca` run by a user who cannot write there.
 */
export function inspectionTrust(config: Pick<Config, 'stateDir' | 'caCert' | 'caKey' | 'leafKeyType' | 'upstreamCa'>, events: EventLog): InspectionTrust {
  let issuer: LeafIssuer | undefined;
  let trust: SecureContext | undefined;
  // The CA code (node-forge, 11 MiB) is loaded by the first prepare(), never by a sidecar that does not inspect.
  const prepare = async (): Promise<void> => {
    if (issuer) return;
    const [{ loadCertificateAuthority }, { LeafIssuer }] = await Promise.all([import('../certs/ca-store.js'), import('../certs/leaf-issuer.js')]);
    if (issuer) return;
    const ca = loadCertificateAuthority(config);
    issuer = new LeafIssuer(ca, { keyType: config.leafKeyType });
    events.log.info({ ca: ca.certPath, origin: ca.origin, leafKeyType: config.leafKeyType }, 'TLS inspection: CA ready');
    try {
      ensureTrustBundle(config.stateDir, ca.certPem);
    } catch (err) {
      if (!(err instanceof CaError)) throw err;
      events.log.warn({ err: err.message }, 'TLS inspection: no trust bundle written');
    }
  };
  return {
    leaves: {
      secureContextFor: (host) => {
        // prepare() runs before a policy that inspects takes effect (start, reload), so this is a bug, not a state.
        if (!issuer) return Promise.reject(new Error('TLS inspection: the CA was not loaded before a policy that inspects took effect'));
        return issuer.secureContextFor(host);
      },
    },
    upstreamTrust: () => (trust ??= upstreamSecureContext({ upstreamCa: config.upstreamCa })),
    prepare,
  };
}
