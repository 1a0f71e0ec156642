/**
 * attribution.ts on a redirected ClientHello that carries an encrypted inner one (ECH): with `encrypted-client-hello:
 * refuse` a connection the policy would let through uninspected is refused (`encrypted-client-hello`), reset in block
 * mode, forwarded would-block in audit mode; an inspected one, one refused anyway, and `allow` decide as before. The
 * transparent listener decides both first bytes within the peek and late ones (after a silent start) here. A real
 * policy and address book; nothing is looked up.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { authorizeTransparent } from '../../decision/attribution.js';
import type { Authorization } from '../../decision/authorize.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import type { PeekResult } from '../../net/sniffing/first-bytes.js';
import { buildPolicy } from '../../policy/index.js';

function context(mode: 'block' | 'audit', encryptedClientHello?: 'refuse' | 'allow') {
  const origin = { file: 'test', line: 1 };
  const policy = buildPolicy({
    mode: { value: mode, origin },
    'allowed-endpoints': { value: 'front.allowed.test github.test/my-org/**', origin },
    'allowed-ips': { value: '203.0.113.9', origin },
    'trusted-ranges': { value: '198.51.100.0/24', origin },
    ...(encryptedClientHello && { 'encrypted-client-hello': { value: encryptedClientHello, origin } }),
  });
  const addressBook = new AddressBook();
  addressBook.record('front.allowed.test', ['198.51.100.80'], 60_000);
  addressBook.record('github.test', ['198.51.100.44'], 60_000);
  addressBook.record('attacker.test', ['198.51.100.80'], 60_000);
  const resolver = new Resolver({ overrides: new Map(), addressBook });
  return { policy: () => policy, resolver, events: new EventLog({ stdout: false }), addressBook };
}

function hello(sni: string | undefined, encryptedClientHello: boolean): PeekResult {
  return { protocol: 'tls', bytes: 517, ...(sni !== undefined && { sni }), ...(encryptedClientHello && { encryptedClientHello: true as const }) };
}

async function decideRedirected(ctx: ReturnType<typeof context>, address: string, peek: PeekResult): Promise<Authorization> {
  const auth = await authorizeTransparent(ctx, { client: '198.51.100.2:40000', destination: { address, port: 443 }, peek, inspectable: true });
  if (auth.action !== 'reject') auth.connection.close({});
  return auth;
}

describe('a redirected ClientHello with ECH', () => {
  test('block mode (refuse by default): an allowed outer SNI is refused as encrypted-client-hello, with a message a person understands', async () => {
    const auth = await decideRedirected(context('block'), '198.51.100.80', hello('front.allowed.test', true));
    assert.equal(auth.action, 'reject');
    assert.deepEqual(
      [auth.event.decision, auth.event.reason, auth.event.host, auth.event.sni, auth.event.ip],
      ['blocked', 'encrypted-client-hello', 'front.allowed.test', 'front.allowed.test', '198.51.100.80'],
    );
    assert.match(auth.event.message, /encrypted inner ClientHello \(ECH\) whose server name egress-guard cannot read/);
  });

  test('block mode: without a server name, to an address allowed-ips lets through, refused too', async () => {
    const auth = await decideRedirected(context('block'), '203.0.113.9', hello(undefined, true));
    assert.deepEqual([auth.action, auth.event.reason], ['reject', 'encrypted-client-hello']);
  });

  test('audit mode: forwarded to the destination, reported would-block', async () => {
    const auth = await decideRedirected(context('audit'), '198.51.100.80', hello('front.allowed.test', true));
    assert.equal(auth.action, 'forward');
    assert.deepEqual([auth.event.decision, auth.event.reason, auth.action === 'forward' && auth.address], ['would-block', 'encrypted-client-hello', '198.51.100.80']);
  });

  test('allow: decided on the outer SNI alone, as without ECH', async () => {
    const auth = await decideRedirected(context('block', 'allow'), '198.51.100.80', hello('front.allowed.test', true));
    assert.deepEqual([auth.action, auth.event.decision, auth.event.reason], ['forward', 'allowed', 'trusted-range']);
  });

  test('an inspected host is handed to the inspector as before (its TLS server ignores ECH and it connects upstream itself)', async () => {
    const auth = await decideRedirected(context('block'), '198.51.100.44', hello('github.test', true));
    assert.equal(auth.action, 'forward');
    assert.equal(auth.decision.inspect, true);
  });

  test('an outer SNI the policy refuses is reported for its own reason', async () => {
    const auth = await decideRedirected(context('block'), '198.51.100.80', hello('attacker.test', true));
    assert.deepEqual([auth.action, auth.event.reason], ['reject', 'not-allowed-endpoint']);
  });

  test('without ECH, the same hello is allowed as before', async () => {
    const auth = await decideRedirected(context('block'), '198.51.100.80', hello('front.allowed.test', false));
    assert.deepEqual([auth.action, auth.event.decision], ['forward', 'allowed']);
  });
});
