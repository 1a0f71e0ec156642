/**
 * A redirected TLS connection whose ClientHello carries ECH (encrypted_client_hello): the job connects straight to
 * allowed.test's address (the transparent listener decides it), with allowed.test as the outer SNI. The internet side
 * is the judge: its reply-after-FIN service on allowed.test records what arrived. Block mode (encrypted-client-hello:
 * refuse, the default): reset, nothing arrives; audit mode: it arrives, reported would-block; `allow`: it arrives,
 * allowed. A ClientHello without ECH arrives in block mode. Needs root (namespaces `ech-*`, iptables in them).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { clientHelloFor, clientHelloWithEch } from '../helpers/tls-client-hello.js';
import { HALF_CLOSE_PORTS, World } from './harness.js';

let world: World;
let echHello: Buffer;
let plainHello: Buffer;

before(async () => {
  world = await World.create({ prefix: 'ech' });
  echHello = await clientHelloWithEch('allowed.test');
  plainHello = await clientHelloFor('allowed.test');
});

after(async () => {
  await world?.close();
});

/** node in the runner: connect to allowed.test (through egress-guard's DNS), write `hello`, end, and print the reply or the error code. */
function sendHello(hello: Buffer) {
  const script = `
const net = require('node:net');
const s = net.connect({ host: 'allowed.test', port: ${HALF_CLOSE_PORTS.plain}, allowHalfOpen: true }, () => s.end(Buffer.from(process.argv[1], 'hex')));
let reply = '';
s.on('data', (c) => (reply += c));
s.on('end', () => process.stdout.write(reply));
s.on('error', (e) => { process.stdout.write('error ' + (e.code || e.message)); process.exit(0); });
setTimeout(() => { process.stdout.write('no reply ' + reply); process.exit(0); }, 10000).unref();
`;
  return world.job(process.execPath, ['-e', script, hello.toString('hex')], { timeoutMs: 20_000 });
}

/** What the internet's reply-after-FIN service recorded receiving: the byte counts, one per connection that ended. */
function arrivedBytes(): number[] {
  return world
    .internetLog()
    .filter((e) => e.type === 'half-close' && e.port === HALF_CLOSE_PORTS.plain)
    .map((e) => e.bytes as number);
}

describe('block mode, encrypted-client-hello: refuse (the default)', () => {
  before(async () => {
    await world.startEgressGuard('block');
  });
  after(async () => {
    await world.stopEgressGuard();
  });

  test('a ClientHello with ECH whose outer SNI is allowed.test is reset, and nothing reaches allowed.test', async () => {
    const before = arrivedBytes().length;
    const result = await sendHello(echHello);
    assert.equal(result.stdout, 'error ECONNRESET', result.stderr);
    const event = await world.decision((e) => e.kind === 'transparent' && e.reason === 'encrypted-client-hello');
    assert.ok(event, 'an encrypted-client-hello decision');
    assert.deepEqual([event.decision, event.host, event.sni, event.port], ['blocked', 'allowed.test', 'allowed.test', HALF_CLOSE_PORTS.plain]);
    // The control below reaches the same service through the same listener: were this one relayed, it would be logged too.
    const control = await sendHello(plainHello);
    assert.equal(control.stdout, `received ${plainHello.length} bytes\n`, control.stderr);
    assert.deepEqual(arrivedBytes().slice(before), [plainHello.length], 'only the ClientHello without ECH arrived');
  });
});

describe('audit mode', () => {
  before(async () => {
    await world.startEgressGuard('audit');
  });
  after(async () => {
    await world.stopEgressGuard();
  });

  test('a ClientHello with ECH arrives, and is reported would-block as encrypted-client-hello', async () => {
    const result = await sendHello(echHello);
    assert.equal(result.stdout, `received ${echHello.length} bytes\n`, result.stderr);
    const event = await world.decision((e) => e.kind === 'transparent' && e.reason === 'encrypted-client-hello' && e.mode === 'audit');
    assert.ok(event, 'an encrypted-client-hello decision');
    assert.equal(event.decision, 'would-block');
  });
});

describe('block mode, encrypted-client-hello: allow', () => {
  before(async () => {
    await world.startEgressGuard('block', [], { env: { EGRESS_ENCRYPTED_CLIENT_HELLO: 'allow' } });
  });
  after(async () => {
    await world.stopEgressGuard();
  });

  test('a ClientHello with ECH is decided on its outer SNI and arrives', async () => {
    const result = await sendHello(echHello);
    assert.equal(result.stdout, `received ${echHello.length} bytes\n`, result.stderr);
    const event = await world.decision((e) => e.kind === 'transparent' && e.port === HALF_CLOSE_PORTS.plain && e.decision === 'allowed');
    assert.ok(event, 'an allowed decision');
    assert.ok(!world.events().some((e) => e.event === 'decision' && e.reason === 'encrypted-client-hello'));
  });
});
