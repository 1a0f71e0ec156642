/**
 * dns/upstream.ts: an upstream the UDP socket cannot connect to (no route to it, a broadcast address) is a failed
 * attempt like a timeout: the next upstream is asked and the process goes on. Before, the connect's error reached
 * its callback, which sent on the unconnected socket without a port: an uncaught ERR_SOCKET_BAD_PORT that ended
 * egress-guard on the first lookup forwarded in a network with no route to its resolver (the README's quick start
 * in a namespace of its own, test/e2e/readme-quick-start.test.ts). 255.255.255.255 fails the same way on any
 * machine: connect(2) to a broadcast address without SO_BROADCAST is EACCES.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { lookupAddresses } from '../../dns/address-lookup.js';
import { parseUpstream, UpstreamClient, UpstreamError } from '../../dns/upstream.js';
import { questionFor, TYPE } from '../../dns/wire.js';
import { TEST_ZONE } from '../helpers/dns-fixture.js';
import { startZoneServer, type ZoneServer } from '../helpers/dns-zone-server.js';

const UNCONNECTABLE = '255.255.255.255';
let zone: ZoneServer;

before(async () => {
  zone = await startZoneServer(TEST_ZONE);
});

after(async () => {
  await zone.close();
});

test('an upstream the socket cannot connect to: the next upstream answers', async () => {
  const client = new UpstreamClient([parseUpstream(UNCONNECTABLE), parseUpstream(zone.address)], { timeoutMs: 2000, rounds: 1 });
  try {
    assert.deepEqual((await lookupAddresses(client, 'allowed.test')).sort(), ['198.51.100.10', '2001:db8::10']);
  } finally {
    client.close();
  }
});

test('only such upstreams: the upstream error names the connect failure (not a timeout)', async () => {
  const client = new UpstreamClient([parseUpstream(UNCONNECTABLE)], { timeoutMs: 5000, rounds: 2 });
  try {
    const err = await client.query(questionFor('allowed.test', TYPE.A), 0).then(
      () => assert.fail('no upstream can answer'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof UpstreamError, String(err));
    assert.equal(err.failures.length, 2);
    for (const failure of err.failures) assert.match(failure, /^255\.255\.255\.255: .*EACCES/);
  } finally {
    client.close();
  }
});
