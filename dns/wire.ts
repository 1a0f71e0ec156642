/**
 * Strict DNS wire-format reading and the few messages egress-guard writes itself (RFC 1035, 6891).
 *
 * Why not dns2's Packet parser for untrusted bytes: it trusts the header counts (a 12-byte packet
 * claiming 4x65535 records keeps the event loop busy for ~2 s), turns a truncated question into a
 * packet with zero questions instead of an error, and flattens multi-string TXT records. Here every
 * read is bounds-checked, the work is bounded by the message length, and compression pointers must
 * point strictly backwards (so loops are impossible). Upstream answers are relayed as the bytes the
 * upstream sent, never re-encoded.
 */

export const HEADER_LENGTH = 12;
export const MAX_NAME_OCTETS = 255;
const MAX_POINTER_JUMPS = 32;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export const TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, SVCB: 64, HTTPS: 65, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const CLASS_IN = 1;

const TYPE_NAMES: Record<number, string> = {
  1: 'A',
  2: 'NS',
  5: 'CNAME',
  6: 'SOA',
  12: 'PTR',
  13: 'HINFO',
  15: 'MX',
  16: 'TXT',
  28: 'AAAA',
  33: 'SRV',
  35: 'NAPTR',
  41: 'OPT',
  43: 'DS',
  46: 'RRSIG',
  47: 'NSEC',
  48: 'DNSKEY',
  52: 'TLSA',
  64: 'SVCB',
  65: 'HTTPS',
  99: 'SPF',
  251: 'IXFR',
  252: 'AXFR',
  255: 'ANY',
  257: 'CAA',
};

export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`;
}

export class WireError extends Error {}

export interface WireName {
  /** Label bytes, in order (root = no labels). */
  labels: Buffer[];
  /** Offset just after the name where it was written (after the first pointer, if any). */
  end: number;
}

/** Read a (possibly compressed) name at `offset`; throws WireError on anything malformed. */
export function readName(buf: Buffer, offset: number): WireName {
  const labels: Buffer[] = [];
  let pos = offset;
  let segmentStart = offset;
  let end = -1;
  let octets = 1;
  let jumps = 0;
  for (;;) {
    if (pos >= buf.length) throw new WireError('name runs past the end of the message');
    const len = buf[pos]!;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw new WireError('compression pointer runs past the end of the message');
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      // Strictly before the segment holding the pointer: every jump goes backwards, so no loop is possible.
      if (target < HEADER_LENGTH || target >= segmentStart) throw new WireError('compression pointer does not point backwards');
      if (++jumps > MAX_POINTER_JUMPS) throw new WireError('too many compression pointers');
      if (end < 0) end = pos + 2;
      pos = target;
      segmentStart = target;
      continue;
    }
    if (len & 0xc0) throw new WireError(`reserved label type 0x${len.toString(16)}`);
    if (len === 0) {
      if (end < 0) end = pos + 1;
      return { labels, end };
    }
    octets += len + 1;
    if (octets > MAX_NAME_OCTETS) throw new WireError('name longer than 255 octets');
    if (pos + 1 + len > buf.length) throw new WireError('label runs past the end of the message');
    labels.push(buf.subarray(pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
}

/** A letter, digit, '-' or '_': the bytes of a label the policy can judge as text. */
function isPlainByte(byte: number): boolean {
  return (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d || byte === 0x5f;
}

/** A non-empty label of plain bytes only (a byte loop: a regex over the label's text cost a string per label per query). */
function isPlainLabel(label: Buffer): boolean {
  if (label.length === 0) return false;
  for (let i = 0; i < label.length; i++) if (!isPlainByte(label[i]!)) return false;
  return true;
}

/** True when every label is letters, digits, '-' or '_' (a name the policy can judge as text). */
export function isPlainName(labels: readonly Buffer[]): boolean {
  return labels.every(isPlainLabel);
}

/** A question for `name` (plain labels, as the policy writes names) of `type`, class IN; throws WireError when it cannot be one. */
export function questionFor(name: string, type: number): WireQuestion {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .map((label) => Buffer.from(label, 'latin1'));
  if (labels.some((label) => label.length === 0 || label.length > 63) || !isPlainName(labels)) throw new WireError(`"${name}" is not a plain DNS name`);
  const raw = Buffer.concat([...labels.flatMap((label) => [Buffer.of(label.length), label]), Buffer.of(0), Buffer.alloc(4)]);
  if (raw.length - 4 > MAX_NAME_OCTETS) throw new WireError('name longer than 255 octets');
  raw.writeUInt16BE(type, raw.length - 4);
  raw.writeUInt16BE(CLASS_IN, raw.length - 2);
  return { plain: true, name: nameText(labels), type, klass: CLASS_IN, raw };
}

/** Presentation form, lowercase, other bytes escaped as \DDD (RFC 1035 §5.1); root is ".". */
export function nameText(labels: readonly Buffer[]): string {
  if (labels.length === 0) return '.';
  return labels.map(labelText).join('.');
}

function labelText(label: Buffer): string {
  if (isPlainLabel(label)) return label.toString('latin1').toLowerCase();
  let text = '';
  for (const byte of label) text += isPlainByte(byte) ? String.fromCharCode(byte).toLowerCase() : `\\${byte.toString().padStart(3, '0')}`;
  return text;
}

export interface WireRecord {
  name: string;
  type: number;
  klass: number;
  ttl: number;
  /** Offset of the 32-bit TTL field (so a cached copy can count it down). */
  ttlOffset: number;
  rdataOffset: number;
  rdlength: number;
}

export interface WireQuestion {
  /** Every label is letters, digits, '-' or '_' (isPlainName): a name the policy can judge as text. */
  plain: boolean;
  name: string;
  type: number;
  klass: number;
  /** The question's bytes as written (name + type + class). */
  raw: Buffer;
}

export interface WireMessage {
  id: number;
  flags: number;
  questions: WireQuestion[];
  answers: WireRecord[];
  authorities: WireRecord[];
  additionals: WireRecord[];
  /** Offset where the additional section starts. */
  additionalStart: number;
  /** Offset just after the last record (trailing bytes, if any, start here). */
  end: number;
}

export const flagsOf = (flags: number) => ({
  qr: (flags >> 15) & 1,
  opcode: (flags >> 11) & 0xf,
  tc: (flags >> 9) & 1,
  rd: (flags >> 8) & 1,
  cd: (flags >> 4) & 1,
  rcode: flags & 0xf,
});

function readRecords(buf: Buffer, pos: number, count: number, into: WireRecord[]): number {
  for (let i = 0; i < count; i++) {
    const name = readName(buf, pos);
    pos = name.end;
    if (pos + 10 > buf.length) throw new WireError('record header runs past the end of the message');
    const rdlength = buf.readUInt16BE(pos + 8);
    if (pos + 10 + rdlength > buf.length) throw new WireError('record data runs past the end of the message');
    into.push({
      name: nameText(name.labels),
      type: buf.readUInt16BE(pos),
      klass: buf.readUInt16BE(pos + 2),
      ttl: buf.readUInt32BE(pos + 4),
      ttlOffset: pos + 4,
      rdataOffset: pos + 10,
      rdlength,
    });
    pos += 10 + rdlength;
  }
  return pos;
}

/**
 * Walk a whole message, checking every name, field and length against the buffer. The work is bounded
 * by the message length: each record consumes at least 11 bytes, whatever the header's counts claim.
 */
export function parseMessage(buf: Buffer): WireMessage {
  if (buf.length < HEADER_LENGTH) throw new WireError(`message shorter than the ${HEADER_LENGTH}-byte header`);
  const qdcount = buf.readUInt16BE(4);
  const questions: WireQuestion[] = [];
  let pos = HEADER_LENGTH;
  for (let i = 0; i < qdcount; i++) {
    const name = readName(buf, pos);
    if (name.end + 4 > buf.length) throw new WireError('question runs past the end of the message');
    questions.push({
      plain: isPlainName(name.labels),
      name: nameText(name.labels),
      type: buf.readUInt16BE(name.end),
      klass: buf.readUInt16BE(name.end + 2),
      raw: buf.subarray(pos, name.end + 4),
    });
    pos = name.end + 4;
  }
  const answers: WireRecord[] = [];
  const authorities: WireRecord[] = [];
  const additionals: WireRecord[] = [];
  pos = readRecords(buf, pos, buf.readUInt16BE(6), answers);
  pos = readRecords(buf, pos, buf.readUInt16BE(8), authorities);
  const additionalStart = pos;
  pos = readRecords(buf, pos, buf.readUInt16BE(10), additionals);
  return { id: buf.readUInt16BE(0), flags: buf.readUInt16BE(2), questions, answers, authorities, additionals, additionalStart, end: pos };
}

export interface DnsQuery {
  id: number;
  opcode: number;
  rd: number;
  cd: number;
  question: WireQuestion;
  /** Present when the client sent an OPT record: the UDP payload size it accepts. */
  edns?: { udpSize: number };
}

export type QueryReading =
  | { ok: true; query: DnsQuery }
  /** `id` present: answer `rcode` (FORMERR/NOTIMP); absent: drop silently. */
  | { ok: false; reason: string; id?: number; opcode?: number; rcode?: number };

/** A query refused with FORMERR. */
function formerr(id: number, reason: string): QueryReading {
  return { ok: false, reason, id, rcode: RCODE.FORMERR };
}

/**
 * Read a client's query; everything that is not exactly one well-formed question is refused. `cut`: `buf` is the
 * start of a datagram larger than the socket could read whole (the batched UDP path's slot), refused as a query
 * (FORMERR) once its header says it is one: what the rest held is unknown, and a message is never answered as if
 * whole when it was not read whole (the start alone could parse as a query with the trailing bytes left out).
 */
export function readQuery(buf: Buffer, cut = false): QueryReading {
  if (buf.length < 2) return { ok: false, reason: `${buf.length}-byte packet has no id` };
  const id = buf.readUInt16BE(0);
  if (buf.length < HEADER_LENGTH) return { ok: false, reason: `${buf.length}-byte packet is shorter than a DNS header`, id, rcode: RCODE.FORMERR };
  const flags = flagsOf(buf.readUInt16BE(2));
  // Never answer a response: two servers could otherwise bounce error replies at each other forever.
  if (flags.qr) return { ok: false, reason: 'packet is a response, not a query' };
  if (flags.opcode !== 0) return { ok: false, reason: `opcode ${flags.opcode} is not QUERY`, id, opcode: flags.opcode, rcode: RCODE.NOTIMP };
  if (cut) return formerr(id, `datagram larger than the ${buf.length} bytes read of it`);
  const qdcount = buf.readUInt16BE(4);
  if (qdcount !== 1) return formerr(id, `query has ${qdcount} questions (exactly 1 supported)`);
  if (buf.readUInt16BE(6) !== 0 || buf.readUInt16BE(8) !== 0) return formerr(id, 'query carries answer or authority records');
  if (buf.readUInt16BE(10) > 2) return formerr(id, 'query carries more than 2 additional records');
  const plain = readPlainQuery(buf, id, flags.rd, flags.cd);
  return plain !== undefined ? { ok: true, query: plain } : readQueryByParse(buf, id, flags.rd, flags.cd);
}

/** Where readPlainQuery writes a question name's text: at most 253 characters. */
const nameScratch = Buffer.allocUnsafeSlow(MAX_NAME_OCTETS);

/** A letter, digit, '-' or '_' as it stands in a name's text (letters lowercase); -1 for any other byte. */
const PLAIN_TEXT_BYTE = new Int16Array(256).fill(-1);
for (let byte = 0; byte < 256; byte++) if (isPlainByte(byte)) PLAIN_TEXT_BYTE[byte] = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;

/**
 * The query as readQueryByParse reads it, for the query nearly every client sends, read in one pass with no
 * intermediate objects (parseMessage's labels, records and their texts were about a fifth of the DNS server's CPU
 * per cached query: docs/benchmark.md, "Issue 14, seventh round"): a question whose name is written out (no
 * pointer) in plain labels, then either the end of the packet or one OPT record owned by the root that ends it. The
 * header has been checked (one question, no answer or authority record, at most 2 additional ones). Undefined for
 * anything else, which readQueryByParse then reads (or refuses) as before; test/unit/dns-wire-plain.test.ts checks
 * that both read the same query from the same bytes.
 */
function readPlainQuery(buf: Buffer, id: number, rd: number, cd: number): DnsQuery | undefined {
  const length = buf.length;
  let pos = HEADER_LENGTH;
  let text = 0;
  for (;;) {
    if (pos >= length) return undefined;
    const len = buf[pos]!;
    if (len === 0) break;
    // A pointer or a reserved label type (the first byte of a name in the question cannot point backwards), a label
    // past the end, or a name over 255 octets: readQueryByParse says which.
    if (len > 63 || pos + 1 + len > length || pos + 1 + len - HEADER_LENGTH >= MAX_NAME_OCTETS) return undefined;
    if (text > 0) nameScratch[text++] = 0x2e;
    for (let i = pos + 1; i <= pos + len; i++) {
      const byte = PLAIN_TEXT_BYTE[buf[i]!]!;
      if (byte < 0) return undefined;
      nameScratch[text++] = byte;
    }
    pos += 1 + len;
  }
  // The root name ('.') is left to readQueryByParse, as is a question that runs past the end.
  const questionEnd = pos + 5;
  if (text === 0 || questionEnd > length) return undefined;
  const additionals = buf.readUInt16BE(10);
  let edns: DnsQuery['edns'];
  if (additionals === 0) {
    if (questionEnd !== length) return undefined;
  } else {
    // One record: root owner (one zero byte), type OPT, its data reaching exactly the end of the packet.
    if (additionals !== 1 || questionEnd + 11 > length || buf[questionEnd] !== 0 || buf.readUInt16BE(questionEnd + 1) !== TYPE.OPT) return undefined;
    if (questionEnd + 11 + buf.readUInt16BE(questionEnd + 9) !== length) return undefined;
    edns = { udpSize: buf.readUInt16BE(questionEnd + 3) };
  }
  const question: WireQuestion = {
    plain: true,
    name: nameScratch.toString('latin1', 0, text),
    type: buf.readUInt16BE(pos + 1),
    klass: buf.readUInt16BE(pos + 3),
    raw: buf.subarray(HEADER_LENGTH, questionEnd),
  };
  const query: DnsQuery = { id, opcode: 0, rd, cd, question };
  if (edns) query.edns = edns;
  return query;
}

/** A query read by parseMessage: every form readQuery accepts (compressed names, any label bytes, two additional records). */
export function readQueryByParse(buf: Buffer, id: number, rd: number, cd: number): QueryReading {
  let message: WireMessage;
  try {
    message = parseMessage(buf);
  } catch (err) {
    return formerr(id, err instanceof WireError ? err.message : 'unreadable query');
  }
  if (message.end !== buf.length) return formerr(id, `${buf.length - message.end} trailing bytes after the query`);
  const opts = message.additionals.filter((r) => r.type === TYPE.OPT);
  if (opts.length > 1) return formerr(id, 'query carries more than one OPT record');
  const query: DnsQuery = { id, opcode: 0, rd, cd, question: message.questions[0]! };
  if (opts[0]) {
    if (opts[0].name !== '.') return formerr(id, 'OPT record not owned by the root');
    query.edns = { udpSize: opts[0].klass };
  }
  return { ok: true, query };
}

/** The UDP payload a client accepts: 512 without EDNS, else what it advertised (512..4096). */
export function udpLimit(query: DnsQuery): number {
  return query.edns ? Math.min(4096, Math.max(512, query.edns.udpSize)) : 512;
}

/** EDNS payload size egress-guard advertises (the DNS flag day 2020 value: no IP fragmentation). */
export const EDNS_UDP_SIZE = 1232;

/** An OPT pseudo-record: root owner, no options, DO clear. */
export function optRecord(udpSize = EDNS_UDP_SIZE): Buffer {
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(TYPE.OPT, 1);
  opt.writeUInt16BE(udpSize, 3);
  return opt;
}

function header(id: number, flags: number, counts: [number, number, number, number]): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(flags, 2);
  counts.forEach((count, i) => h.writeUInt16BE(count, 4 + 2 * i));
  return h;
}

/** Response flags: QR, the query's opcode/RD/CD, RA (we recurse), and the rcode. */
export function responseFlags(query: { opcode: number; rd: number; cd: number }, rcode: number, tc = 0): number {
  return 0x8000 | (query.opcode << 11) | (tc << 9) | (query.rd << 8) | 0x80 | (query.cd << 4) | (rcode & 0xf);
}

/**
 * The query upstream: a fresh id, RD, the client's question bytes, and our own OPT. Nothing else from
 * the client's packet goes upstream (EDNS options such as padding or client-subnet could carry data).
 */
export function buildUpstreamQuery(id: number, question: WireQuestion, cd: number): Buffer {
  return Buffer.concat([header(id, 0x0100 | (cd << 4), [1, 0, 0, 1]), question.raw, optRecord()]);
}

/** A response with the query's question and the given answer records (already encoded). */
export function buildResponse(query: DnsQuery, rcode: number, answers: Buffer[] = []): Buffer {
  const parts = [header(query.id, responseFlags(query, rcode), [1, answers.length, 0, query.edns ? 1 : 0]), query.question.raw, ...answers];
  if (query.edns) parts.push(optRecord());
  return Buffer.concat(parts);
}

/** FORMERR/NOTIMP for a packet we could not read a question from: header only. */
export function buildHeaderOnlyError(id: number, opcode: number, rcode: number): Buffer {
  return header(id, responseFlags({ opcode, rd: 0, cd: 0 }, rcode), [0, 0, 0, 0]);
}

/** An A or AAAA record owned by the question name (compression pointer to offset 12). */
export function addressRecord(type: number, address: Buffer, ttl: number): Buffer {
  const rr = Buffer.alloc(12 + address.length);
  rr.writeUInt16BE(0xc000 | HEADER_LENGTH, 0);
  rr.writeUInt16BE(type, 2);
  rr.writeUInt16BE(CLASS_IN, 4);
  rr.writeUInt32BE(ttl, 6);
  rr.writeUInt16BE(address.length, 10);
  address.copy(rr, 12);
  return rr;
}

/** The header and question-only form of a response, with TC set: "too big, ask again over TCP". */
export function truncatedResponse(response: Buffer, query: DnsQuery): Buffer {
  const flags = response.readUInt16BE(2) | 0x0200;
  const parts = [header(query.id, flags, [1, 0, 0, query.edns ? 1 : 0]), query.question.raw];
  if (query.edns) parts.push(optRecord());
  return Buffer.concat(parts);
}

/** Decode the target name of a CNAME record. */
export function cnameTarget(buf: Buffer, record: WireRecord): string {
  const name = readName(buf, record.rdataOffset);
  if (name.end > record.rdataOffset + record.rdlength) throw new WireError('CNAME target overruns its record');
  return nameText(name.labels);
}

/** Address text of an A/AAAA record, or null when the rdata has the wrong length. */
export function recordAddress(buf: Buffer, record: WireRecord): string | null {
  const data = buf.subarray(record.rdataOffset, record.rdataOffset + record.rdlength);
  if (record.type === TYPE.A && data.length === 4) return [...data].join('.');
  if (record.type === TYPE.AAAA && data.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(data.readUInt16BE(i).toString(16));
    return compressIpv6(groups);
  }
  return null;
}

function compressIpv6(groups: string[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}
