import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { CaError } from '../../certs/ca-error.js';
import { caCertificate, loadCertificateAuthority, stateCaPaths } from '../../certs/ca-store.js';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import { ConfigError, describeConfig, loadConfig } from '../../config/load-config.js';
import { defaultStateDir, SYSTEM_STATE_DIR } from '../../config/state-dir.js';

const CA_STORE = new URL('../../certs/ca-store.js', import.meta.url).href;

/**
 * A separate node process that loads (or generates) the CA in `stateDir` at the wall-clock time `at` (so two
 * children really start together) and prints its origin and certificate.
 */
function loadInChild(stateDir: string, at: number): Promise<string> {
  const script = `import(${JSON.stringify(CA_STORE)}).then((m) => {
    while (Date.now() < ${at});
    const ca = m.loadCertificateAuthority({ stateDir: ${JSON.stringify(stateDir)} });
    process.stdout.write(ca.origin + ' ' + ca.certPem);
  })`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}`))));
  });
}

function pick(object: unknown, ...keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, (object as Record<string, unknown>)[k]]));
}

describe('CA store', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'egress-ca-store-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('generates a CA on first use (key 0600) and loads the same one afterwards', () => {
    const stateDir = join(dir, 'once');
    const first = loadCertificateAuthority({ stateDir });
    assert.equal(first.origin, 'generated');
    const paths = stateCaPaths(stateDir);
    assert.equal(statSync(paths.key).mode & 0o777, 0o600);
    assert.equal(readFileSync(paths.cert, 'utf8'), first.certPem);
    const x509 = new X509Certificate(first.certPem);
    assert.ok(x509.ca);
    assert.deepEqual(pick(first.certificate.getExtension('basicConstraints'), 'cA', 'pathLenConstraint', 'critical'), { cA: true, pathLenConstraint: 0, critical: true });
    assert.deepEqual(pick(first.certificate.getExtension('keyUsage'), 'keyCertSign', 'cRLSign'), { keyCertSign: true, cRLSign: true });
    assert.ok(x509.checkPrivateKey(first.key));
    const again = loadCertificateAuthority({ stateDir });
    assert.equal(again.origin, 'stored');
    assert.equal(again.certPem, first.certPem);
    assert.deepEqual(readdirSync(stateDir), ['ca'], 'no staging directory left behind');
  });

  it('never shows the key when the CA is printed or serialised', () => {
    const ca = loadCertificateAuthority({ stateDir: join(dir, 'once') });
    const keyPem = readFileSync(ca.certPath.replace(/ca\.crt$/, 'ca.key'), 'utf8');
    const body = keyPem.split('\n')[1]!;
    assert.ok(!inspect(ca, { depth: 5 }).includes(body));
    assert.ok(!JSON.stringify({ ...ca, certificate: undefined }).includes(body));
  });

  it('gives two processes starting at once the same CA', async () => {
    const stateDir = join(dir, 'race');
    const at = Date.now() + 1000;
    const [a, b] = (await Promise.all([loadInChild(stateDir, at), loadInChild(stateDir, at)])).map((out) => out.split(/ (.*)/s));
    assert.deepEqual([a![0], b![0]].sort(), ['generated', 'stored']);
    assert.match(a![1]!, /BEGIN CERTIFICATE/);
    assert.equal(a![1], b![1]);
    assert.equal(a![1], readFileSync(stateCaPaths(stateDir).cert, 'utf8'));
    assert.deepEqual(readdirSync(stateDir), ['ca']);
  });

  it('uses a supplied CA and generates nothing', () => {
    const supplied = createCertificateAuthority('supplied test CA');
    writeFileSync(join(dir, 'supplied.crt'), supplied.certPem);
    writeFileSync(join(dir, 'supplied.key'), supplied.keyPem, { mode: 0o600 });
    const stateDir = join(dir, 'unused');
    const ca = loadCertificateAuthority({ stateDir, caCert: join(dir, 'supplied.crt'), caKey: join(dir, 'supplied.key') });
    assert.equal(ca.origin, 'supplied');
    assert.equal(ca.certPath, join(dir, 'supplied.crt'));
    assert.equal(new X509Certificate(ca.certPem).subject, 'CN=supplied test CA\nO=egress-guard');
    assert.throws(() => statSync(stateDir), /ENOENT/);
  });

  it('refuses a key that is not the certificate’s, a non-CA certificate, garbage and a lone file, with CaError', () => {
    const other = createCertificateAuthority('other');
    writeFileSync(join(dir, 'other.key'), other.keyPem);
    writeFileSync(join(dir, 'garbage.pem'), 'not a certificate\n');
    const cert = join(dir, 'supplied.crt');
    assert.throws(
      () => loadCertificateAuthority({ stateDir: dir, caCert: cert, caKey: join(dir, 'other.key') }),
      (err: Error) => {
        assert.ok(err instanceof CaError);
        assert.equal(err.message, `${join(dir, 'other.key')} is not the private key of the CA certificate ${cert}`);
        return true;
      },
    );
    assert.throws(() => loadCertificateAuthority({ stateDir: dir, caCert: join(dir, 'garbage.pem'), caKey: join(dir, 'other.key') }), CaError);
    assert.throws(() => loadCertificateAuthority({ stateDir: dir, caCert: cert, caKey: join(dir, 'garbage.pem') }), /is not an unencrypted PEM private key/);
    assert.throws(() => loadCertificateAuthority({ stateDir: dir, caCert: cert, caKey: join(dir, 'missing.key') }), /cannot read the CA key/);
    assert.throws(() => loadCertificateAuthority({ stateDir: dir, caCert: cert }), /ca-cert and ca-key go together/);
  });

  it('refuses a certificate that is not a CA', () => {
    const ca = createCertificateAuthority('issuer');
    const leaf = issueLeafCertificate(ca, ['leaf.test']);
    writeFileSync(join(dir, 'leaf.crt'), leaf.certPem);
    writeFileSync(join(dir, 'leaf.key'), leaf.keyPem);
    assert.throws(() => loadCertificateAuthority({ stateDir: dir, caCert: join(dir, 'leaf.crt'), caKey: join(dir, 'leaf.key') }), /is not a CA certificate/);
  });

  it('reads the certificate alone for printing (the key may be unreadable)', () => {
    const stateDir = join(dir, 'once');
    const printed = caCertificate({ stateDir });
    assert.equal(printed.certPem, readFileSync(stateCaPaths(stateDir).cert, 'utf8'));
    assert.equal(printed.certPath, stateCaPaths(stateDir).cert);
  });

  it('reports a state directory it cannot create as CaError', () => {
    writeFileSync(join(dir, 'a-file'), '');
    assert.throws(
      () => loadCertificateAuthority({ stateDir: join(dir, 'a-file', 'sub') }),
      (err: Error) => err instanceof CaError && /cannot create a CA in .*set state-dir/.test(err.message),
    );
  });
});

describe('default state directory', () => {
  const host = (uid: number, systemDirExists: boolean) => ({ uid, home: '/home/u', isDirectory: (p: string) => systemDirExists && p === SYSTEM_STATE_DIR });
  it('is /var/lib/egress-guard for root, or when it exists; else XDG_STATE_HOME, else ~/.local/state', () => {
    assert.equal(defaultStateDir({}, host(0, false)), '/var/lib/egress-guard');
    assert.equal(defaultStateDir({}, host(1000, true)), '/var/lib/egress-guard');
    assert.equal(defaultStateDir({ XDG_STATE_HOME: '/x/state' }, host(1000, false)), '/x/state/egress-guard');
    assert.equal(defaultStateDir({ XDG_STATE_HOME: 'relative' }, host(1000, false)), '/home/u/.local/state/egress-guard');
    assert.equal(defaultStateDir({}, host(1000, false)), '/home/u/.local/state/egress-guard');
  });
});

describe('CA settings', () => {
  const readFile = (path: string) => {
    assert.equal(path, '/policy.yaml');
    return 'state-dir: /from/file\nca-cert: /file/ca.crt\nca-key: /file/ca.key\nupstream-ca: /file/upstream.pem\nleaf-key-type: rsa\n';
  };
  it('come from the policy file, the environment and flags, in that order of precedence; ca-key is redacted', () => {
    const fromFile = loadConfig({ flags: new Map([['policy', ['/policy.yaml']]]), env: {}, readFile });
    assert.deepEqual([fromFile.stateDir, fromFile.caCert, fromFile.caKey, fromFile.upstreamCa], ['/from/file', '/file/ca.crt', '/file/ca.key', '/file/upstream.pem']);
    assert.equal(describeConfig(fromFile)['ca-key']!.value, '<redacted>');
    const env = { EGRESS_STATE_DIR: '/from/env', EGRESS_CA_CERT: '/env/ca.crt', EGRESS_CA_KEY: '/env/ca.key', EGRESS_UPSTREAM_CA: '/env/up.pem' };
    const fromEnv = loadConfig({ flags: new Map([['policy', ['/policy.yaml']]]), env, readFile });
    assert.deepEqual([fromEnv.stateDir, fromEnv.caCert, fromEnv.caKey, fromEnv.upstreamCa], ['/from/env', '/env/ca.crt', '/env/ca.key', '/env/up.pem']);
    const fromFlag = loadConfig({ flags: new Map([['state-dir', ['/from/flag']]]), env, readFile });
    assert.equal(fromFlag.stateDir, '/from/flag');
  });
  it('leaf-key-type: ecdsa by default, rsa from the file, the environment or a flag; anything else is a ConfigError', () => {
    assert.equal(loadConfig({ flags: new Map(), env: {}, readFile }).leafKeyType, 'ecdsa');
    assert.equal(loadConfig({ flags: new Map([['policy', ['/policy.yaml']]]), env: {}, readFile }).leafKeyType, 'rsa');
    assert.equal(loadConfig({ flags: new Map([['policy', ['/policy.yaml']]]), env: { EGRESS_LEAF_KEY_TYPE: 'ecdsa' }, readFile }).leafKeyType, 'ecdsa');
    assert.equal(loadConfig({ flags: new Map([['leaf-key-type', ['rsa']]]), env: { EGRESS_LEAF_KEY_TYPE: 'ecdsa' }, readFile }).leafKeyType, 'rsa');
    assert.throws(
      () => loadConfig({ flags: new Map(), env: { EGRESS_LEAF_KEY_TYPE: 'ed25519' }, readFile }),
      (e: Error) => e instanceof ConfigError && e.message === 'leaf-key-type: "ed25519" is not ecdsa or rsa',
    );
  });
  it('default the state directory and refuse a lone ca-cert or ca-key with ConfigError', () => {
    const config = loadConfig({ flags: new Map(), env: { XDG_STATE_HOME: '/xdg' }, readFile });
    assert.equal(config.stateDir, defaultStateDir({ XDG_STATE_HOME: '/xdg' }));
    assert.equal(config.caCert, undefined);
    assert.throws(
      () => loadConfig({ flags: new Map([['ca-cert', ['/a.crt']]]), env: {}, readFile }),
      (e: Error) => e instanceof ConfigError && e.message === 'ca-cert needs ca-key (the CA private key file)',
    );
    assert.throws(() => loadConfig({ flags: new Map(), env: { EGRESS_CA_KEY: '/a.key' }, readFile }), /ca-key needs ca-cert/);
  });
});
