import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { loadCertificateAuthority, stateCaPaths } from '../../certs/ca-store.js';
import { LeafIssuer } from '../../certs/leaf-issuer.js';
import { ENV_USAGE, envCommand } from '../../cli/env-command.js';
import { runCaptured } from '../helpers/capture-io.js';

const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const BUNDLE_VARIABLES = ['REQUESTS_CA_BUNDLE', 'SSL_CERT_FILE', 'GIT_SSL_CAINFO', 'CURL_CA_BUNDLE', 'npm_config_cafile'];

/** `export NAME='value'` lines back into values, undoing the shell quoting. */
function parseExports(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .trim()
      .split('\n')
      .map((line) => {
        const m = /^export ([A-Za-z_0-9]+)='((?:[^']|'\\'')*)'$/.exec(line);
        assert.ok(m, line);
        return [m[1]!, m[2]!.replace(/'\\''/g, "'")];
      }),
  );
}

/** Run a program with extra environment; resolves with its exit code and output. */
function run(command: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c));
    child.stderr.on('data', (c: Buffer) => (output += c));
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('egress-guard env --trust-ca', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "egress-env-ca-'quoted'-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('exports NODE_EXTRA_CA_CERTS (the CA) and a bundle of the system roots plus the CA for the others, shell-quoted', async () => {
    const stateDir = join(dir, 'state');
    const { code, stdout, stderr } = await runCaptured(envCommand, ['--trust-ca', '--state-dir', stateDir], {}, ENV_USAGE);
    assert.equal(code, 0, stderr);
    const vars = parseExports(stdout);
    assert.equal(vars.HTTPS_PROXY, 'http://127.0.0.1:3128', 'the proxy variables are still there');
    assert.equal(vars.NODE_EXTRA_CA_CERTS, stateCaPaths(stateDir).cert);
    const bundlePath = join(stateDir, 'ca-bundle.crt');
    for (const name of BUNDLE_VARIABLES) assert.equal(vars[name], bundlePath, name);
    const caPem = readFileSync(stateCaPaths(stateDir).cert, 'utf8');
    assert.equal(readFileSync(bundlePath, 'utf8'), `${readFileSync(SYSTEM_BUNDLE, 'utf8')}${caPem}`);
  });

  it('leaves the CA out without --trust-ca', async () => {
    const { stdout } = await runCaptured(envCommand, ['--state-dir', join(dir, 'unused')], {}, ENV_USAGE);
    assert.ok(!('NODE_EXTRA_CA_CERTS' in parseExports(stdout)));
  });

  it('makes node, curl and Python requests trust a leaf of the CA, and curl still trusts the system roots', async () => {
    const stateDir = join(dir, 'state');
    const vars = parseExports((await runCaptured(envCommand, ['--trust-ca', '--state-dir', stateDir, '--format', 'shell'], {}, ENV_USAGE)).stdout);
    const issuer = new LeafIssuer(loadCertificateAuthority({ stateDir }));
    const byAddress = await issuer.leafFor('127.0.0.1'); // clients send no SNI to an address
    const server = tls.createServer(
      { cert: byAddress.cert, key: byAddress.key, SNICallback: (name, done) => void issuer.leafFor(name).then((leaf) => done(null, leaf.secureContext), done) },
      (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const url = `https://inspected.test:${port}/`;
    try {
      const env = { ...vars, HTTPS_PROXY: '', HTTP_PROXY: '', https_proxy: '', http_proxy: '' };
      const node = await run(
        process.execPath,
        [
          '-e',
          `require('https').get(${JSON.stringify(url)}, { lookup: (h, o, cb) => cb(null, o.all ? [{ address: '127.0.0.1', family: 4 }] : '127.0.0.1', 4) }, (r) => r.pipe(process.stdout))`,
        ],
        { NODE_EXTRA_CA_CERTS: vars.NODE_EXTRA_CA_CERTS! },
      );
      assert.deepEqual(node, { code: 0, output: 'ok' });
      const curl = await run('curl', ['-sS', '--resolve', `inspected.test:${port}:127.0.0.1`, url], env);
      assert.deepEqual(curl, { code: 0, output: 'ok' });
      const untrusting = await run('curl', ['-sS', '--resolve', `inspected.test:${port}:127.0.0.1`, url], { CURL_CA_BUNDLE: SYSTEM_BUNDLE });
      assert.equal(untrusting.code, 60, 'curl without the bundle refuses the leaf');
      const python = await run('python3', ['-c', 'import requests, sys; sys.stdout.write(requests.get(sys.argv[1]).text)', `https://127.0.0.1:${port}/`], env);
      assert.deepEqual(python, { code: 0, output: 'ok' });
    } finally {
      server.close(); // not awaited: a TLS socket the refusing curl aborted mid-handshake may never report its close
    }
  });
});
