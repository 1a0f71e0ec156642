import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DnsResponder } from '../../dns/responder.js';
import { parseUpstream } from '../../dns/upstream.js';
import { AddressBook } from '../../decision/address-book.js';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { makePolicy, queryBytes } from '../helpers/dns-fixture.js';

/**
 * A query dropped at max-in-flight is reported as the answer path would have read it. Until review45 the report read
 * the packet as whole even when it was the start of a larger datagram (`cut`, net/udp-batch.ts): a datagram too big
 * for the read, whose first bytes hold a whole question, was an at-capacity decision naming that question, where
 * answered it is a malformed packet (FORMERR).
 */
test('a dropped query that is the start of a larger datagram is reported malformed, a whole one at-capacity', () => {
  const events = new EventLog({ stdout: false });
  const emitted: EgressEvent[] = [];
  events.subscribe((e) => emitted.push(e));
  // The upstream is never asked: nothing here is answered.
  const responder = new DnsResponder({ upstreams: [parseUpstream('127.0.0.1:9')], policy: () => makePolicy({ mode: 'audit' }), events, addressBook: new AddressBook() });
  try {
    const client = { address: '127.0.0.1', port: 5353 };
    responder.reportDropped(queryBytes(1, 'allowed.test'), client, 2048);
    responder.reportDropped(queryBytes(2, 'allowed.test'), client, 2048, true);
    const decisions = emitted.filter((e) => e.event === 'decision');
    assert.deepEqual(
      decisions.map((e) => [e.reason, e.host]),
      [
        ['at-capacity', 'allowed.test'],
        ['malformed-request', '(none)'],
      ],
    );
    assert.match(String(decisions[1]!.message), /datagram larger than .*; dropped$/);
  } finally {
    responder.close();
  }
});
