import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';
import { CaError } from './ca-error.js';
import { createCertificateAuthority } from './certificates.js';

/** Where the CA comes from: the supplied files (both or neither), else `<stateDir>/ca/`, generated on first use. */
export interface CaSource {
  stateDir: string;
  caCert?: string;
  caKey?: string;
}

export interface CertificateAuthority {
  certPem: string;
  /** The file that holds certPem (what NODE_EXTRA_CA_CERTS and `ca install` use). */
  certPath: string;
  /** `supplied`: ca-cert/ca-key; `stored`: found in the state directory; `generated`: created by this call. */
  origin: 'supplied' | 'stored' | 'generated';
  /** The signing key, as node:crypto holds it: printing or serialising a KeyObject shows no key material. */
  key: KeyObject;
  /** The CA certificate parsed by node-forge (the issuer of the leaves). */
  certificate: forge.pki.Certificate;
  notBefore: Date;
  notAfter: Date;
}

const GENERATED_CA_DAYS = 2 * 365;

export function stateCaDir(stateDir: string): string {
  return join(stateDir, 'ca');
}

export function stateCaPaths(stateDir: string): { cert: string; key: string } {
  return { cert: join(stateCaDir(stateDir), 'ca.crt'), key: join(stateCaDir(stateDir), 'ca.key') };
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new CaError(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
}

function parseCertificate(certPem: string, certPath: string): X509Certificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(certPem);
  } catch (err) {
    throw new CaError(`${certPath} is not a PEM certificate: ${(err as Error).message}`);
  }
  if (!x509.ca) throw new CaError(`${certPath} is not a CA certificate (it lacks basicConstraints CA:TRUE)`);
  if (Date.parse(x509.validTo) <= Date.now()) throw new CaError(`the CA certificate ${certPath} expired on ${x509.validTo}`);
  return x509;
}

/** Check that the pair is a usable CA; the messages name files, never key material. */
function certificateAuthority(certPem: string, certPath: string, keyPem: string, keyPath: string, origin: CertificateAuthority['origin']): CertificateAuthority {
  const x509 = parseCertificate(certPem, certPath);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CaError(`${keyPath} is not an unencrypted PEM private key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new CaError(`${keyPath} is a ${key.asymmetricKeyType} key: the CA key must be RSA (node-forge builds RSA certificates only)`);
  if (!x509.checkPrivateKey(key)) throw new CaError(`${keyPath} is not the private key of the CA certificate ${certPath}`);
  let certificate: forge.pki.Certificate;
  try {
    certificate = forge.pki.certificateFromPem(x509.toString());
  } catch (err) {
    throw new CaError(`node-forge cannot read the CA certificate ${certPath}: ${(err as Error).message}`);
  }
  return { certPem: x509.toString(), certPath, origin, key, certificate, notBefore: new Date(x509.validFrom), notAfter: new Date(x509.validTo) };
}

function writeSynced(path: string, text: string, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Generate a CA into `<stateDir>/ca/` atomically: both files are written into a fresh private directory, which
 * is then renamed to `ca`. Two processes starting at once both generate, one rename wins, and the loser
 * (ENOTEMPTY/EEXIST) removes its copy and loads the winner's: nobody ever sees a half-written key.
 * Returns false when another process won.
 */
function generateInto(stateDir: string): boolean {
  const target = stateCaDir(stateDir);
  let staging: string | undefined;
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o755 });
    staging = mkdtempSync(join(stateDir, '.ca-'));
    const ca = createCertificateAuthority('egress-guard inspection CA', GENERATED_CA_DAYS);
    writeSynced(join(staging, 'ca.key'), ca.keyPem, 0o600);
    writeSynced(join(staging, 'ca.crt'), new X509Certificate(ca.certPem).toString(), 0o644); // LF line ends, as `ca print` writes it
    chmodSync(staging, 0o755); // the certificate is public; the key stays 0600
    renameSync(staging, target);
    staging = undefined;
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw new CaError(
      `cannot create a CA in ${stateDir}: ${(err as Error).message}; set state-dir (EGRESS_STATE_DIR) to a directory this user can write, or supply ca-cert and ca-key`,
    );
  } finally {
    if (staging) rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * The CA TLS inspection signs with: the supplied ca-cert/ca-key, else the one in `<stateDir>/ca/` (ca.crt 0644,
 * ca.key 0600), generated there on first use (RSA 2048, valid two years). Throws CaError, never logs the key.
 */
export function loadCertificateAuthority(source: CaSource): CertificateAuthority {
  if (source.caCert || source.caKey) {
    if (!source.caCert || !source.caKey) throw new CaError('ca-cert and ca-key go together: supply both files or neither');
    return certificateAuthority(readPem(source.caCert, 'CA certificate'), source.caCert, readPem(source.caKey, 'CA key'), source.caKey, 'supplied');
  }
  const paths = stateCaPaths(source.stateDir);
  const generated = !existsSync(stateCaDir(source.stateDir)) && generateInto(source.stateDir);
  return certificateAuthority(readPem(paths.cert, 'CA certificate'), paths.cert, readPem(paths.key, 'CA key'), paths.key, generated ? 'generated' : 'stored');
}

/**
 * The CA certificate alone (`ca print`, `env`, `ca install`): reading it needs no access to the key, so a user
 * can print the CA a root sidecar generated. With no CA yet, one is generated as loadCertificateAuthority does.
 */
export function caCertificate(source: CaSource): { certPem: string; certPath: string } {
  if (source.caCert || source.caKey) return loadCertificateAuthority(source);
  const paths = stateCaPaths(source.stateDir);
  if (!existsSync(stateCaDir(source.stateDir))) return loadCertificateAuthority(source);
  return { certPem: parseCertificate(readPem(paths.cert, 'CA certificate'), paths.cert).toString(), certPath: paths.cert };
}
