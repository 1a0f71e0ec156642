/**
 * Raw deflate of a small buffer against a preset dictionary in one fixed-Huffman block (RFC 1951, BTYPE 01), with the
 * dictionary's match index built once. zlib loads the dictionary into a reset stream for every body (a 64 KiB clear
 * and ~20,000 instructions) and builds Huffman trees it then mostly discards (a body of ~260 bytes is smaller with the
 * fixed codes); this does neither. Its output is ordinary raw deflate: zlib's inflate with the same dictionary reads it.
 */

const MIN_MATCH = 3;
const MAX_MATCH = 258;
const WINDOW = 32_768;
const HASH_BITS = 12;
const CHAIN = 32; // candidates tried per position
const GOOD_ENOUGH = 16;

const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/** Length 3..258 -> its code index (0..28). */
const LENGTH_CODE = new Uint8Array(MAX_MATCH + 1);
for (let c = 0; c < LENGTH_BASE.length; c++) {
  for (let l = LENGTH_BASE[c]!; l < LENGTH_BASE[c]! + (1 << LENGTH_EXTRA[c]!) && l <= MAX_MATCH; l++) LENGTH_CODE[l] = c;
}
LENGTH_CODE[MAX_MATCH] = 28;

function distCode(d: number): number {
  let c = 0;
  while (c < 29 && DIST_BASE[c + 1]! <= d) c++;
  return c;
}

/** The fixed literal/length code of a symbol, bit-reversed (deflate sends Huffman codes from their top bit). */
const LIT_CODE = new Uint16Array(288);
const LIT_BITS = new Uint8Array(288);
const DIST_CODE = new Uint8Array(30);

function reverse(code: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) r |= ((code >> i) & 1) << (bits - 1 - i);
  return r;
}

for (let s = 0; s < 288; s++) {
  const [base, first, bits] = s < 144 ? [0x30, 0, 8] : s < 256 ? [0x190, 144, 9] : s < 280 ? [0, 256, 7] : [0xc0, 280, 8];
  LIT_CODE[s] = reverse(base + s - first, bits);
  LIT_BITS[s] = bits;
}
for (let d = 0; d < 30; d++) DIST_CODE[d] = reverse(d, 5);

function hash(b: Uint8Array, i: number): number {
  return (((b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!) * 2654435761) >>> (32 - HASH_BITS);
}

export class FixedDeflater {
  /** Dictionary, then the body being deflated. */
  private readonly data: Buffer;
  private readonly dictLength: number;
  /** Newest position of each hash, and the previous position with the same hash (-1: none). */
  private readonly head = new Int32Array(1 << HASH_BITS);
  private readonly dictHead: Int32Array;
  private readonly prev: Int32Array;
  private readonly out: Buffer;
  private bitBuf = 0;
  private bitCount = 0;
  private pos = 0;

  /** `maxInput`: the most bytes of body taken; a larger one is the caller's to deflate otherwise. */
  constructor(
    dictionary: Buffer,
    readonly maxInput = 16 * 1024,
  ) {
    if (dictionary.length + maxInput > WINDOW) throw new Error('dictionary and body must fit the deflate window');
    this.dictLength = dictionary.length;
    this.data = Buffer.alloc(dictionary.length + maxInput + MAX_MATCH);
    dictionary.copy(this.data);
    this.prev = new Int32Array(this.data.length).fill(-1);
    this.head.fill(-1);
    for (let i = 0; i + MIN_MATCH <= dictionary.length; i++) this.insert(i);
    this.dictHead = this.head.slice();
    // Worst case: every byte a 9-bit literal, plus the block header and end.
    this.out = Buffer.alloc(Math.ceil((maxInput * 9 + 3 + 7) / 8) + 8);
  }

  private insert(i: number): void {
    const h = hash(this.data, i);
    this.prev[i] = this.head[h]!;
    this.head[h] = i;
  }

  private bits(value: number, count: number): void {
    this.bitBuf |= value << this.bitCount;
    this.bitCount += count;
    while (this.bitCount >= 8) {
      this.out[this.pos++] = this.bitBuf & 0xff;
      this.bitBuf >>>= 8;
      this.bitCount -= 8;
    }
  }

  /** Distance of the last `longest` match. */
  private dist = 0;

  /** The longest match for position i (its distance in `dist`), from up to CHAIN earlier positions with its hash. */
  private longest(i: number, limit: number): number {
    const data = this.data;
    let bestLen = 0;
    let cand = this.head[hash(data, i)]!;
    const maxLen = Math.min(MAX_MATCH, limit - i);
    for (let tries = 0; cand >= 0 && tries < CHAIN; tries++, cand = this.prev[cand]!) {
      if (data[cand + bestLen] !== data[i + bestLen]) continue;
      let l = 0;
      while (l < maxLen && data[cand + l] === data[i + l]) l++;
      if (l > bestLen) {
        bestLen = l;
        this.dist = i - cand;
        if (l === maxLen) break;
      }
    }
    return bestLen;
  }

  private match(len: number, dist: number): void {
    const lc = LENGTH_CODE[len]!;
    this.symbol(257 + lc);
    if (LENGTH_EXTRA[lc]) this.bits(len - LENGTH_BASE[lc]!, LENGTH_EXTRA[lc]!);
    const dc = distCode(dist);
    this.bits(DIST_CODE[dc]!, 5);
    if (DIST_EXTRA[dc]) this.bits(dist - DIST_BASE[dc]!, DIST_EXTRA[dc]!);
  }

  private symbol(s: number): void {
    this.bits(LIT_CODE[s]!, LIT_BITS[s]!);
  }

  /**
   * A string's UTF-8 bytes deflated, behind one `prefix` byte (a version byte); undefined when the text may be over
   * `maxInput` bytes (the caller deflates it otherwise).
   */
  deflateText(text: string, prefix: number): Buffer | undefined {
    if (text.length * 3 > this.maxInput) return undefined;
    const data = this.data;
    const base = this.dictLength;
    const limit = base + data.write(text, base, 'utf8');
    this.head.set(this.dictHead);
    this.pos = 0;
    this.bitBuf = 0;
    this.bitCount = 0;
    this.bits(1, 1); // BFINAL
    this.bits(1, 2); // BTYPE 01: fixed codes
    // Lazy matching, as zlib's deflate_slow: a match is taken only if the next position has no longer one; if it has,
    // this byte goes as a literal and the next match is weighed the same way.
    let i = base;
    let pendingLen = 0; // the match found at i - 1, when a byte is pending there
    let pendingDist = 0;
    let pending = false;
    while (i < limit) {
      if (pending && pendingLen >= GOOD_ENOUGH) {
        // Long enough: taken without looking for a longer one (zlib's max_lazy_match at level 6).
        this.match(pendingLen, pendingDist);
        const end = i - 1 + pendingLen;
        for (let j = i; j < end && j + MIN_MATCH <= limit; j++) this.insert(j);
        i = end;
        pending = false;
        continue;
      }
      let len = 0;
      if (i + MIN_MATCH <= limit) {
        len = this.longest(i, limit);
        this.insert(i);
      }
      if (pending && pendingLen >= MIN_MATCH && len <= pendingLen) {
        this.match(pendingLen, pendingDist);
        // The matched positions go into the index too (later matches may start inside this one).
        const end = i - 1 + pendingLen;
        for (let j = i + 1; j < end && j + MIN_MATCH <= limit; j++) this.insert(j);
        i = end;
        pending = false;
        continue;
      }
      if (pending) this.symbol(data[i - 1]!);
      pending = true;
      pendingLen = len;
      pendingDist = this.dist;
      i++;
    }
    if (pending) this.symbol(data[i - 1]!);
    this.symbol(256);
    if (this.bitCount > 0) this.bits(0, 8 - this.bitCount);
    const result = Buffer.allocUnsafe(1 + this.pos);
    result[0] = prefix;
    this.out.copy(result, 1, 0, this.pos);
    return result;
  }
}
