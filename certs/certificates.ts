import { createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

export interface KeyAndCert {
  keyPem: string;
  certPem: string;
}

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

/** An RSA 2048 key pair from node:crypto (native; node-forge's own RSA key generation is slow). */
export function newRsaKeyPairPem(): { privateKey: string; publicKey: string } {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
}

// In node-forge (lib/x509.js), missing from @types/node-forge.
const getTBSCertificate = (forge.pki as unknown as { getTBSCertificate: (cert: forge.pki.Certificate) => forge.asn1.Asn1 }).getTBSCertificate;

function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive
  return bytes.toString('hex');
}

/** A certificate node-forge has filled in, up to its signature. */
function unsignedCertificate(publicKeyPem: string, notBefore: Date, notAfter: Date): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
  cert.serialNumber = serial();
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  return cert;
}

/**
 * The DER bytes to sign (sha256WithRSAEncryption). node-forge builds the certificate; node:crypto computes the
 * signature: forge's pure-JS RSA signing holds the event loop about 50 ms per certificate, node:crypto's
 * asynchronous sign runs on the thread pool (docs/inspection.md has the measurements).
 */
export function toBeSigned(cert: forge.pki.Certificate): Buffer {
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption!;
  cert.tbsCertificate = getTBSCertificate(cert);
  return Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), 'binary');
}

/** The PEM of a certificate prepared by toBeSigned, with its signature. */
export function signedCertificatePem(cert: forge.pki.Certificate, signature: Buffer): string {
  cert.signature = signature.toString('binary');
  return forge.pki.certificateToPem(cert);
}

function signNow(cert: forge.pki.Certificate, key: KeyObject): string {
  return signedCertificatePem(cert, sign('sha256', toBeSigned(cert), key));
}

/**
 * A certificate authority for test servers and (opt-in) TLS inspection: RSA 2048, CA:TRUE with path length 0
 * (it signs leaves only), keyCertSign and cRLSign.
 */
export function createCertificateAuthority(commonName = 'egress-guard CA', days = 365): KeyAndCert {
  const keys = newRsaKeyPairPem();
  const now = Date.now();
  const cert = unsignedCertificate(keys.publicKey, new Date(now - HOUR_MS), new Date(now + days * DAY_MS));
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'egress-guard' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return { keyPem: keys.privateKey, certPem: signNow(cert, createPrivateKey(keys.privateKey)) };
}

/** The longest commonName X.509 allows (ub-common-name); longer names live in the subjectAltName only. */
const MAX_COMMON_NAME = 64;

/**
 * An unsigned leaf for server authentication: names (wildcards allowed) become dNSName and addresses iPAddress
 * subjectAltNames, issued by `issuer`. Sign with toBeSigned and signedCertificatePem.
 */
export function unsignedLeafCertificate(issuer: forge.pki.Certificate, publicKeyPem: string, hosts: readonly string[], notBefore: Date, notAfter: Date): forge.pki.Certificate {
  if (hosts.length === 0) throw new Error('a leaf certificate needs at least one host');
  const cert = unsignedCertificate(publicKeyPem, notBefore, notAfter);
  const commonName = hosts[0]!.length <= MAX_COMMON_NAME ? [{ name: 'commonName', value: hosts[0]! }] : [];
  cert.setSubject(commonName);
  cert.setIssuer(issuer.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    // An empty subject makes the subjectAltName critical (RFC 5280 4.2.1.6).
    { name: 'subjectAltName', critical: commonName.length === 0, altNames: hosts.map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h })) },
  ]);
  return cert;
}

/** A leaf certificate for the given host names and addresses, signed by `ca` (test servers; inspection uses LeafIssuer). */
export function issueLeafCertificate(ca: KeyAndCert, hosts: readonly string[], days = 30): KeyAndCert {
  const keys = newRsaKeyPairPem();
  const now = Date.now();
  const cert = unsignedLeafCertificate(forge.pki.certificateFromPem(ca.certPem), keys.publicKey, hosts, new Date(now - HOUR_MS), new Date(now + days * DAY_MS));
  return { keyPem: keys.privateKey, certPem: signNow(cert, createPrivateKey(ca.keyPem)) };
}
