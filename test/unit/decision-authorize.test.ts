/**
 * authorize() with the addresses already known (redirected connections, inspected requests) decides once, on name
 * and addresses together, when that lets the request through, and takes the two-step path (name, then addresses)
 * for a refusal. Checked here against the two-step procedure itself, written out with decide(), over a grid of
 * hosts, methods, paths, addresses and both modes: the same action, decision (outcome, reason, rule, ip, message)
 * and address, and the same one decision event.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { authorize, type AuthorizeRequest } from '../../decision/authorize.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import type { DecisionEvent } from '../../events/schema.js';
import { buildPolicy, decide, literalAddress, type Decision, type Mode, type Policy } from '../../policy/index.js';

function policy(mode: Mode): Policy {
  const origin = { file: 'decision-authorize.test', line: 1 };
  return buildPolicy({
    mode: { value: mode, origin },
    'allowed-endpoints': { value: 'github.test:*/my-org/** other.test:* GET,HEAD registry.test:*', origin },
    'denied-endpoints': { value: 'POST github.test:*/my-org/secret', origin },
    'allowed-ips': { value: '10.0.0.1/32', origin },
    'trusted-ranges': { value: '127.0.0.0/8', origin },
  });
}

/** The two-step procedure authorize() followed for every request before it decided once (the oracle). */
function twoStep(p: Policy, request: Required<Pick<AuthorizeRequest, 'host' | 'port' | 'addresses'>> & { method?: string; path?: string }) {
  const asked = { host: request.host, port: request.port, ...(request.method && { method: request.method }), ...(request.path && { path: request.path }) };
  const name = decide(p, asked);
  if (name.outcome === 'blocked' || name.reason === 'invalid-host') {
    const destination = request.addresses[0];
    const decision = name.ip === undefined && destination !== undefined ? { ...name, ip: literalAddress(destination) ?? destination } : name;
    return { action: 'reject', decision };
  }
  if (name.ip !== undefined) return { action: 'forward', decision: name, address: name.ip };
  const decision = decide(p, { ...asked, addresses: request.addresses });
  if (decision.outcome === 'blocked') return { action: 'reject', decision };
  const address = decision.ip ?? request.addresses[0];
  if (address === undefined) return { action: 'fail', decision };
  return { action: 'forward', decision: decision.ip === undefined ? { ...decision, ip: address } : decision, address };
}

const HOSTS = ['github.test', 'GitHub.Test.', 'other.test', 'registry.test', 'attacker.test', '10.0.0.1', '10.0.0.2', '[::1]', 'bad host', ''];
const REQUESTS: Array<{ method?: string; path?: string }> = [
  {},
  { method: 'GET', path: '/my-org/app' },
  { method: 'POST', path: '/my-org/secret' },
  { method: 'PUT', path: '/elsewhere?token=1' },
];
const ADDRESSES = [['127.0.0.1'], ['10.1.2.3'], ['8.8.8.8'], ['10.1.2.3', '127.0.0.2'], ['not-an-address'], []];

for (const mode of ['block', 'audit'] as const) {
  describe(`authorize with known addresses (${mode} mode)`, () => {
    test('decides as the two-step procedure does, with the same decision event', async () => {
      const p = policy(mode);
      const events = new EventLog({ stdout: false });
      const emitted: DecisionEvent[] = [];
      events.subscribe((e) => void (e.event === 'decision' && emitted.push(e)));
      const ctx = { policy: () => p, resolver: new Resolver({ overrides: new Map(), addressBook: new AddressBook() }), events };
      let compared = 0;
      for (const host of HOSTS)
        for (const extra of REQUESTS)
          for (const addresses of ADDRESSES) {
            const request = { host, port: 443, addresses, ...extra };
            const expected = twoStep(p, request);
            const before = emitted.length;
            const got = await authorize(ctx, { kind: 'transparent', client: '127.0.0.1', ...request });
            const where = JSON.stringify(request);
            assert.equal(got.action, expected.action, where);
            assert.deepEqual(got.decision, expected.decision as Decision, where);
            if (got.action === 'forward') assert.equal(got.address, expected.address, where);
            if (got.action !== 'reject') got.connection.close({});
            assert.equal(emitted.length, before + 1, `one decision event: ${where}`);
            const event = emitted.at(-1)!;
            assert.equal(event.decision, expected.decision.outcome, where);
            assert.equal(event.reason, expected.decision.reason, where);
            assert.equal(event.ip, expected.decision.ip, where);
            assert.equal(event.message, expected.decision.message, where);
            compared++;
          }
      assert.equal(compared, HOSTS.length * REQUESTS.length * ADDRESSES.length);
      // The grid reaches every branch: forwarded, refused, and a refusal that names the connection's destination.
      const actions = new Set(emitted.map((e) => e.decision));
      assert.ok(actions.has('allowed') && (actions.has('blocked') || actions.has('would-block')), [...actions].join(','));
    });
  });
}
