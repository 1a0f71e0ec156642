import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import fc from 'fast-check';
import { packBody } from '../../collector/stores/codec.js';
import { canonicalIpv4, IPV4_PARTS } from '../../collector/stores/compact-body.js';
import { isIsoTimeOf } from '../../events/iso-time.js';
import type { EgressEvent } from '../../events/schema.js';

/**
 * Bodies are written byte for byte as before the seventh round's changes to the version 3 writer (compact-body.ts):
 * the fixture holds varied events (the compact-body test's generators sampled with fixed seeds: odd addresses, text,
 * CI contexts, key orders, floats; and the bench's sidecar events) with the bodies main's build wrote for them at
 * 3614803, the row's own time and the id left out, and the id kept with the time 1,234 ms after another base.
 */
const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/collector-bodies.ndjson', import.meta.url));

it('every body of the fixture is written with the same bytes as before', () => {
  const lines = readFileSync(FIXTURE, 'utf8').trim().split('\n');
  assert.ok(lines.length >= 100);
  for (const [i, line] of lines.entries()) {
    const { event, bodies } = JSON.parse(line) as { event: EgressEvent; bodies: [string, string] };
    const t = Date.parse(event.time);
    assert.equal(packBody(event, t).toString('base64'), bodies[0], `event ${i}: ${line.slice(0, 200)}`);
    assert.equal(packBody(event, t, true, t - 1234).toString('base64'), bodies[1], `event ${i}, id kept, time after another base`);
  }
});

/** The fifth round's reading of an address (regular expressions, Number and String round trips): the reference. */
function regexIpv4(s: string): number[] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?::(\d{1,5}))?$/.exec(s);
  if (!m) return undefined;
  for (let i = 1; i <= 4; i++) if (Number(m[i]) > 255 || (m[i]!.length > 1 && m[i]![0] === '0')) return undefined;
  if (m[5] !== undefined && !(Number(m[5]) <= 65535 && String(Number(m[5])) === m[5])) return undefined;
  return [...m.slice(1, 5).map(Number), m[5] === undefined ? -1 : Number(m[5])];
}

it('an address is read as canonical IPv4 exactly when the regular expressions read it so', () => {
  const near = ['0', '00', '1', '01', '9', '10', '99', '100', '199', '249', '255', '256', '299', '999', '1000', '', 'a', '-1', '+1', ' 1', '١'];
  const ports = ['0', '00', '1', '01', '65535', '65536', '99999', '100000', '', 'x', '٣'];
  const check = (s: string) => {
    const expected = regexIpv4(s);
    assert.equal(canonicalIpv4(s), expected !== undefined, s);
    if (expected) assert.deepEqual([...IPV4_PARTS], expected, s);
  };
  for (const a of near) for (const b of ['0', '255', a]) check(`${a}.${b}.0.${a}`);
  for (const o of near) for (const p of ports) check(`127.0.0.${o}:${p}`);
  for (const s of ['127.0.0.1', '127.0.0.1:', ':80', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.4:80:80', '1.2.3.4 ', '1.2.3.4:80 ', '1.2.3.4\n', '']) check(s);
  const digits = (n: number) => fc.stringMatching(new RegExp(`^[0-9]{0,${n}}$`));
  const ipLike = fc
    .tuple(fc.array(digits(4), { minLength: 1, maxLength: 5 }), fc.option(digits(6)), fc.constantFrom('', ' ', 'a', ':'))
    .map(([octets, port, tail]) => `${octets.join('.')}${port === null ? '' : `:${port}`}${tail}`);
  fc.assert(
    fc.property(fc.oneof(ipLike, fc.stringMatching(/^[0-9.:a]{0,24}$/)), (s) => check(s)),
    { numRuns: 20_000 },
  );
});

it("a time is canonical exactly when it is toISOString's text of its milliseconds", () => {
  // Within the range of a Date (what Date.parse answers): beyond it toISOString throws, in the writer as before.
  const check = (ms: number, text: string) => {
    if (Math.abs(ms) > 8.64e15) return;
    assert.equal(isIsoTimeOf(ms, text), Number.isFinite(ms) && new Date(ms).toISOString() === text, `${ms} ${text}`);
  };
  const edges = [
    0, -1, 1, 951_782_400_000, 951_868_800_000, 4_107_542_400_000, -62_167_219_200_000, -62_167_219_200_001, 253_402_300_799_999, 253_402_300_800_000, 8.64e15, -8.64e15,
  ];
  for (const ms of edges) {
    const text = new Date(ms).toISOString();
    check(ms, text);
    check(ms + 1, text);
    check(ms - 1, text);
    for (let i = 0; i < text.length; i++) for (const c of '0159-:.TZ ') check(ms, `${text.slice(0, i)}${c}${text.slice(i + 1)}`);
  }
  for (const bad of [NaN, Infinity, -Infinity]) check(bad, '1970-01-01T00:00:00.000Z');
  fc.assert(
    fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), fc.integer({ min: -90_000_000, max: 90_000_000 }), (ms, off) => {
      check(ms, new Date(ms).toISOString());
      check(ms, new Date(Math.max(-8.64e15, Math.min(8.64e15, ms + off))).toISOString());
    }),
    { numRuns: 20_000 },
  );
});
