import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CaError } from './ca-error.js';
import { SYSTEM_CA_BUNDLE } from './upstream-trust.js';

function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * `<stateDir>/ca-bundle.crt`: the system bundle followed by the CA, for tools whose CA setting replaces their
 * roots (REQUESTS_CA_BUNDLE, SSL_CERT_FILE, GIT_SSL_CAINFO, CURL_CA_BUNDLE): the CA alone would make every other
 * host fail. Written atomically (temp file, rename), and only when its content changes, so a user can read the
 * bundle a root sidecar wrote. Returns the bundle's path; throws CaError without a system bundle.
 */
export function ensureTrustBundle(stateDir: string, caPem: string, systemBundle = SYSTEM_CA_BUNDLE): string {
  const system = readOptional(systemBundle);
  if (system === undefined) throw new CaError(`no system CA bundle at ${systemBundle}: a bundle of the CA alone would make every other host fail`);
  const bundle = `${system.endsWith('\n') ? system : `${system}\n`}${caPem}`;
  const path = join(stateDir, 'ca-bundle.crt');
  if (readOptional(path) === bundle) return path;
  const temp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o755 });
    writeFileSync(temp, bundle, { mode: 0o644 });
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw new CaError(`cannot write the CA bundle ${path}: ${(err as Error).message}; run egress-guard env as the user that runs the sidecar, or set state-dir`);
  }
  return path;
}
