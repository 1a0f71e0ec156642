import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EventLog } from '../../events/event-log.js';
import type { CloseFields, DecisionFields, EgressEvent } from '../../events/schema.js';
import { conformEvent, MAX_KEY_TEXT_BYTES, NO_HOST, storableEvent, validateEvent } from '../../events/validate.js';

/**
 * Text as a client could make any field be: empty, odd characters, or longer than the schema allows; NUL, lone
 * surrogates, and text over what the collector's stores keep as a host (2,048 bytes of UTF-8) in characters of 1 to 4 bytes.
 */
const text = fc.oneof(
  fc.constant(''),
  fc.string({ maxLength: 40 }),
  fc.string({ minLength: 4090, maxLength: 5000 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('a\u0000b.test', 'x\ud800y.test', '\udc00', 'ok.test\u0000'),
  fc.tuple(fc.constantFrom('a', '\u00e9', '\u4e00', '\ud83d\ude00'), fc.integer({ min: 500, max: 2100 })).map(([c, n]) => c.repeat(n)),
);
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
    reason: fc.constantFrom('allowed-endpoint', 'not-allowed-endpoint', 'raw-ip', 'invalid-host', 'malformed-request', 'sni-mismatch', 'encrypted-client-hello'),
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
  const roundTrip = (e: EgressEvent) => storableEvent(validateEvent(JSON.parse(JSON.stringify(e))));

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

  test("a host the collector's stores cannot keep is cut to 2,048 bytes at a character's start, NUL and lone surrogates replaced", () => {
    // A CONNECT to a long junk target is an invalid-host decision naming it: refused at the collector, it was missing there.
    const decide = (host: string) =>
      events.decision({ kind: 'connect', client: '127.0.0.1:1', host, port: 443, decision: 'blocked', reason: 'invalid-host', rule: null, message: 'invalid host', mode: 'block' });
    assert.equal(decide('a'.repeat(3072)).host, 'a'.repeat(MAX_KEY_TEXT_BYTES));
    assert.equal(decide('a'.repeat(MAX_KEY_TEXT_BYTES)).host, 'a'.repeat(MAX_KEY_TEXT_BYTES));
    // 4-byte characters: 2,048 is a character's start; 3-byte ones: 2,046 is the last.
    assert.equal(decide('\ud83d\ude00'.repeat(600)).host, '\ud83d\ude00'.repeat(512));
    assert.equal(decide(`a${'\ud83d\ude00'.repeat(600)}`).host, `a${'\ud83d\ude00'.repeat(511)}`);
    assert.equal(decide('\u4e00'.repeat(700)).host, '\u4e00'.repeat(682));
    assert.equal(decide('a\u0000b.test').host, 'a\ufffdb.test');
    assert.equal(decide('x\ud800y.test').host, 'x\ufffdy.test');
    const close = events.close({ id: 'c', kind: 'connect', client: '127.0.0.1:1', host: 'b'.repeat(4000), port: 443, bytes_in: 0, bytes_out: 0, duration_ms: 1 });
    assert.equal(close.host, 'b'.repeat(MAX_KEY_TEXT_BYTES));
    const withCi = new EventLog({ stdout: false, ci: { repository: 'o/\u0000', run_id: '1', job: 'j'.repeat(3000), job_id: '\ud800' } });
    const event = withCi.decision({
      kind: 'dns',
      client: '127.0.0.1:1',
      host: 'a.test',
      port: 53,
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: null,
      message: 'm',
      mode: 'block',
    });
    assert.deepEqual(event.ci, { repository: 'o/\ufffd', run_id: '1', job: 'j'.repeat(MAX_KEY_TEXT_BYTES), job_id: '\ufffd' });
    storableEvent(validateEvent(JSON.parse(JSON.stringify(event))));
  });
});
