import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CaError } from './ca-error.js';

/** Debian/Ubuntu's local CA directory: update-ca-certificates adds every *.crt in it to the system trust store. */
export const LOCAL_CA_DIR = '/usr/local/share/ca-certificates';
const FILE_NAME = 'egress-guard.crt';

function updateCaCertificates(extraArgs: string[]): void {
  const result = spawnSync('update-ca-certificates', extraArgs, { encoding: 'utf8' });
  if (result.error) throw new CaError(`cannot run update-ca-certificates: ${result.error.message}`);
  if (result.status !== 0) throw new CaError(`update-ca-certificates ${extraArgs.join(' ')} failed (exit ${result.status}): ${result.stderr.trim()}`);
}

function requireDebianStore(localDir: string): void {
  if (!existsSync(localDir)) throw new CaError(`${localDir} does not exist: ca install and uninstall support Debian/Ubuntu's update-ca-certificates only`);
}

/**
 * Add the CA to the system trust store: write it to `<localDir>/egress-guard.crt` and run update-ca-certificates.
 * Returns the file written.
 */
export function installSystemCa(certPem: string, localDir = LOCAL_CA_DIR): string {
  requireDebianStore(localDir);
  const path = join(localDir, FILE_NAME);
  try {
    writeFileSync(path, certPem, { mode: 0o644 });
  } catch (err) {
    throw new CaError(`cannot write ${path}: ${(err as Error).message}`);
  }
  updateCaCertificates([]);
  return path;
}

/**
 * Remove what installSystemCa added and rebuild the store with update-ca-certificates --fresh (which also drops
 * the certificate's links in /etc/ssl/certs). Returns the file removed, undefined when none was installed.
 */
export function uninstallSystemCa(localDir = LOCAL_CA_DIR): string | undefined {
  requireDebianStore(localDir);
  const path = join(localDir, FILE_NAME);
  if (!existsSync(path)) return undefined;
  rmSync(path);
  updateCaCertificates(['--fresh']);
  return path;
}
