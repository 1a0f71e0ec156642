import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { parseAddress } from '../../policy/host.js';

/**
 * parseAddress as it was: ipaddr.isValid, then ipaddr.parse (docs/benchmark.md, "Issue 14, eighth round"); but for
 * `::a.b.c.d`, which ipaddr.js reads as ::ffff:a.b.c.d, the IPv4-compatible address inet_pton reads (review43).
 */
function parsedTwice(text: string): string | null {
  const t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (!ipaddr.isValid(t)) return null;
  let ip = ipaddr.parse(t);
  // The four bytes ipaddr.js read, behind twelve zero bytes (not ::ffff's ten and two 0xff).
  if (/^::[^:]*\./.test(t)) {
    const zoneId = (ip as ipaddr.IPv6).zoneId;
    ip = ipaddr.fromByteArray([...new Array<number>(12).fill(0), ...ip.toByteArray().slice(12)]);
    if (zoneId !== undefined) (ip as ipaddr.IPv6).zoneId = zoneId;
  }
  return `${ip.kind()} ${ip.toString()} ${ip.toByteArray().join('.')}`;
}

function parsedOnce(text: string): string | null {
  const ip = parseAddress(text);
  return ip && `${ip.kind()} ${ip.toString()} ${ip.toByteArray().join('.')}`;
}

describe('parseAddress (one read of an IPv4 text)', () => {
  it('gives the address ipaddr.isValid and ipaddr.parse gave, or null where they gave none, for every spelling', () => {
    const fixed = [
      '127.0.0.1',
      '[127.0.0.1]',
      '0.0.0.0',
      '255.255.255.255',
      '256.0.0.1',
      '127.1',
      '127.0.1',
      '2130706433',
      '4294967296',
      '0x7f000001',
      '0x7f.0.0.1',
      '0177.0.0.1',
      '08.0.0.1',
      '1.2.3.4.5',
      '1..2.3',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '',
      '[]',
      'bench.test',
      '::1',
      '[::1]',
      '::ffff:127.0.0.1',
      '::127.0.0.1',
      '::255.255.1.2',
      '::0x7f.0.0.1%eth0',
      '::010.0.0.1',
      '2001:db8::1',
      'fe80::1%eth0',
      '1.2.3.4:80',
      '-1.2.3.4',
      '1e3.0.0.1',
    ];
    for (const text of fixed) assert.equal(parsedOnce(text), parsedTwice(text), text);
    const part = fc.oneof(
      fc.nat({ max: 300 }).map(String),
      fc.nat({ max: 0xffff }).map((n) => `0x${n.toString(16)}`),
      fc.nat({ max: 0o777 }).map((n) => `0${n.toString(8)}`),
      fc.constantFrom('', '-1', '00', 'x', '4294967295'),
    );
    const spelling = fc.oneof(
      fc.array(part, { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.')),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefx.:[] %'.split('')), maxLength: 24 }),
      fc.ipV4(),
      fc.ipV4Extended(),
      fc.ipV6(),
    );
    fc.assert(
      fc.property(spelling, fc.boolean(), (text, bracketed) => {
        const t = bracketed ? `[${text}]` : text;
        assert.equal(parsedOnce(t), parsedTwice(t), t);
      }),
      { numRuns: 5000, seed: 14 },
    );
  });
});
