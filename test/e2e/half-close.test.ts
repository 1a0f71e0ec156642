/**
 * Half-close through egress-guard, in both modes, on every path: a client that sends its request, shuts down
 * its sending side (FIN) and then reads the reply must get the reply (HTTP/1.0 clients, `nc -N`, rsync).
 * Real clients (python sockets, node TLS) in the runner namespace, servers in the internet namespace that
 * answer only once the client's FIN has reached them. Needs root (namespaces, iptables).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { CloseEvent } from '../../events/schema.js';
import { halfClosingClientArgs } from '../helpers/half-closing-client.js';
import { HALF_CLOSE_PORTS, World } from './harness.js';

let world: World;

before(async () => {
  world = await World.create();
});

after(async () => {
  await world?.close();
});

function halfClosingClient(host: string, port: number, payload: string, connectTo?: string) {
  return world.job('python3', halfClosingClientArgs(host, port, payload, connectTo), { timeoutMs: 20_000 });
}

/** node: TLS to allowed.test with the test CA, send, end (close_notify + FIN), print the reply. */
function tlsHalfClosingClient(payload: string) {
  const script = `
const tls = require('node:tls');
const s = tls.connect({ host: 'allowed.test', port: ${HALF_CLOSE_PORTS.tls}, servername: 'allowed.test', ca: require('node:fs').readFileSync(${JSON.stringify(world.caFile)}), allowHalfOpen: true }, () => s.end(${JSON.stringify(payload)}));
let reply = '';
s.on('data', (c) => (reply += c));
s.on('end', () => process.stdout.write(reply));
s.on('error', (e) => { process.stderr.write(e.message + '\\n'); process.exit(3); });
setTimeout(() => { process.stderr.write('no reply: ' + reply + '\\n'); process.exit(2); }, 10000).unref();
`;
  return world.job(process.execPath, ['-e', script], { timeoutMs: 20_000 });
}

function arrived(type: string, predicate: (e: Record<string, unknown>) => boolean) {
  return world.internetLog().filter((e) => e.type === type && predicate(e));
}

/** The close event of the decision matching `match`, waited for (bounded). */
async function closeOf(match: Parameters<World['decision']>[0]): Promise<CloseEvent | undefined> {
  const decision = await world.decision(match, 5000);
  assert.ok(decision, 'a decision event');
  const deadline = Date.now() + 5000;
  for (;;) {
    const close = world.events().find((e): e is CloseEvent => e.event === 'close' && e.id === decision.id);
    if (close || Date.now() > deadline) return close;
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode: half-closing clients get their reply`, () => {
    before(async () => {
      await world.startEgressGuard(mode);
    });
    after(async () => {
      await world.stopEgressGuard();
    });

    test('redirected plain HTTP: request, FIN, then the response (request and FIN inside the peek)', async () => {
      const marker = `hc-http-${mode}`;
      const result = await halfClosingClient('allowed.test', 80, `GET /${marker} HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n`);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^HTTP\/1\.1 200 /);
      assert.match(result.stdout, /hello from allowed\.test/);
      assert.equal(arrived('http', (e) => String(e.url).includes(marker)).length, 1);
      const close = await closeOf((e) => e.kind === 'transparent' && e.path === `/${marker}`);
      assert.equal(close?.status, 200);
      assert.equal(close?.error, undefined, 'no client-aborted');
    });

    test('redirected TCP (not TLS, not HTTP): bytes, FIN, reply; the server saw the FIN', async () => {
      const result = await halfClosingClient('allowed.test', HALF_CLOSE_PORTS.plain, `opaque-${mode}`);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `received ${`opaque-${mode}`.length} bytes\n`);
      assert.equal(arrived('half-close', (e) => e.data === `opaque-${mode}`).length, 1);
      const close = await closeOf((e) => e.kind === 'transparent' && e.port === HALF_CLOSE_PORTS.plain);
      assert.equal(close?.bytes_out, `opaque-${mode}`.length);
      assert.equal(close?.error, undefined);
    });

    test('redirected TLS: close_notify and FIN, then the reply inside TLS', async () => {
      const result = await tlsHalfClosingClient(`tls-${mode}`);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `received ${`tls-${mode}`.length} bytes\n`);
      assert.equal(arrived('half-close', (e) => e.data === `tls-${mode}`).length, 1);
      const close = await closeOf((e) => e.kind === 'transparent' && e.port === HALF_CLOSE_PORTS.tls && e.sni === 'allowed.test');
      assert.equal(close?.error, undefined);
    });

    test('explicit proxy, plain HTTP: the request reaches the server and the response comes back; one close event', async () => {
      const marker = `hc-explicit-${mode}`;
      const result = await halfClosingClient('127.0.0.1', 3128, `GET http://allowed.test/${marker} HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n`);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^HTTP\/1\.1 200 /);
      assert.equal(arrived('http', (e) => String(e.url).includes(marker)).length, 1);
      const close = await closeOf((e) => e.kind === 'http' && e.path === `/${marker}`);
      assert.equal(close?.status, 200);
      assert.equal(close?.error, undefined);
    });

    test('explicit proxy, CONNECT: bytes, FIN through the tunnel, reply', async () => {
      const result = await halfClosingClient('127.0.0.1', 3128, `tunnel-${mode}`, `allowed.test:${HALF_CLOSE_PORTS.plain}`);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `HTTP/1.1 200 Connection Established\nreceived ${`tunnel-${mode}`.length} bytes\n`);
      assert.equal(arrived('half-close', (e) => e.data === `tunnel-${mode}`).length, 1);
      const close = await closeOf((e) => e.kind === 'connect' && e.port === HALF_CLOSE_PORTS.plain);
      assert.equal(close?.bytes_out, `tunnel-${mode}`.length);
      assert.equal(close?.error, undefined);
    });

    if (mode === 'audit') {
      test('audit: a would-block destination is forwarded to a half-closing client too (audit never breaks a job)', async () => {
        const marker = 'hc-audit-attacker';
        const result = await halfClosingClient('attacker.test', 80, `GET /${marker} HTTP/1.1\\r\\nHost: attacker.test\\r\\n\\r\\n`);
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout, /^HTTP\/1\.1 200 /);
        const decision = await world.decision((e) => e.kind === 'transparent' && e.path === `/${marker}`);
        assert.equal(decision?.decision, 'would-block');
      });
    }
  });
}
