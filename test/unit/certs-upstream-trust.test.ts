import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { CaError } from '../../certs/ca-error.js';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import { upstreamCaCertificates, upstreamSecureContext } from '../../certs/upstream-trust.js';

/** Whether a client with this trust (a `ca` option or a `secureContext`) accepts the server's certificate for `servername`. */
function verifies(port: number, trust: string[] | tls.SecureContext, servername = 'upstream.test'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ...(Array.isArray(trust) ? { ca: trust } : { secureContext: trust }) }, () => {
      socket.end();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

describe('upstream trust', () => {
  let dir: string;
  let server: tls.Server;
  let port: number;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-upstream-'));
    const ca = createCertificateAuthority('upstream test CA');
    writeFileSync(join(dir, 'upstream-ca.pem'), ca.certPem);
    writeFileSync(join(dir, 'no-pem.txt'), 'hello\n');
    const leaf = issueLeafCertificate(ca, ['upstream.test']);
    server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (socket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("is node's roots and the system bundle, which do not trust a private upstream", async () => {
    const ca = upstreamCaCertificates();
    assert.deepEqual(ca.slice(0, tls.rootCertificates.length), [...tls.rootCertificates]);
    assert.equal(ca.length, tls.rootCertificates.length + 1, 'plus the system bundle');
    assert.equal(await verifies(port, ca), false);
  });

  it('adds the upstream-ca file, which then verifies the upstream', async () => {
    const ca = upstreamCaCertificates({ upstreamCa: join(dir, 'upstream-ca.pem') });
    assert.equal(ca.length, tls.rootCertificates.length + 2);
    assert.equal(await verifies(port, ca), true);
  });

  it('as one secure context: verifies the upstream for its name only', async () => {
    const context = upstreamSecureContext({ upstreamCa: join(dir, 'upstream-ca.pem') });
    assert.equal(await verifies(port, context), true);
    assert.equal(await verifies(port, context, 'other.test'), false);
    assert.equal(await verifies(port, upstreamSecureContext()), false);
  });

  it('works without a system bundle, and refuses an unreadable or non-PEM upstream-ca with CaError', () => {
    assert.equal(upstreamCaCertificates({ systemBundle: join(dir, 'none') }).length, tls.rootCertificates.length);
    assert.throws(
      () => upstreamCaCertificates({ upstreamCa: join(dir, 'missing.pem') }),
      (e: Error) => e instanceof CaError && /cannot read upstream-ca/.test(e.message),
    );
    assert.throws(() => upstreamCaCertificates({ upstreamCa: join(dir, 'no-pem.txt') }), /holds no PEM certificate/);
  });
});
