import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

export interface KeyAndCert {
  keyPem: string;
  certPem: string;
}

/** The key type of a leaf: ECDSA P-256 (the default: a handshake costs tens of µs of CPU) or RSA 2048. */
export type LeafKeyType = 'ecdsa' | 'rsa';
export const LEAF_KEY_TYPES: readonly LeafKeyType[] = ['ecdsa', 'rsa'];

/** A key pair as node:crypto exports it: the private key PKCS#8 PEM, the public key SubjectPublicKeyInfo DER (what a certificate holds). */
export interface KeyPair {
  privateKeyPem: string;
  publicKeyDer: Buffer;
}

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

const PRIVATE_KEY_ENCODING = { type: 'pkcs8', format: 'pem' } as const;
const PUBLIC_KEY_ENCODING = { type: 'spki', format: 'der' } as const;

/** The arguments of node:crypto's generateKeyPair(Sync) for a key type (native; node-forge's own RSA key generation is slow and it has no EC keys). */
export function keyPairArguments(type: LeafKeyType) {
  const encoding = { privateKeyEncoding: PRIVATE_KEY_ENCODING, publicKeyEncoding: PUBLIC_KEY_ENCODING };
  return type === 'ecdsa' ? (['ec', { namedCurve: 'prime256v1', ...encoding }] as const) : (['rsa', { modulusLength: 2048, ...encoding }] as const);
}

/** A key pair of that type, generated synchronously (CAs and test servers; LeafIssuer generates on the thread pool). */
export function newKeyPair(type: LeafKeyType): KeyPair {
  const [kind, options] = keyPairArguments(type);
  const pair = kind === 'ec' ? generateKeyPairSync(kind, options) : generateKeyPairSync(kind, options);
  return { privateKeyPem: pair.privateKey, publicKeyDer: pair.publicKey };
}

function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive
  return bytes.toString('hex');
}

/**
 * A certificate up to its signature: names, validity and extensions as node-forge fills them in, and the subject's
 * public key as SubjectPublicKeyInfo DER from node:crypto. node-forge encodes RSA keys only, so the key does not go
 * through it: toBeSigned builds the TBSCertificate with node-forge's ASN.1 helpers around this DER.
 */
export interface UnsignedCertificate {
  fields: forge.pki.Certificate;
  publicKeyDer: Buffer;
}

function unsignedCertificate(publicKeyDer: Buffer, notBefore: Date, notAfter: Date): UnsignedCertificate {
  const fields = forge.pki.createCertificate();
  fields.serialNumber = serial();
  fields.validity.notBefore = notBefore;
  fields.validity.notAfter = notAfter;
  return { fields, publicKeyDer };
}

/**
 * The signature algorithm of certificates a CA key signs. The CA is RSA (certs/ca-store.ts refuses other keys:
 * node-forge parses RSA CA certificates only), so it is sha256WithRSAEncryption, whatever the leaf's key.
 */
function signatureAlgorithm(caKey: KeyObject): { oid: string; parameters: forge.asn1.Asn1 } {
  if (caKey.asymmetricKeyType !== 'rsa') throw new Error(`cannot sign certificates with a ${caKey.asymmetricKeyType} CA key: the CA key must be RSA`);
  return { oid: forge.pki.oids.sha256WithRSAEncryption!, parameters: forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.NULL, false, '') };
}

const { asn1 } = forge;
const sequence = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
const integer = (bytes: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, bytes);
// Options of node-forge's fromDer and a function of lib/x509.js, both missing from @types/node-forge.
type FromDerOptions = { strict: boolean; decodeBitStrings: boolean };
const fromDerWith = asn1.fromDer as unknown as (bytes: string, options: FromDerOptions) => forge.asn1.Asn1;
const extensionsToAsn1 = (forge.pki as unknown as { certificateExtensionsToAsn1: (exts: unknown[]) => forge.asn1.Asn1 }).certificateExtensionsToAsn1;
/** DER that node:crypto wrote, to embed as it is: BIT STRINGs (keys, signatures) stay raw bytes, never re-encoded. */
const fromDer = (der: Buffer) => fromDerWith(der.toString('binary'), { strict: true, decodeBitStrings: false });

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(date: Date): forge.asn1.Asn1 {
  return date.getUTCFullYear() < 2050
    ? asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date))
    : asn1.create(asn1.Class.UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(date));
}

function algorithmIdentifier(algorithm: { oid: string; parameters: forge.asn1.Asn1 }): forge.asn1.Asn1 {
  return sequence([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(algorithm.oid).getBytes()), algorithm.parameters]);
}

/** A certificate to sign: its TBSCertificate DER, and the AlgorithmIdentifier the signature goes with. */
export interface ToBeSigned {
  der: Buffer;
  algorithm: forge.asn1.Asn1;
}

/**
 * The TBSCertificate (RFC 5280 4.1) of `cert` for signing by `caKey`, as DER: v3, the fields node-forge filled in,
 * the subject's key DER as node:crypto exported it. node:crypto computes the signature (signedCertificatePem):
 * forge's pure-JS RSA signing holds the event loop about 50 ms per certificate, node:crypto's asynchronous sign
 * runs on the thread pool (docs/inspection.md has the measurements).
 */
export function toBeSigned(cert: UnsignedCertificate, caKey: KeyObject): ToBeSigned {
  const { fields } = cert;
  const algorithm = algorithmIdentifier(signatureAlgorithm(caKey));
  const tbs = sequence([
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [integer(asn1.integerToDer(2).getBytes())]), // v3
    integer(forge.util.hexToBytes(fields.serialNumber)),
    algorithm,
    forge.pki.distinguishedNameToAsn1(fields.issuer),
    sequence([time(fields.validity.notBefore), time(fields.validity.notAfter)]),
    forge.pki.distinguishedNameToAsn1(fields.subject),
    fromDer(cert.publicKeyDer),
    ...(fields.extensions.length > 0 ? [extensionsToAsn1(fields.extensions)] : []),
  ]);
  return { der: Buffer.from(asn1.toDer(tbs).getBytes(), 'binary'), algorithm };
}

/** The PEM of a certificate prepared by toBeSigned, with its signature (RFC 5280 4.1: tbsCertificate, signatureAlgorithm, signatureValue). */
export function signedCertificatePem(tbs: ToBeSigned, signature: Buffer): string {
  const certificate = sequence([fromDer(tbs.der), tbs.algorithm, asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, '\0' + signature.toString('binary'))]);
  return forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(certificate).getBytes() });
}

function signNow(cert: UnsignedCertificate, key: KeyObject): string {
  const tbs = toBeSigned(cert, key);
  return signedCertificatePem(tbs, sign('sha256', tbs.der, key));
}

/**
 * A certificate authority for test servers and (opt-in) TLS inspection: RSA 2048, CA:TRUE with path length 0
 * (it signs leaves only), keyCertSign and cRLSign.
 */
export function createCertificateAuthority(commonName = 'egress-guard CA', days = 365): KeyAndCert {
  const keys = newKeyPair('rsa');
  const now = Date.now();
  const cert = unsignedCertificate(keys.publicKeyDer, new Date(now - HOUR_MS), new Date(now + days * DAY_MS));
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'egress-guard' },
  ];
  cert.fields.setSubject(subject);
  cert.fields.setIssuer(subject);
  // node-forge computes the subjectKeyIdentifier from the key it holds (RSA, as the CA's is).
  cert.fields.publicKey = forge.pki.publicKeyFromAsn1(asn1.fromDer(keys.publicKeyDer.toString('binary')));
  cert.fields.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  return { keyPem: keys.privateKeyPem, certPem: signNow(cert, createPrivateKey(keys.privateKeyPem)) };
}

/** The longest commonName X.509 allows (ub-common-name); longer names live in the subjectAltName only. */
const MAX_COMMON_NAME = 64;

/** The issuer's own subjectKeyIdentifier, or (a supplied CA without one) the SHA-1 of its public key, as RFC 5280 4.2.1.2 suggests. */
function authorityKeyId(issuer: forge.pki.Certificate): string {
  const ski = issuer.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | null;
  return ski?.subjectKeyIdentifier ? forge.util.hexToBytes(ski.subjectKeyIdentifier) : issuer.generateSubjectKeyIdentifier().getBytes();
}

/**
 * An unsigned leaf for server authentication: names (wildcards allowed) become dNSName and addresses iPAddress
 * subjectAltNames, issued by `issuer`, for the public key `publicKeyDer` (SubjectPublicKeyInfo DER, RSA or EC).
 * Sign with toBeSigned and signedCertificatePem.
 */
export function unsignedLeafCertificate(issuer: forge.pki.Certificate, publicKeyDer: Buffer, hosts: readonly string[], notBefore: Date, notAfter: Date): UnsignedCertificate {
  if (hosts.length === 0) throw new Error('a leaf certificate needs at least one host');
  const cert = unsignedCertificate(publicKeyDer, notBefore, notAfter);
  const commonName = hosts[0]!.length <= MAX_COMMON_NAME ? [{ name: 'commonName', value: hosts[0]! }] : [];
  // An EC key signs (ECDHE_ECDSA); it never encrypts a key, so keyEncipherment is RSA's only (RFC 5480 3).
  const encipherment = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' }).asymmetricKeyType === 'rsa';
  cert.fields.setSubject(commonName);
  cert.fields.setIssuer(issuer.subject.attributes);
  cert.fields.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: encipherment, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    // RFC 5280 4.2.1.1: required in every certificate but a self-signed one; OpenSSL's strict verification (the
    // default of Python 3.13's ssl.create_default_context) refuses a leaf without it.
    { name: 'authorityKeyIdentifier', keyIdentifier: authorityKeyId(issuer) },
    // An empty subject makes the subjectAltName critical (RFC 5280 4.2.1.6).
    { name: 'subjectAltName', critical: commonName.length === 0, altNames: hosts.map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h })) },
  ]);
  return cert;
}

/** A leaf certificate for the given host names and addresses, signed by `ca` (test servers; inspection uses LeafIssuer). */
export function issueLeafCertificate(ca: KeyAndCert, hosts: readonly string[], days = 30, keyType: LeafKeyType = 'rsa'): KeyAndCert {
  const keys = newKeyPair(keyType);
  const now = Date.now();
  const cert = unsignedLeafCertificate(forge.pki.certificateFromPem(ca.certPem), keys.publicKeyDer, hosts, new Date(now - HOUR_MS), new Date(now + days * DAY_MS));
  return { keyPem: keys.privateKeyPem, certPem: signNow(cert, createPrivateKey(ca.keyPem)) };
}
