import { randomFillSync } from 'node:crypto';

/** Ids made from one fill of random bytes. */
const IDS_PER_FILL = 128;
const UUID_LENGTH = 36;
const HEX = Buffer.from('0123456789abcdef', 'latin1');
const random = Buffer.allocUnsafeSlow(16 * IDS_PER_FILL);
const text = Buffer.allocUnsafeSlow(UUID_LENGTH * IDS_PER_FILL);
/** The text of IDS_PER_FILL ids, one after the other; `next` is the index of the next one to hand out. */
let ids = '';
let next = IDS_PER_FILL;

/**
 * A random (version 4, RFC 9562) UUID, as crypto.randomUUID() makes: 122 bits from the system's CSPRNG, the same
 * text form. Made for less: randomUUID builds each id's text from 20 short strings (a lookup and a concatenation per
 * byte, each a string to collect), which was a few per cent of the DNS server's CPU per query. Here the text of 128
 * ids is written as bytes and decoded once per fill, and an id is a slice of that text (V8 makes a slice of 13 or
 * more characters a view of its parent, not a copy). docs/benchmark.md, "Issue 14, seventh round: CPU per DNS query".
 */
export function randomEventId(): string {
  if (next === IDS_PER_FILL) refill();
  const start = next++ * UUID_LENGTH;
  return ids.slice(start, start + UUID_LENGTH);
}

function refill(): void {
  randomFillSync(random);
  let out = 0;
  for (let id = 0; id < IDS_PER_FILL; id++) {
    const first = id * 16;
    random[first + 6] = (random[first + 6]! & 0x0f) | 0x40; // version 4
    random[first + 8] = (random[first + 8]! & 0x3f) | 0x80; // variant 10 (RFC 9562)
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) text[out++] = 0x2d;
      const byte = random[first + i]!;
      text[out++] = HEX[byte >> 4]!;
      text[out++] = HEX[byte & 0x0f]!;
    }
  }
  ids = text.toString('latin1');
  next = 0;
}
