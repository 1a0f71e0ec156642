/**
 * One-dimensional PostgreSQL arrays in the binary wire format (what `array_recv` reads), as Buffers: the pg driver
 * sends a Buffer parameter as binary as it is, so a batch's arrays go out without the driver's text encoding (each
 * element quoted, a body as hex: twice its bytes) and PostgreSQL reads them without parsing text (docs/collector.md,
 * "Sixth round: CPU per ingested event"). The statement's cast (`$1::uuid[]`) gives the parameter its type; the element
 * type written here must be that type's, else PostgreSQL refuses the value ("wrong element type").
 *
 * Layout: ndim, has-null flag, element type OID, then per dimension its length and lower bound (1), then per element
 * its byte length (-1 for NULL) and its bytes, all integers big-endian. An empty array has no dimension.
 */

/** Element type OIDs (pg_type). */
const OID = { int2: 21, int4: 23, int8: 20, bytea: 17, uuid: 2950 } as const;

const TWO_32 = 0x1_0000_0000;

/** Four bytes big-endian at `o` (the low 32 bits of `v`, either sign); the next offset. Byte stores: Buffer's writeInt32BE checks its arguments first. */
function put32(buf: Buffer, o: number, v: number): number {
  buf[o] = v >>> 24;
  buf[o + 1] = v >>> 16;
  buf[o + 2] = v >>> 8;
  buf[o + 3] = v;
  return o + 4;
}

function start(oid: number, count: number, hasNull: boolean, dataBytes: number): { buf: Buffer; at: number } {
  if (count === 0) {
    const buf = Buffer.allocUnsafe(12);
    put32(buf, put32(buf, put32(buf, 0, 0), 0), oid);
    return { buf, at: 12 };
  }
  const buf = Buffer.allocUnsafe(20 + dataBytes);
  let o = put32(buf, 0, 1);
  o = put32(buf, o, hasNull ? 1 : 0);
  o = put32(buf, o, oid);
  o = put32(buf, o, count);
  return { buf, at: put32(buf, o, 1) };
}

/** An integer element as PostgreSQL would read it from text, or an error (text would have failed the statement too). */
function checked(v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${v} is not an integer from ${min} to ${max}`);
  return v;
}

/**
 * The whole of bigint's range as numbers: from -2^63 to the last double below 2^63. Past 2^53 a sum is the double
 * nearest it, an integer still, written exactly (its JSON text, sent before, was the shortest digits naming that double).
 */
const INT8_RANGE: readonly [number, number] = [-(2 ** 63), 2 ** 63 - 1024];
const SAFE_RANGE: readonly [number, number] = [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER];

function intArray(oid: number, width: 2 | 4 | 8, values: ReadonlyArray<number | null>, int8Range = SAFE_RANGE): Buffer {
  let nulls = 0;
  for (const v of values) if (v === null) nulls++;
  const { buf, at } = start(oid, values.length, nulls > 0, values.length * 4 + (values.length - nulls) * width);
  const [min, max] = width === 2 ? [-0x8000, 0x7fff] : width === 4 ? [-0x8000_0000, 0x7fff_ffff] : int8Range;
  let o = at;
  for (const v of values) {
    if (v === null) {
      o = put32(buf, o, -1);
      continue;
    }
    o = put32(buf, o, width);
    const n = checked(v, min, max);
    if (width === 2) {
      buf[o++] = n >>> 8;
      buf[o++] = n;
    } else if (width === 4) o = put32(buf, o, n);
    else {
      // The high word by floor division, so negatives too; the low word is exact (below 2^32, a difference of integers).
      const high = Math.floor(n / TWO_32);
      o = put32(buf, o, high);
      o = put32(buf, o, n - high * TWO_32);
    }
  }
  return buf;
}

export const int2Array = (values: ReadonlyArray<number | null>): Buffer => intArray(OID.int2, 2, values);
export const int4Array = (values: ReadonlyArray<number | null>): Buffer => intArray(OID.int4, 4, values);
/** bigint[] of safe integers (an event's own numbers: validated, so anything else is a bug). */
export const int8Array = (values: ReadonlyArray<number | null>): Buffer => intArray(OID.int8, 8, values);
/**
 * bigint[] of sums (a batch's aggregate deltas): events' bytes each within 2^53 add up past it, and PostgreSQL's
 * bigint holds them, as it did their JSON text; refusing them failed the whole batch on every retry.
 */
export const int8SumArray = (values: ReadonlyArray<number | null>): Buffer => intArray(OID.int8, 8, values, INT8_RANGE);

/** bigint[] of BigInt values (advisory lock keys), each within the signed 64-bit range. */
export function bigintArray(values: readonly bigint[]): Buffer {
  const { buf, at } = start(OID.int8, values.length, false, values.length * 12);
  let o = at;
  for (const v of values) {
    o = put32(buf, o, 8);
    o = buf.writeBigInt64BE(v, o);
  }
  return buf;
}

export function byteaArray(values: ReadonlyArray<Buffer | null>): Buffer {
  let bytes = 0;
  let nulls = 0;
  for (const v of values) {
    if (v === null) nulls++;
    else bytes += v.length;
  }
  const { buf, at } = start(OID.bytea, values.length, nulls > 0, values.length * 4 + bytes);
  let o = at;
  for (const v of values) {
    if (v === null) {
      o = put32(buf, o, -1);
      continue;
    }
    o = put32(buf, o, v.length);
    o += v.copy(buf, o);
  }
  return buf;
}

/** Hex digits' values by character code (lower and upper case); -1 for any other character below 128. */
const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 16; c++) {
  HEX['0123456789abcdef'.charCodeAt(c)] = c;
  HEX['0123456789ABCDEF'.charCodeAt(c)] = c;
}

const hexDigit = (c: number): number => (c < 128 ? HEX[c]! : -1);

/** Where the 16 bytes' hex pairs start in UUID text (8-4-4-4-12, dashes at 8, 13, 18 and 23). */
const UUID_PAIRS = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

function isUuidShape(text: string): boolean {
  return text.length === 36 && text.charCodeAt(8) === 45 && text.charCodeAt(13) === 45 && text.charCodeAt(18) === 45 && text.charCodeAt(23) === 45;
}

/** uuid[] of UUID text in the canonical 8-4-4-4-12 form (pg-key.ts's keys), either case. */
export function uuidArray(values: readonly string[]): Buffer {
  const { buf, at } = start(OID.uuid, values.length, false, values.length * 20);
  let o = at;
  for (const text of values) {
    if (!isUuidShape(text)) throw new RangeError(`"${text}" is not a UUID`);
    o = put32(buf, o, 16);
    for (const i of UUID_PAIRS) {
      const high = hexDigit(text.charCodeAt(i));
      const low = hexDigit(text.charCodeAt(i + 1));
      if (high < 0 || low < 0) throw new RangeError(`"${text}" is not a UUID`);
      buf[o++] = (high << 4) | low;
    }
  }
  return buf;
}
