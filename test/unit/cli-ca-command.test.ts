import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { stateCaPaths } from '../../certs/ca-store.js';
import { CA_USAGE, caCommand } from '../../cli/ca-command.js';
import { runCaptured } from '../helpers/capture-io.js';

const BIN = fileURLToPath(new URL('../../egress-guard.js', import.meta.url));
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const LOCAL_CA = '/usr/local/share/ca-certificates/egress-guard.crt';

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/**
 * Shell lines that give this mount namespace private copies of everything update-ca-certificates writes
 * (/etc/ssl, the local CA directory, its config) and an empty hook directory (the Java hook would run dpkg
 * triggers): the machine's trust store is never touched.
 */
function privateTrustStore(scratch: string): string {
  const copies = ['/etc/ssl', '/usr/local/share/ca-certificates'].map(
    (dir, i) => `mkdir ${scratch}/copy${i} && cp -a ${dir}/. ${scratch}/copy${i}/ && mount --bind ${scratch}/copy${i} ${dir}`,
  );
  return [
    'set -e',
    ...copies,
    `cp -a /etc/ca-certificates.conf ${scratch}/conf && mount --bind ${scratch}/conf /etc/ca-certificates.conf`,
    `mkdir ${scratch}/no-hooks && mount --bind ${scratch}/no-hooks /etc/ca-certificates/update.d`,
  ].join('\n');
}

const canUnshare = process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0 && existsSync('/usr/sbin/update-ca-certificates');

describe('egress-guard ca', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'egress-ca-command-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('print writes the CA certificate, generating it on first use, the same one each time', async () => {
    const stateDir = join(dir, 'state');
    const first = await runCaptured(caCommand, ['print', '--state-dir', stateDir], {}, CA_USAGE);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    assert.equal(first.stdout, readFileSync(stateCaPaths(stateDir).cert, 'utf8'));
    const again = await runCaptured(caCommand, ['print'], { EGRESS_STATE_DIR: stateDir }, CA_USAGE);
    assert.equal(again.stdout, first.stdout);
  });

  it('answers a bad action, a lone ca-cert and a bad CA with exit 2 and one line', async () => {
    const bad = await runCaptured(caCommand, ['sign'], {}, CA_USAGE);
    assert.deepEqual([bad.code, bad.stderr], [2, `egress-guard: unknown action "sign"\nusage: ${CA_USAGE}\n`]);
    const lone = await runCaptured(caCommand, ['print', '--ca-cert', '/nonexistent.crt'], {}, CA_USAGE);
    assert.deepEqual([lone.code, lone.stderr], [2, 'egress-guard: ca-cert needs ca-key (the CA private key file)\n']);
    const missing = await runCaptured(caCommand, ['print'], { EGRESS_CA_CERT: join(dir, 'no.crt'), EGRESS_CA_KEY: join(dir, 'no.key') }, CA_USAGE);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^egress-guard: cannot read the CA certificate .*no\.crt: ENOENT/);
  });

  it(
    'install adds the CA to the system bundle and uninstall removes it (in a private mount namespace)',
    { skip: !canUnshare && 'needs root, unshare -m and update-ca-certificates' },
    () => {
      const realBundle = sha256(SYSTEM_BUNDLE);
      const scratch = mkdtempSync(join(dir, 'ns-'));
      const stateDir = join(scratch, 'state');
      const script = `${privateTrustStore(scratch)}
${process.execPath} ${BIN} ca install --state-dir ${stateDir} > ${scratch}/install.out
cp ${SYSTEM_BUNDLE} ${scratch}/bundle-installed
ls /usr/local/share/ca-certificates > ${scratch}/local-installed
${process.execPath} ${BIN} ca uninstall > ${scratch}/uninstall.out
cp ${SYSTEM_BUNDLE} ${scratch}/bundle-uninstalled
ls /usr/local/share/ca-certificates > ${scratch}/local-uninstalled
${process.execPath} ${BIN} ca uninstall > ${scratch}/uninstall-again.out`;
      const run = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(run.status, 0, run.stderr);
      const caPem = readFileSync(stateCaPaths(stateDir).cert, 'utf8');
      const read = (name: string) => readFileSync(join(scratch, name), 'utf8');
      assert.equal(read('install.out'), `installed ${stateCaPaths(stateDir).cert} as ${LOCAL_CA} and ran update-ca-certificates\n`);
      assert.ok(read('bundle-installed').includes(caPem.trim()), 'the system bundle holds the CA');
      assert.match(read('local-installed'), /^egress-guard\.crt$/m);
      assert.equal(read('uninstall.out'), `removed ${LOCAL_CA} and ran update-ca-certificates --fresh\n`);
      assert.ok(!read('bundle-uninstalled').includes(caPem.trim()), 'the CA is gone from the system bundle');
      assert.doesNotMatch(read('local-uninstalled'), /egress-guard/);
      assert.equal(read('uninstall-again.out'), 'the egress-guard CA was not installed\n');
      assert.equal(sha256(SYSTEM_BUNDLE), realBundle, "the machine's trust store is unchanged");
      assert.ok(!existsSync(LOCAL_CA));
    },
  );
});
