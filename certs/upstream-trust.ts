import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { CaError } from './ca-store.js';

/** Debian/Ubuntu's bundle of the system trust store (also Alpine's, Arch's). */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export interface UpstreamTrustOptions {
  /** The `upstream-ca` setting: a PEM file of further CAs (tests, a private upstream). */
  upstreamCa?: string;
  /** Read when it exists; default SYSTEM_CA_BUNDLE. */
  systemBundle?: string;
}

/**
 * The `ca` option for tls.connect to an inspected upstream: node's bundled roots, the system bundle when there
 * is one, and the `upstream-ca` file. Giving `ca` replaces node's default roots, hence node's roots are in the
 * list. Parsing some 150 roots costs milliseconds: build one tls.createSecureContext({ ca }) from it and pass
 * that `secureContext` to every tls.connect. An unreadable upstream-ca file throws CaError.
 */
export function upstreamCaCertificates(options: UpstreamTrustOptions = {}): string[] {
  const roots = [...rootCertificates];
  try {
    roots.push(readFileSync(options.systemBundle ?? SYSTEM_CA_BUNDLE, 'utf8'));
  } catch {
    // no system bundle on this platform: node's roots alone
  }
  if (options.upstreamCa) {
    let extra: string;
    try {
      extra = readFileSync(options.upstreamCa, 'utf8');
    } catch (err) {
      throw new CaError(`cannot read upstream-ca ${options.upstreamCa}: ${(err as Error).message}`);
    }
    if (!extra.includes('-----BEGIN CERTIFICATE-----')) throw new CaError(`upstream-ca ${options.upstreamCa} holds no PEM certificate`);
    roots.push(extra);
  }
  return roots;
}
