import { randomFillSync } from 'node:crypto';

/** Ids made from one fill of random bytes. */
const IDS_PER_FILL = 128;
const UUID_LENGTH = 36;
const HEX = Buffer.from('0123456789abcdef', 'latin1');
const random = Buffer.allocUnsafeSlow(16 * IDS_PER_FILL);
/** The text of IDS_PER_FILL ids, one after the other; `next` is the index of the next one to hand out. */
const text = Buffer.allocUnsafeSlow(UUID_LENGTH * IDS_PER_FILL);
let next = IDS_PER_FILL;
/** `text` decoded, made by the first randomLineEventId() of a fill. */
let ids: string | undefined;

/**
 * A random (version 4, RFC 9562) UUID, as crypto.randomUUID() makes: 122 bits from the system's CSPRNG, the same
 * text form. Made for less: randomUUID builds each id's text from 20 short strings (a lookup and a concatenation per
 * byte, each a string to collect), which was a few per cent of the DNS server's CPU per query. Here the text of 128
 * ids is written as bytes after one fill of random bytes. docs/benchmark.md, "Issue 14, seventh round: CPU per DNS
 * query". The id is a string of its own: an event that carries it may be kept (the proxy keeps a connection's).
 */
export function randomEventId(): string {
  const start = take();
  return text.toString('latin1', start, start + UUID_LENGTH);
}

/**
 * randomEventId() for an id written into a line at once and not kept (EventLog.emitDecision, per DNS query): a slice
 * of the fill's text decoded once (V8 makes a slice of 13 or more characters a view of its parent, not a copy), for
 * less than a string of its own. Not for an id that is kept: the slice keeps the whole text alive, 4.6 KB for the
 * 128 ids (events-ids.test.ts, docs/benchmark.md "Issue 14, seventh round: review").
 */
export function randomLineEventId(): string {
  const start = take();
  ids ??= text.toString('latin1');
  return ids.slice(start, start + UUID_LENGTH);
}

/** The offset in `text` of the next id, refilled when all were handed out. */
function take(): number {
  if (next === IDS_PER_FILL) refill();
  return next++ * UUID_LENGTH;
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
  ids = undefined;
  next = 0;
}
