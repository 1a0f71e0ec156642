import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { CaError } from './ca-error.js';

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
 * list. An unreadable upstream-ca file throws CaError. Do not pass this list to every tls.connect: node then
 * parses all of it for each connection (about 100 ms of blocked event loop); use upstreamSecureContext.
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

/**
 * One TLS context trusting upstreamCaCertificates(options), built once (at start or on reload): pass it as
 * `secureContext` to tls.connect, with `servername` (and checkServerIdentity's default) verifying the name.
 */
export function upstreamSecureContext(options: UpstreamTrustOptions = {}): SecureContext {
  return createSecureContext({ ca: upstreamCaCertificates(options) });
}
