/**
 * dns/own-endpoints.ts: which configured upstreams lead back to one of egress-guard's own DNS listeners, and so are
 * left out (else each forwarded query is decided again, or forwarded in a loop). The host's interface addresses are
 * given, so the cases do not depend on this machine's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normaliseAddress, reachesListener, withoutOwnListeners } from '../../dns/own-endpoints.js';
import { parseUpstream } from '../../dns/upstream.js';

const LOCAL = new Set(['127.0.0.1', '::1', '203.0.113.7', '2001:db8::7'].map(normaliseAddress));
const texts = (list: readonly { text: string }[]) => list.map((u) => u.text);

test('the default listeners (127.0.0.1:53, [::1]:53) with resolv.conf naming either: both left out, for each listener', () => {
  const listens = [
    { host: '127.0.0.1', port: 53 },
    { host: '::1', port: 53 },
  ];
  const upstreams = ['127.0.0.1', '[::1]', '198.51.100.53', '[2001:db8::53]'].map(parseUpstream);
  assert.deepEqual(texts(withoutOwnListeners(upstreams, listens, LOCAL).kept), ['198.51.100.53', '[2001:db8::53]']);
  assert.deepEqual(texts(withoutOwnListeners(upstreams, listens, LOCAL).dropped), ['127.0.0.1', '[::1]']);
});

test('another port of the same address is another server (systemd-resolved on 127.0.0.53, a resolver on :5353)', () => {
  const listens = [{ host: '127.0.0.1', port: 53 }];
  const upstreams = ['127.0.0.53', '127.0.0.1:5353'].map(parseUpstream);
  assert.deepEqual(texts(withoutOwnListeners(upstreams, listens, LOCAL).kept), ['127.0.0.53', '127.0.0.1:5353']);
});

test('a wildcard listener: the same port on an address of this host is egress-guard; elsewhere it is a resolver', () => {
  const any4 = { host: '0.0.0.0', port: 53 };
  assert.equal(reachesListener(parseUpstream('198.51.100.53'), any4, LOCAL), false, 'a remote resolver on port 53 is kept');
  assert.equal(reachesListener(parseUpstream('203.0.113.7'), any4, LOCAL), true, "an interface's address");
  assert.equal(reachesListener(parseUpstream('127.0.0.53'), any4, LOCAL), true, 'all of 127.0.0.0/8 is this host');
  assert.equal(reachesListener(parseUpstream('[2001:db8::7]'), any4, LOCAL), false, '0.0.0.0 takes no IPv6');
  assert.equal(reachesListener(parseUpstream('203.0.113.7:5353'), any4, LOCAL), false, 'another port');
  const any6 = { host: '::', port: 53 };
  assert.equal(reachesListener(parseUpstream('[2001:db8::7]'), any6, LOCAL), true);
  assert.equal(reachesListener(parseUpstream('203.0.113.7'), any6, LOCAL), true, ':: alone takes IPv4 too (dual stack)');
  assert.equal(reachesListener(parseUpstream('127.0.0.1'), any6, LOCAL), true, 'IPv4 loopback too');
  assert.equal(reachesListener(parseUpstream('[::1]'), any6, LOCAL), true, 'IPv6 loopback');
  assert.equal(reachesListener(parseUpstream('[2001:db8::53]'), any6, LOCAL), false);
});

test('[::]:P beside an IPv4 address with port P binds IPv6 only (net/listen.ts ipv6OnlyFor): it takes no IPv4 upstream', () => {
  // Alone, `[::]:53` takes 127.0.0.1:53 too: a resolv.conf naming 127.0.0.1 would loop.
  const upstreams = ['127.0.0.1', '203.0.113.7', '[::1]'].map(parseUpstream);
  assert.deepEqual(texts(withoutOwnListeners(upstreams, [{ host: '::', port: 53 }], LOCAL).dropped), ['127.0.0.1', '203.0.113.7', '[::1]']);
  // Beside 127.0.0.1:53 it is IPv6 only: an interface's IPv4 address on port 53 is someone else's resolver.
  const pair = [
    { host: '127.0.0.1', port: 53 },
    { host: '::', port: 53 },
  ];
  assert.deepEqual(texts(withoutOwnListeners(upstreams, pair, LOCAL).kept), ['203.0.113.7']);
  // An IPv4 address with another port does not make it IPv6 only.
  assert.deepEqual(
    texts(
      withoutOwnListeners(
        upstreams,
        [
          { host: '127.0.0.1', port: 5353 },
          { host: '::', port: 53 },
        ],
        LOCAL,
      ).dropped,
    ),
    ['127.0.0.1', '203.0.113.7', '[::1]'],
  );
});

test('addresses compare by value, not by spelling', () => {
  assert.equal(reachesListener(parseUpstream('[0:0:0:0:0:0:0:1]'), { host: '::1', port: 53 }, LOCAL), true);
  assert.equal(reachesListener(parseUpstream('[2001:DB8:0::7]'), { host: '2001:db8::7', port: 53 }, LOCAL), true);
});
