import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { deflateRawSync, inflateRawSync, type DeflateRaw } from 'node:zlib';
import fc from 'fast-check';
import { decodeId, encodeId, packBody, unpackEvent, withBodyId } from '../../collector/stores/codec.js';
import { RawCodec, rawCodec } from '../../collector/stores/raw-deflate.js';
import { jobKey } from '../../events/job-key.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';

const text = fc.string({ unit: 'binary', maxLength: 40 });

const decision: fc.Arbitrary<DecisionEvent> = fc
  .record({
    id: fc.oneof(
      fc.uuid(),
      text.filter((s) => s.length > 0),
    ),
    time: fc.oneof(
      fc.integer({ min: 0, max: 4e12 }).map((t) => new Date(t).toISOString()),
      fc.constantFrom('2026-11-20T10:00:00Z', '2026-11-20T11:00:00+01:00'),
    ),
    host: fc.oneof(
      fc.constantFrom('registry.npmjs.org', 'a.b', '10.0.0.1'),
      text.filter((s) => s.length > 0),
    ),
    rule: fc.option(text),
    message: text,
    hostInText: fc.boolean(),
    ci: fc.option(fc.record({ repository: text, run_id: text, job: text, job_id: text }, { requiredKeys: [] })),
    extra: fc.option(fc.dictionary(fc.constantFrom('sni', 'qtype', 'method', 'path'), text)),
  })
  .map((r) => {
    const withHost = (t: string) => (r.hostInText ? `${t} ${r.host}:443 ${r.host}` : t);
    return {
      schema: 1,
      event: 'decision',
      id: r.id,
      time: r.time,
      kind: 'connect',
      client: '127.0.0.1:40000',
      host: r.host,
      port: 443,
      ...(r.extra ?? {}),
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: r.rule === null ? null : withHost(r.rule),
      message: withHost(r.message),
      mode: 'audit',
      ...(r.ci && { ci: r.ci }),
    } as DecisionEvent;
  });

const close: fc.Arbitrary<CloseEvent> = fc
  .record({ id: fc.uuid(), time: fc.integer({ min: 0, max: 4e12 }), bytesIn: fc.nat(), bytesOut: fc.nat(), error: fc.option(text) })
  .map((r) => ({
    schema: 1,
    event: 'close',
    id: r.id,
    time: new Date(r.time).toISOString(),
    kind: 'connect',
    client: '127.0.0.1:1',
    host: 'h.example',
    port: 443,
    bytes_in: r.bytesIn,
    bytes_out: r.bytesOut,
    duration_ms: 5,
    ...(r.error !== null && { error: r.error as CloseEvent['error'] }),
  }));

it('an event is rebuilt from its row exactly: same JSON text (ids, hosts in messages, job ids, odd times)', () => {
  fc.assert(
    fc.property(fc.oneof(decision, close), (event: EgressEvent) => {
      const time = Date.parse(event.time);
      const body = packBody(event, time);
      const job = event.event === 'decision' ? jobKey(event) : null;
      const bytes = event.event === 'close' ? { in: event.bytes_in, out: event.bytes_out } : null;
      const rebuilt = unpackEvent(body, decodeId(encodeId(event.id)), event.host, time, job, bytes);
      assert.equal(JSON.stringify(rebuilt), JSON.stringify(event));
      // A body that keeps its id (PostgreSQL's hashed keys) answers it whatever id the key gives; so does one given its id later.
      const kept = packBody(event, time, true);
      assert.equal(JSON.stringify(unpackEvent(kept, 'from-the-key', event.host, time, job, bytes)), JSON.stringify(event));
      assert.equal(JSON.stringify(unpackEvent(withBodyId(body, event.id), 'from-the-key', event.host, time, job, bytes)), JSON.stringify(event));
      assert.equal(JSON.stringify(unpackEvent(withBodyId(kept, 0), decodeId(encodeId(event.id)), event.host, time, job, bytes)), JSON.stringify(event));
    }),
    { numRuns: 2000 },
  );
});

it("a close packed relative to another row's time (its decision's) is rebuilt from that time exactly", () => {
  fc.assert(
    fc.property(close, fc.integer({ min: -86_400_000, max: 86_400_000 }), (event, shift) => {
      const time = Date.parse(event.time);
      const base = time - shift;
      const bytes = { in: event.bytes_in, out: event.bytes_out };
      const body = packBody(event, time, false, base);
      assert.equal(JSON.stringify(unpackEvent(body, event.id, event.host, base, null, bytes)), JSON.stringify(event));
      if (shift !== 0) assert.notEqual(unpackEvent(body, event.id, event.host, time, null, bytes).time, event.time, 'read from the wrong time: wrong');
    }),
    { numRuns: 1000 },
  );
});

it('ids are keyed one to one: a UUID as 16 bytes, any other text as itself', () => {
  fc.assert(
    fc.property(fc.oneof(fc.uuid(), text), fc.oneof(fc.uuid(), text), (a, b) => {
      assert.equal(decodeId(encodeId(a)), a);
      assert.equal(encodeId(a).equals(encodeId(b)), a === b);
    }),
  );
  assert.equal(encodeId('0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7e').length, 17);
});

describe('RawCodec: one reused zlib stream per direction', () => {
  const dictionary = Buffer.from('{"schema":1,"event":"decision","host":"registry.npmjs.org","port":443}');
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.string({ maxLength: 400 }).map((s) => new TextEncoder().encode(s)),
  );

  it("deflates to what inflateRawSync reads back, and inflates deflateRawSync's output, call after call", () => {
    // Not always deflateRawSync's very bytes: node's zlib, its stream reset and its dictionary loaded again, once
    // in ~200,000 calls here chose literals where a fresh stream took a dictionary match ("IE`43}": 8 bytes against
    // 6, fast-check seed -49963223, call 196,999); this test then failed about once in 85 runs. Both decode alike.
    const codec = rawCodec(dictionary);
    fc.assert(
      fc.property(bytes, (input) => {
        const buffer = Buffer.from(input);
        const packed = codec.deflate.run(buffer);
        assert.deepEqual(inflateRawSync(packed, { dictionary }), buffer);
        assert.deepEqual(codec.inflate.run(packed), buffer);
        assert.deepEqual(codec.inflate.run(deflateRawSync(buffer, { dictionary })), buffer);
      }),
      { numRuns: 1000 },
    );
  });

  it('a corrupt or truncated input throws as inflateRawSync does, and the next call is right again', () => {
    const codec = rawCodec(dictionary);
    const good = codec.deflate.run(Buffer.from('{"host":"registry.npmjs.org"}'));
    assert.throws(() => codec.inflate.run(Buffer.from([0xff, 0xff, 0xff, 0xff])), /invalid|unexpected/);
    assert.throws(() => codec.inflate.run(good.subarray(0, good.length - 2)), /unexpected end|invalid/);
    assert.equal(codec.inflate.run(good).toString(), '{"host":"registry.npmjs.org"}');
  });

  it('an output larger than its buffer, or a stream without the expected handle, goes to the *Sync function', () => {
    const codec = rawCodec(dictionary);
    const big = Buffer.alloc(2 * 1024 * 1024, 'a');
    const packed = codec.deflate.run(big);
    assert.deepEqual(codec.inflate.run(packed), big, 'inflates to more than the 256 KiB buffer');
    const random = randomBytes(300 * 1024);
    assert.deepEqual(codec.inflate.run(codec.deflate.run(random)), random, 'deflates to more than the buffer');
    const bare = new RawCodec(
      () => ({}) as DeflateRaw,
      (input) => deflateRawSync(input, { dictionary }),
    );
    assert.deepEqual(bare.run(Buffer.from('x')), deflateRawSync(Buffer.from('x'), { dictionary }));
  });

  it('runText: a version byte, then a deflate of the text as UTF-8 that inflateRawSync reads back (short, lone surrogates, over its input buffer, no handle)', () => {
    const codec = rawCodec(dictionary);
    const expected = (t: string, prefix: number) => Buffer.concat([Buffer.of(prefix), deflateRawSync(Buffer.from(t), { dictionary })]);
    /** `packed` is `prefix` and then the text deflated (not always deflateRawSync's very bytes: see the test above). */
    const assertPacked = (packed: Buffer, t: string, prefix: number, what?: string) => {
      assert.equal(packed[0], prefix, what);
      assert.deepEqual(inflateRawSync(packed.subarray(1), { dictionary }), Buffer.from(t), what);
    };
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 400 }), fc.integer({ min: 0, max: 255 }), (t, prefix) => {
        const packed = codec.deflate.runText(t, prefix);
        assertPacked(packed, t, prefix);
        assert.deepEqual(codec.inflate.run(packed.subarray(1)), Buffer.from(t));
      }),
      { numRuns: 1000 },
    );
    for (const t of ['', 'é\ud800x', 'x'.repeat(30_000), '\u20ac'.repeat(21_000), randomBytes(200_000).toString('latin1')]) {
      assertPacked(codec.deflate.runText(t, 2), t, 2, `text of ${t.length} characters`);
    }
    const bare = new RawCodec(
      () => ({}) as DeflateRaw,
      (input) => deflateRawSync(input, { dictionary }),
    );
    assert.deepEqual(bare.runText('{"a":1}', 7), expected('{"a":1}', 7));
  });
});
