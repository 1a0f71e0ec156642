import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { FixedDeflater } from '../../collector/stores/fixed-deflate.js';

describe('FixedDeflater: raw deflate against a preset dictionary, fixed codes', () => {
  const dictionary = Buffer.from(
    '{"schema":1,"event":"close","kind":"connect","client":"127.0.0.1:5","port":443,"ip":"10.0.0.1","bytes_in":1,"bytes_out":1,"duration_ms":1,"status":200}' +
      '{"schema":1,"event":"decision","kind":"connect","decision":"allowed","reason":"allowed-endpoint","rule":"github.com:443","mode":"block"}',
  );
  const inflate = (packed: Buffer) => inflateRawSync(packed.subarray(1), { dictionary }).toString('utf8');

  it("zlib's inflate with the dictionary gives the text back, call after call, whatever the text", () => {
    const deflater = new FixedDeflater(dictionary, 4096);
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 600 }),
      fc.string({ unit: fc.constantFrom('a', 'b', '"', ':', '{', '}'), maxLength: 1300 }), // long runs and repeats: lengths up to 258
      fc.record({ kind: fc.constantFrom('connect', 'http', 'dns'), port: fc.integer({ min: 0, max: 65535 }), client: fc.string() }).map((o) => JSON.stringify(o)),
    );
    fc.assert(
      fc.property(text, fc.integer({ min: 0, max: 255 }), (t, prefix) => {
        const packed = deflater.deflateText(t, prefix)!;
        assert.equal(packed[0], prefix);
        assert.equal(inflate(packed), Buffer.from(t).toString('utf8'));
      }),
      { numRuns: 2000 },
    );
  });

  it('the same text gives the same bytes whatever came before (nothing of an earlier body is referred to)', () => {
    const deflater = new FixedDeflater(dictionary, 4096);
    const a = '{"schema":1,"event":"close","kind":"connect","client":"127.0.0.1:40001","port":443,"ip":"104.16.1.7"}';
    const first = deflater.deflateText(a, 1)!;
    deflater.deflateText('{"client":"127.0.0.1:40001","ip":"104.16.1.7","zzz":"104.16.1.7 127.0.0.1:40001"}', 1);
    assert.deepEqual(deflater.deflateText(a, 1), first);
    assert.equal(inflate(first), a);
  });

  it('refers into the dictionary: an event-like text is about as small as zlib makes it, and far smaller than without', () => {
    const deflater = new FixedDeflater(dictionary, 4096);
    const t = '{"schema":1,"event":"close","kind":"connect","client":"127.0.0.1:41234","port":443,"ip":"104.16.3.21","bytes_in":0,"bytes_out":0,"duration_ms":120}';
    const ours = deflater.deflateText(t, 1)!.length - 1;
    const zlib = deflateRawSync(Buffer.from(t), { dictionary }).length;
    assert.ok(ours <= zlib + 4, `${ours} bytes, zlib ${zlib}`);
    assert.ok(ours < deflateRawSync(Buffer.from(t)).length / 2);
  });

  it('a text that may be over maxInput bytes is left to the caller; a dictionary too large for the window is refused', () => {
    const deflater = new FixedDeflater(dictionary, 300);
    assert.equal(deflater.deflateText('x'.repeat(101), 1), undefined);
    assert.equal(inflate(deflater.deflateText('x'.repeat(100), 1)!), 'x'.repeat(100));
    assert.throws(() => new FixedDeflater(Buffer.alloc(20_000), 16 * 1024), /window/);
  });
});
