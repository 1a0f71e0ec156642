/**
 * attribution.ts `silentClientAllowed`: whether a redirected client that stays silent would be let through by DNS
 * attribution on a name needing no inspection (the transparent listener then peeks 200 ms, not 1 s). A real policy
 * and address book; nothing is looked up or emitted.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { silentClientAllowed } from '../../decision/attribution.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';

function context(mode: 'block' | 'audit') {
  const origin = { file: 'test', line: 1 };
  const policy = buildPolicy({
    mode: { value: mode, origin },
    'allowed-endpoints': { value: 'smtp.allowed.test:25 www.allowed.test github.test/my-org/**', origin },
  });
  const addressBook = new AddressBook();
  addressBook.record('smtp.allowed.test', ['198.51.100.25'], 60_000);
  addressBook.record('www.allowed.test', ['198.51.100.80'], 60_000);
  addressBook.record('github.test', ['198.51.100.44'], 60_000);
  addressBook.record('attacker.test', ['203.0.113.66'], 60_000);
  // A shared address: one allowed name and one not.
  addressBook.record('cdn-other.test', ['198.51.100.80'], 60_000);
  const resolver = new Resolver({ overrides: new Map(), addressBook });
  return { policy: () => policy, resolver, events: new EventLog({ stdout: false }), addressBook };
}

describe('silentClientAllowed', () => {
  for (const mode of ['block', 'audit'] as const) {
    test(`${mode} mode: allowed only where the address resolved from an allowed name that needs no inspection`, () => {
      const ctx = context(mode);
      assert.equal(silentClientAllowed(ctx, { address: '198.51.100.25', port: 25 }), true, 'smtp.allowed.test:25');
      assert.equal(silentClientAllowed(ctx, { address: '198.51.100.25', port: 587 }), false, 'another port than the entry names');
      assert.equal(silentClientAllowed(ctx, { address: '198.51.100.80', port: 443 }), true, 'a shared address with an allowed name on it');
      assert.equal(silentClientAllowed(ctx, { address: '198.51.100.44', port: 443 }), false, 'a host with path rules is inspected: a silent client would be refused');
      assert.equal(silentClientAllowed(ctx, { address: '203.0.113.66', port: 443 }), false, 'a name the policy does not allow');
      assert.equal(silentClientAllowed(ctx, { address: '203.0.113.7', port: 443 }), false, 'an address no name resolved to');
    });
  }
});
