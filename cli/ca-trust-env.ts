import { caCertificate, type CaSource } from '../certs/ca-store.js';
import { ensureTrustBundle } from '../certs/trust-bundle.js';

/**
 * Environment variables that make tools trust the inspection CA: node adds NODE_EXTRA_CA_CERTS to its roots,
 * so the CA alone is enough there; the other variables replace a tool's roots, so they name the combined
 * bundle (system roots + CA) in the state directory. npm gets the bundle as its `cafile` too: a `cafile` in a
 * global or user npmrc (common on machines with a corporate CA) replaces node's roots, NODE_EXTRA_CA_CERTS
 * included, and the environment outranks those files.
 */
export function caTrustEnvironment(source: CaSource, systemBundle?: string): Array<[string, string]> {
  const ca = caCertificate(source);
  const bundle = ensureTrustBundle(source.stateDir, ca.certPem, systemBundle);
  return [
    ['NODE_EXTRA_CA_CERTS', ca.certPath],
    ['REQUESTS_CA_BUNDLE', bundle],
    ['SSL_CERT_FILE', bundle],
    ['GIT_SSL_CAINFO', bundle],
    ['CURL_CA_BUNDLE', bundle],
    ['npm_config_cafile', bundle],
  ];
}
