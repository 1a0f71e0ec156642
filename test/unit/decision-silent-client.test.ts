/**
 * attribution.ts `silentClientAllowed`: whether a redirected client that stays silent would be let through by DNS
 * attribution on a name needing no inspection (the transparent listener then peeks 200 ms, not 1 s). A real policy
 * and address book; nothing is looked up or emitted by silentClientAllowed itself.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { authorizeTransparent, silentClientAllowed } from '../../decision/attribution.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';

function context(mode: 'block' | 'audit') {
  const origin = { file: 'test', line: 1 };
  const policy = buildPolicy({
    mode: { value: mode, origin },
    'allowed-endpoints': { value: 'smtp.allowed.test:25 www.allowed.test internal.allowed.test:25 github.test/my-org/** cdn-plain.test', origin },
    'allowed-ips': { value: '10.0.0.25', origin },
    // The documentation range stands for public addresses; 10.0.0.0/8 is not trusted.
    'trusted-ranges': { value: '198.51.100.0/24', origin },
  });
  const addressBook = new AddressBook();
  addressBook.record('smtp.allowed.test', ['198.51.100.25'], 60_000);
  addressBook.record('www.allowed.test', ['198.51.100.80'], 60_000);
  addressBook.record('github.test', ['198.51.100.44'], 60_000);
  addressBook.record('attacker.test', ['203.0.113.66'], 60_000);
  // A shared address: one allowed name and one not.
  addressBook.record('cdn-other.test', ['198.51.100.80'], 60_000);
  // A shared address: an allowed name without rules first, then one with path rules (inspected).
  addressBook.record('cdn-plain.test', ['198.51.100.45'], 60_000);
  addressBook.record('github.test', ['198.51.100.45'], 60_000);
  // An allowed name on a private address that is not in trusted-ranges (though in allowed-ips).
  addressBook.record('internal.allowed.test', ['10.0.0.25'], 60_000);
  const resolver = new Resolver({ overrides: new Map(), addressBook });
  return { policy: () => policy, resolver, events: new EventLog({ stdout: false }), addressBook };
}

const cases: [address: string, port: number, expected: boolean, why: string][] = [
  ['198.51.100.25', 25, true, 'smtp.allowed.test:25'],
  ['198.51.100.25', 587, false, 'another port than the entry names'],
  ['198.51.100.80', 443, true, 'a shared address with an allowed name on it'],
  ['198.51.100.44', 443, false, 'a host with path rules is inspected: a silent client would be refused'],
  ['198.51.100.45', 443, false, 'a shared address where another name has path rules: a slow ClientHello for it needs the full peek to be inspected'],
  ['10.0.0.25', 25, false, 'an allowed name on an address outside trusted-ranges: a silent client is refused (denied-address)'],
  ['203.0.113.66', 443, false, 'a name the policy does not allow'],
  ['203.0.113.7', 443, false, 'an address no name resolved to'],
];

describe('silentClientAllowed', () => {
  for (const mode of ['block', 'audit'] as const) {
    test(`${mode} mode: allowed only where the address resolved from an allowed name that needs no inspection`, () => {
      const ctx = context(mode);
      for (const [address, port, expected, why] of cases) assert.equal(silentClientAllowed(ctx, { address, port }), expected, why);
    });
  }

  test('where it says so, authorizeTransparent lets a silent client through, on a name that is not inspected (block mode)', async () => {
    const ctx = context('block');
    for (const [address, port, expected, why] of cases) {
      if (expected !== silentClientAllowed(ctx, { address, port })) continue;
      const auth = await authorizeTransparent(ctx, { client: '198.51.100.2:40000', destination: { address, port }, peek: { protocol: 'other', bytes: 0 } });
      if (expected) {
        assert.equal(auth.action, 'forward', why);
        assert.equal(auth.decision.inspect, undefined, why);
        if (auth.action === 'forward') auth.connection.close({});
      }
    }
  });
});
