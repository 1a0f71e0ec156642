import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EventLog } from '../../events/event-log.js';
import type { CloseFields, DecisionFields, EgressEvent } from '../../events/schema.js';
import { conformEvent, NO_HOST, validateEvent } from '../../events/validate.js';

/** Text as a client could make any field be: empty, odd characters, or longer than the schema allows. */
const text = fc.oneof(fc.constant(''), fc.string({ maxLength: 40 }), fc.string({ minLength: 4090, maxLength: 5000 }), fc.string({ unit: 'grapheme', maxLength: 20 }));
const kind = fc.constantFrom('http', 'connect', 'transparent', 'dns') as fc.Arbitrary<DecisionFields['kind']>;
const port = fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: -5, max: 70000 }));

/** Every shape a decision takes on its way to EventLog.decision (authorize, the SNI checks, DNS, attribution). */
const decisionFields: fc.Arbitrary<DecisionFields> = fc.record(
  {
    kind,
    client: text,
    host: text,
    port,
    ip: text,
    sni: text,
    qtype: text,
    method: text,
    path: text,
    decision: fc.constantFrom('allowed', 'blocked', 'would-block'),
    reason: fc.constantFrom('allowed-endpoint', 'not-allowed-endpoint', 'raw-ip', 'invalid-host', 'malformed-request', 'sni-mismatch'),
    rule: fc.option(text, { nil: null }),
    message: text,
    mode: fc.constantFrom('audit', 'block'),
  },
  { requiredKeys: ['kind', 'client', 'host', 'port', 'decision', 'reason', 'rule', 'message', 'mode'] },
) as fc.Arbitrary<DecisionFields>;

const closeFields: fc.Arbitrary<CloseFields> = fc.record(
  {
    id: fc.uuid(),
    kind,
    client: text,
    host: text,
    port,
    ip: text,
    bytes_in: fc.nat(),
    bytes_out: fc.nat(),
    duration_ms: fc.oneof(fc.nat(), fc.constant(-1)),
    status: fc.integer({ min: 0, max: 1200 }),
    error: text,
  },
  { requiredKeys: ['id', 'kind', 'client', 'host', 'port', 'bytes_in', 'bytes_out', 'duration_ms'] },
) as fc.Arbitrary<CloseFields>;

describe('every event the sidecar emits passes the validator the collector uses', () => {
  const events = new EventLog({ stdout: false, ci: { repository: 'octo/repo', run_id: '1', job: 'build' } });
  const seen: EgressEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const roundTrip = (e: EgressEvent) => validateEvent(JSON.parse(JSON.stringify(e)));

  test('decision events, whatever their fields', () => {
    fc.assert(
      fc.property(decisionFields, (fields) => {
        roundTrip(events.decision(fields));
        roundTrip(seen.at(-1)!);
      }),
      { numRuns: 500 },
    );
  });

  test('close events, whatever their fields', () => {
    fc.assert(
      fc.property(closeFields, (fields) => {
        roundTrip(events.close(fields));
      }),
      { numRuns: 500 },
    );
  });

  test('a close event is the one its fields spread into the event and conformed by conformEvent make, key by key', () => {
    fc.assert(
      fc.property(closeFields, (fields) => {
        const before = JSON.stringify(fields);
        const event = events.close(fields);
        const spread = conformEvent({ schema: 1, event: 'close', time: event.time, ...fields } as EgressEvent);
        assert.equal(JSON.stringify(event), JSON.stringify(spread));
        assert.deepEqual(event, spread);
        assert.equal(seen.at(-1), event);
        // The caller's fields are not changed.
        assert.equal(JSON.stringify(fields), before);
      }),
      { numRuns: 1000, seed: 14 },
    );
  });

  test('what is corrected: an empty host, text over the limit, a status out of range', () => {
    const d = events.decision({
      kind: 'dns',
      client: '127.0.0.1:1',
      host: '',
      port: 53,
      decision: 'blocked',
      reason: 'malformed-request',
      rule: null,
      message: 'x'.repeat(5000),
      mode: 'block',
    });
    assert.equal(d.host, NO_HOST);
    assert.equal(d.message.length, 4096);
    const c = events.close({ id: d.id, kind: 'dns', client: '127.0.0.1:1', host: 'a.test', port: 53, bytes_in: 0, bytes_out: 0, duration_ms: 1, status: 42 });
    assert.equal('status' in c, false);
  });
});
