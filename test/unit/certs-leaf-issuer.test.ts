import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { loadCertificateAuthority, type CertificateAuthority } from '../../certs/ca-store.js';
import { LEAF_KEY_TYPES } from '../../certs/certificates.js';
import { leafHostName, LeafIssuer } from '../../certs/leaf-issuer.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/** A TLS server on loopback whose certificate comes from `issuer` (by SNI, as inspection serves it; `fixedHost` when clients send none). */
async function serve(issuer: LeafIssuer, fixedHost?: string): Promise<{ port: number; close: () => Promise<void> }> {
  const fixed = fixedHost ? await issuer.leafFor(fixedHost) : undefined;
  const server = tls.createServer({
    ...(fixed ? { cert: fixed.cert, key: fixed.key } : {}),
    SNICallback: (name, done) =>
      issuer.secureContextFor(name).then(
        (context) => done(null, context),
        (err: Error) => done(err),
      ),
  });
  server.on('secureConnection', (socket) => socket.end('hello'));
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Connect as a client that trusts only `caPem`; resolves with what the server sent, rejects on a TLS error. */
function fetchGreeting(port: number, caPem: string, host: string, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername, checkServerIdentity: (_, cert) => tls.checkServerIdentity(host, cert) });
    let data = '';
    socket.on('data', (c: Buffer) => (data += c));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

/**
 * Connect with Python's ssl verifying strictly (OpenSSL's X509_STRICT, on by default in Python 3.13's
 * create_default_context); resolves with what the server sent, or the verification error.
 */
async function strictPythonGreeting(port: number, caPath: string, host: string): Promise<string> {
  const script = `
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
try:
    with ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=10), server_hostname=sys.argv[3]) as s:
        print(s.recv(100).decode())
except ssl.SSLError as e:
    print(e.reason or e)
`;
  const { stdout } = await promisify(execFile)('python3', ['-c', script, caPath, String(port), host], { timeout: 20_000 });
  return stdout.trim();
}

/** The keyUsage bits a certificate asserts, read from its DER (node's X509Certificate does not show them). */
function keyUsage(pem: string): string[] {
  const { asn1 } = forge;
  const tbs = asn1.fromDer(forge.pem.decode(pem)[0]!.body).value[0] as forge.asn1.Asn1;
  const extensions = (tbs.value as forge.asn1.Asn1[]).find((e) => e.tagClass === asn1.Class.CONTEXT_SPECIFIC && e.type === 3)!;
  const ext = ((extensions.value[0] as forge.asn1.Asn1).value as forge.asn1.Asn1[]).find((e) => asn1.derToOid((e.value[0] as forge.asn1.Asn1).value as string) === '2.5.29.15')!;
  const bits = asn1.fromDer((ext.value.at(-1) as forge.asn1.Asn1).value as string).value as string; // BIT STRING: unused-bit count, then the bits
  const names = ['digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment', 'keyAgreement', 'keyCertSign', 'cRLSign'];
  return names.filter((_, i) => (bits.charCodeAt(1) ?? 0) & (0x80 >> i));
}

describe('leaf certificates', () => {
  let dir: string;
  let ca: CertificateAuthority;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'egress-leaf-'));
    ca = loadCertificateAuthority({ stateDir: dir });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const keyType of LEAF_KEY_TYPES) {
    it(`${keyType}: serves a leaf that a client trusting the CA accepts for its name, and refuses for another name`, async () => {
      const issuer = new LeafIssuer(ca, { keyType });
      const server = await serve(issuer);
      try {
        assert.equal(await fetchGreeting(server.port, ca.certPem, 'registry.example.test', 'registry.example.test'), 'hello');
        // The client asked for one name; the server's certificate names another (issued for the SNI sent).
        await assert.rejects(fetchGreeting(server.port, ca.certPem, 'github.test', 'registry.example.test'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
        // A client that does not trust the CA refuses the leaf.
        await assert.rejects(fetchGreeting(server.port, tls.rootCertificates.join('\n'), 'registry.example.test', 'registry.example.test'), {
          code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
        });
      } finally {
        await server.close();
      }
    });

    it(`${keyType}: a client verifying strictly (Python 3.13's default) accepts the leaf: it names its issuer's key`, async () => {
      const issuer = new LeafIssuer(ca, { keyType });
      const server = await serve(issuer);
      try {
        assert.equal(await strictPythonGreeting(server.port, ca.certPath, 'registry.example.test'), 'hello');
      } finally {
        await server.close();
      }
    });

    it(`${keyType}: issues leaves for IP addresses (SAN iPAddress)`, async () => {
      const issuer = new LeafIssuer(ca, { keyType });
      const server = await serve(issuer, '127.0.0.1');
      try {
        assert.equal(await fetchGreeting(server.port, ca.certPem, '127.0.0.1'), 'hello');
        await assert.rejects(fetchGreeting(server.port, ca.certPem, '127.0.0.2'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      } finally {
        await server.close();
      }
      const v6 = new X509Certificate((await issuer.leafFor('[::1]')).cert);
      assert.equal(v6.subjectAltName, 'IP Address:0:0:0:0:0:0:0:1');
    });

    it(`${keyType}: gives a valid leaf: starts in the past, lasts 7 days, signed by the CA, server auth, no CA`, async () => {
      const leaf = await new LeafIssuer(ca, { keyType }).leafFor('Example.TEST.');
      const x509 = new X509Certificate(leaf.cert);
      assert.equal(leaf.host, 'example.test');
      assert.equal(x509.subjectAltName, 'DNS:example.test');
      assert.ok(x509.verify(new X509Certificate(ca.certPem).publicKey));
      assert.ok(x509.checkIssued(new X509Certificate(ca.certPem)));
      assert.equal(x509.ca, false);
      assert.equal(x509.publicKey.asymmetricKeyType, keyType === 'ecdsa' ? 'ec' : 'rsa');
      assert.deepEqual(x509.publicKey.asymmetricKeyDetails, keyType === 'ecdsa' ? { namedCurve: 'prime256v1' } : { modulusLength: 2048, publicExponent: 65537n });
      // An EC key only signs (RFC 5480 3); an RSA key may also encipher the key exchange (TLS 1.2 RSA kx).
      assert.deepEqual(keyUsage(leaf.cert), keyType === 'ecdsa' ? ['digitalSignature'] : ['digitalSignature', 'keyEncipherment']);
      assert.deepEqual(x509.keyUsage, ['1.3.6.1.5.5.7.3.1']);
      assert.ok(Date.parse(x509.validFrom) < Date.now() - 50 * 60 * 1000);
      assert.ok(Math.abs(Date.parse(x509.validTo) - (Date.now() + 7 * DAY_MS)) < 60_000);
    });
  }

  it('answers a second request from the cache, and a request after the renewal point with a new leaf', async () => {
    let now = Date.now();
    const issuer = new LeafIssuer(ca, { now: () => now });
    const first = await issuer.leafFor('cache.test');
    assert.equal(await issuer.leafFor('CACHE.test'), first);
    assert.equal(issuer.stats.cacheHits, 1);
    now += 6 * DAY_MS + 1000; // less than a day left: renew
    const renewed = await issuer.leafFor('cache.test');
    assert.notEqual(renewed.cert, first.cert);
    assert.equal(issuer.stats.issued, 2);
  });

  it('keeps at most maxHosts leaves', async () => {
    const issuer = new LeafIssuer(ca, { maxHosts: 2 });
    const a = await issuer.leafFor('a.test');
    await issuer.leafFor('b.test');
    await issuer.leafFor('c.test');
    assert.notEqual(await issuer.leafFor('a.test'), a, 'a.test was evicted and issued again');
    assert.equal(issuer.stats.issued, 4);
  });

  it('generates one key and one leaf for concurrent cold requests for a host (per-host keys)', async () => {
    const issuer = new LeafIssuer(ca, { leafKeys: 'per-host' });
    const leaves = await Promise.all(Array.from({ length: 5 }, () => issuer.leafFor('cold.test')));
    assert.ok(leaves.every((l) => l === leaves[0]));
    assert.deepEqual(issuer.stats, { issued: 1, keysGenerated: 1, cacheHits: 0, joined: 4 });
    await issuer.leafFor('other.test');
    assert.equal(issuer.stats.keysGenerated, 2);
    assert.notEqual((await issuer.leafFor('other.test')).key, leaves[0]!.key);
  });

  it('shares one ECDSA P-256 key across hosts by default, generated once even when the first hosts come together', async () => {
    const issuer = new LeafIssuer(ca);
    assert.equal(issuer.keyType, 'ecdsa');
    const [a, b] = await Promise.all([issuer.leafFor('one.test'), issuer.leafFor('two.test')]);
    assert.equal(issuer.stats.keysGenerated, 1);
    assert.equal(issuer.stats.issued, 2);
    assert.equal(a.key, b.key);
    assert.notEqual(a.cert, b.cert);
  });

  it('refuses what is not a host name or address', async () => {
    const issuer = new LeafIssuer(ca);
    for (const bad of ['', 'a b.test', '*.wild.test', 'x'.repeat(64) + '.test', 'under/score', 'a..b'])
      await assert.rejects(issuer.leafFor(bad), /cannot issue a certificate/, bad);
    assert.equal(leafHostName('under_score.test'), 'under_score.test');
    assert.equal(issuer.stats.issued, 0);
  });
});
