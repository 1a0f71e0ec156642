/**
 * dns/address-lookup.ts: egress-guard's own name lookups through its DNS client (what the proxy resolves when a
 * socket mark is in use), against a real DNS server on loopback.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { lookupAddresses } from '../../dns/address-lookup.js';
import { parseUpstream, UpstreamClient } from '../../dns/upstream.js';
import { questionFor, TYPE, WireError } from '../../dns/wire.js';
import { TEST_ZONE } from '../helpers/dns-fixture.js';
import { startZoneServer, type ZoneServer } from '../helpers/dns-zone-server.js';

let zone: ZoneServer;
let client: UpstreamClient;

before(async () => {
  zone = await startZoneServer(TEST_ZONE);
  client = new UpstreamClient([parseUpstream(zone.address)], { timeoutMs: 2000, rounds: 1 });
});

after(async () => {
  client.close();
  await zone.close();
});

test('a name with A and AAAA records: both addresses', async () => {
  assert.deepEqual((await lookupAddresses(client, 'allowed.test')).sort(), ['198.51.100.10', '2001:db8::10']);
});

test('a CNAME chain: the final address', async () => {
  assert.deepEqual(await lookupAddresses(client, 'cname.allowed.test'), ['198.51.100.30']);
});

test('no such name: ENOTFOUND, as node reports it', async () => {
  await assert.rejects(lookupAddresses(client, 'missing.nowhere.test'), { code: 'ENOTFOUND' });
});

test('a name without addresses (TXT only is not enough): ENODATA', async () => {
  const txtOnly = await startZoneServer({ 'txt.test': [{ type: 'TXT', value: 'x' }] });
  const other = new UpstreamClient([parseUpstream(txtOnly.address)], { timeoutMs: 2000, rounds: 1 });
  try {
    await assert.rejects(lookupAddresses(other, 'txt.test'), { code: 'ENODATA' });
  } finally {
    other.close();
    await txtOnly.close();
  }
});

test('no upstream answers: the upstream error, not a guess', async () => {
  const silent = new UpstreamClient([], { timeoutMs: 200, rounds: 1 });
  await assert.rejects(lookupAddresses(silent, 'allowed.test'), /no upstream resolvers configured/);
});

test('questionFor: plain names only, case-folded, class IN', () => {
  const question = questionFor('Allowed.Test.', TYPE.AAAA);
  assert.equal(question.name, 'allowed.test');
  assert.equal(question.raw.toString('hex'), '07416c6c6f776564045465737400001c0001');
  assert.throws(() => questionFor('a..test', TYPE.A), WireError);
  assert.throws(() => questionFor('bad name.test', TYPE.A), WireError);
  assert.throws(() => questionFor(`${'a'.repeat(64)}.test`, TYPE.A), WireError);
});
