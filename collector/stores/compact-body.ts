import type { EgressEvent } from '../../events/schema.js';
import { isIsoTimeOf } from '../../events/iso-time.js';
import { isPort } from '../../events/validate.js';
import { isWellFormed } from '../../events/well-formed.js';

/**
 * Body version 3 (codec.ts): the known fields of a decision or close written as bytes, no JSON and no deflate. An
 * event's fields are named by a one-byte order code (the order of a sidecar's events: one byte of optional fields
 * present) or, in any other order, a list of field codes; enumerated values (kind, outcome, mode, reason, close error)
 * are small integers; addresses as their 4 bytes; ports as 2; free text as UTF-8 after its length. What the row's
 * columns hold is left out (host, a close's bytes, a decision's job id when it is the job key; the id unless kept;
 * the time when canonical). An event with a field not listed here, a value of another type, or text that is not
 * well-formed UTF-16 is not written this way (`packCompact` answers undefined: the caller writes JSON, version 1/2).
 *
 * `unpackCompact` rebuilds the event with the same keys in the same order and the same values: JSON.stringify of the
 * rebuilt event is the text the collector parsed, re-serialised. The lists below are part of the format: append only.
 */
export const BODY_V3 = 3;

const DECISION_FIELDS = [
  'schema',
  'event',
  'id',
  'time',
  'kind',
  'client',
  'host',
  'port',
  'sni',
  'qtype',
  'ip',
  'method',
  'path',
  'decision',
  'reason',
  'rule',
  'message',
  'mode',
  'ci',
  'level',
];
const CLOSE_FIELDS = ['schema', 'event', 'id', 'time', 'kind', 'client', 'host', 'port', 'ip', 'bytes_in', 'bytes_out', 'duration_ms', 'status', 'error', 'level'];
/** The fields an event may leave out, by bit of the order byte (those validate.ts requires are always there). */
const DECISION_OPTIONAL = ['sni', 'qtype', 'ip', 'method', 'path', 'ci', 'level'];
const CLOSE_OPTIONAL = ['ip', 'status', 'error', 'level'];
const CI_FIELDS = ['repository', 'run_id', 'job', 'job_id'];
const KINDS = ['http', 'connect', 'transparent', 'dns', 'udp', 'icmp', 'tcp', 'ip'];
const OUTCOMES = ['allowed', 'blocked', 'would-block'];
const MODES = ['audit', 'block'];
/** pino's level, in front of an event line of the events file (events/event-log.ts); the stream client sends none. */
const LEVELS = ['info', 'warn'];
const REASONS = [
  'allowed-endpoint',
  'allowed-ip',
  'trusted-range',
  'dns-any',
  'local-name',
  'not-allowed-endpoint',
  'raw-ip',
  'denied-address',
  'invalid-host',
  'sni-mismatch',
  'malformed-request',
  'upstream-unresolvable',
  'denied-endpoint',
  'path-not-allowed',
  'method-not-allowed',
  'invalid-path',
  'inspection-required',
  'not-proxied',
  'inbound-reply',
  'own-connection',
  // Since 2026-12-03 (stop 46): reasons added to the schema after this list was written (stored as text until then).
  'encrypted-client-hello',
  'ambiguous-host',
  'at-capacity',
  'not-redirected',
  'unsupported-query',
  // Since 2026-12-04 (stop 47).
  'established-before-rules',
];
const ERRORS = [
  'upstream-dns',
  'upstream-dns-timeout',
  'upstream-refused',
  'upstream-timeout',
  'upstream-error',
  'upstream-tls',
  'client-rejected-certificate',
  'client-http2-only',
  'inspection-failed',
  'client-not-http',
  'upstream-no-answer',
  'not-upgraded',
  'idle-timeout',
  'half-close-timeout',
  'client-aborted',
  'client-bad-request',
  'handed-over',
  'refused-after-first-bytes',
  'gate-failed',
  'upstream-econnreset',
  'client-ECONNRESET',
  'upstream-ECONNRESET',
  'client-EPIPE',
  'upstream-EPIPE',
];

/**
 * The sidecar's orders: decisions id then time (events/event-log.ts), closes time then id (their fields start with
 * the id); an events file line has pino's `level` in front.
 */
const ORDERS = {
  decision: [levelFirst(DECISION_FIELDS), levelFirst(swapIdTime(DECISION_FIELDS))],
  close: [levelFirst(CLOSE_FIELDS), levelFirst(swapIdTime(CLOSE_FIELDS))],
};

function swapIdTime(fields: readonly string[]): string[] {
  const out = [...fields];
  [out[2], out[3]] = [out[3]!, out[2]!];
  return out;
}

function levelFirst(fields: readonly string[]): string[] {
  return ['level', ...fields.filter((f) => f !== 'level')];
}

// Flags, the body's second byte.
const F_CLOSE = 1;
const F_EXPLICIT = 2; // field codes listed (an order not in ORDERS)
const F_TIME_FIRST = 4; // ORDERS[...][1]
const F_ID = 8; // the id is in the body
const F_TIME = 16; // the time is in the body (not canonical)
const F_FLOAT = 32; // duration_ms as a float64
const F_TIME_DELTA = 64; // a canonical time the row's time does not give: ms after it, a varint (PostgreSQL's close in its decision's row)

// Tags of addresses, rule and message, and the CI context.
const A_TEXT = 0;
const A_IPV4 = 1;
const A_IPV4_PORT = 2;
const A_LOOPBACK_PORT = 3;
const T_NULL = 0;
const T_TEXT = 1;
const T_MARKED = 2;
const T_MARKED_RULE = 3;
const CI_JOB_FROM_ROW = 16;

/** The host in a decision's rule and message (they usually name it): stored once, in the row. */
const HOST_MARK = '\u0001';
/** The rule in a decision's message. */
const RULE_MARK = '\u0002';
/** The fixed text of the policy's messages (policy/decide.ts and the others), each written as one mark from \u0003 on. */
const PHRASES = [
  '" and resolves into trusted range ',
  '), which is not in trusted-ranges',
  ' is a raw IP address and not in allowed-ips',
  ' did not resolve to a usable address',
  ' is not in allowed-endpoints',
  ' is allowed by "',
  ' is denied by "',
  '" (denied-endpoints)',
  ' is in allowed-ips ',
  ' resolves to ',
  ': the path is not allowed (',
  ': the method is not allowed (',
  ' is answered locally (',
  'malformed DNS packet over ',
  'dns: any resolves every name',
  'allowed by endpoint ',
  ' is not in the allowlist',
  'would block: ',
];
const PHRASE_MARKS = PHRASES.map((_, i) => String.fromCharCode(3 + i));
/** Text holding any of the marks is stored as it is. */
const MARKS = /[\u0001-\u001f]/;

const SCRATCH_BYTES = 256 * 1024;

/** Thrown inside the writer when the event is not one this version writes; packCompact answers undefined. */
class NotCompact extends Error {}
const NOT_COMPACT = new NotCompact();

class Writer {
  readonly buf = Buffer.allocUnsafe(SCRATCH_BYTES);
  pos = 0;

  byte(b: number): void {
    this.buf[this.pos++] = b;
  }

  u16(n: number): void {
    this.buf[this.pos++] = n >>> 8;
    this.buf[this.pos++] = n & 0xff;
  }

  varint(n: number): void {
    while (n >= 128) {
      this.buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }

  text(s: unknown): void {
    if (typeof s !== 'string' || !isWellFormed(s) || this.pos + 5 + s.length * 3 > SCRATCH_BYTES) throw NOT_COMPACT;
    if (s.length <= 42) {
      // At most 126 bytes of UTF-8: a one-byte length, filled in after the write.
      const at = this.pos++;
      const n = this.buf.write(s, this.pos, 'utf8');
      this.buf[at] = n;
      this.pos += n;
      return;
    }
    this.varint(Buffer.byteLength(s, 'utf8'));
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** An IPv4 address (`ip`) or address and port (`client`) in its canonical text as bytes, anything else as text. */
  address(s: unknown): void {
    if (typeof s !== 'string') throw NOT_COMPACT;
    if (!canonicalIpv4(s)) {
      this.byte(A_TEXT);
      return this.text(s);
    }
    const port = IPV4_PARTS[4]!;
    if (port >= 0 && IPV4_PARTS[0] === 127 && IPV4_PARTS[1] === 0 && IPV4_PARTS[2] === 0 && IPV4_PARTS[3] === 1) {
      this.byte(A_LOOPBACK_PORT);
      return this.u16(port);
    }
    this.byte(port < 0 ? A_IPV4 : A_IPV4_PORT);
    for (let i = 0; i < 4; i++) this.byte(IPV4_PARTS[i]!);
    if (port >= 0) this.u16(port);
  }

  /** A rule: null, or text with `host` written as HOST_MARK (when it holds the host and no mark of its own). */
  rule(s: unknown, host: string): void {
    if (s === null) return this.byte(T_NULL);
    if (typeof s !== 'string') throw NOT_COMPACT;
    if (s.includes(host) && !MARKS.test(s)) {
      this.byte(T_MARKED);
      this.text(s.replaceAll(host, HOST_MARK));
    } else {
      this.byte(T_TEXT);
      this.text(s);
    }
  }

  /**
   * A message: with no mark of its own, its host as HOST_MARK, then its rule (as the rule's body has it) as RULE_MARK,
   * then each of PHRASES as its mark: a decision's message is mostly its host, its rule and a fixed phrase.
   */
  message(s: unknown, host: string, rule: unknown): void {
    if (typeof s !== 'string') throw NOT_COMPACT;
    if (MARKS.test(s)) {
      this.byte(T_TEXT);
      return this.text(s);
    }
    // replaceAll of text by text (none empty, no `$` in the marks): what split and join did, without the arrays.
    let t = s.replaceAll(host, HOST_MARK);
    let tag = T_MARKED;
    if (typeof rule === 'string' && rule.length >= 3 && !MARKS.test(rule)) {
      const marked = rule.replaceAll(host, HOST_MARK);
      if (t.includes(marked)) {
        t = t.replaceAll(marked, RULE_MARK);
        tag = T_MARKED_RULE;
      }
    }
    for (let i = 0; i < PHRASES.length; i++) if (t.includes(PHRASES[i]!)) t = t.replaceAll(PHRASES[i]!, PHRASE_MARKS[i]!);
    this.byte(tag);
    this.text(t);
  }

  /** One of `names` as its index + 1, any other text as 0 and the text; not text: not this version's. */
  named(s: unknown, names: readonly string[]): void {
    if (typeof s !== 'string') throw NOT_COMPACT;
    const i = names.indexOf(s);
    this.byte(i + 1);
    if (i < 0) this.text(s);
  }
}

/** canonicalIpv4's answer: the four octets, then the port (-1: none). */
export const IPV4_PARTS = new Int32Array(5);

/**
 * Whether `s` is an IPv4 address in canonical text (four octets of 1-3 ASCII digits, 0-255, no leading zero), with a
 * port (1-5 digits, 0-65535, no leading zero) after a colon or not; its parts in IPV4_PARTS. One pass over the
 * characters: what the regular expressions and Number/String round trips of the fifth round accepted, without them
 * (the test compares both on every shape near these bounds).
 */
export function canonicalIpv4(s: string): boolean {
  const n = s.length;
  let i = 0;
  for (let part = 0; part < 5; part++) {
    if (part === 4) {
      if (i === n) {
        IPV4_PARTS[4] = -1;
        return true;
      }
      if (s.charCodeAt(i) !== 58) return false; // ':'
      i++;
    } else if (part > 0) {
      if (s.charCodeAt(i) !== 46) return false; // '.' (NaN past the end)
      i++;
    }
    const digits = part === 4 ? 5 : 3;
    const start = i;
    let v = 0;
    for (; i < n && i - start <= digits; i++) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
    }
    const length = i - start;
    if (length === 0 || length > digits || (length > 1 && s.charCodeAt(start) === 48) || v > (part === 4 ? 65535 : 255)) return false;
    IPV4_PARTS[part] = v;
  }
  return i === n;
}

const writer = new Writer();

/** An order of fields, looked up by name: each field's place and its bit of the order byte (-1: always there). */
interface Order {
  place: ReadonlyMap<string, number>;
  bit: readonly number[];
  required: number;
}

function orderOf(order: readonly string[], optional: readonly string[]): Order {
  const bit = order.map((f) => optional.indexOf(f));
  return { place: new Map(order.map((f, i) => [f, i])), bit, required: bit.filter((b) => b < 0).length };
}

/**
 * The order byte: bit i set when optional[i] is present, if `keys` are `order` without some optional fields (each key
 * further along the order than the one before, every field that is not optional there); else -1.
 */
function orderMask(keys: readonly string[], order: Order): number {
  let mask = 0;
  let last = -1;
  let required = 0;
  for (const key of keys) {
    const at = order.place.get(key);
    if (at === undefined || at <= last) return -1;
    last = at;
    const bit = order.bit[at]!;
    if (bit < 0) required++;
    else mask |= 1 << bit;
  }
  return required === order.required ? mask : -1;
}

/** ORDERS looked up by name (orderMask), and the CI context's order (every field optional). */
const ORDER_LOOKUP = {
  decision: ORDERS.decision.map((o) => orderOf(o, DECISION_OPTIONAL)),
  close: ORDERS.close.map((o) => orderOf(o, CLOSE_OPTIONAL)),
};
const CI_ORDER = orderOf(CI_FIELDS, CI_FIELDS);

/** The event as a version 3 body, or undefined when it has a field, a value or an order this version does not write. */
export function packCompact(event: EgressEvent, timeMs: number, keepId: boolean, timeBase = timeMs): Buffer | undefined {
  try {
    return write(event, timeMs, keepId, timeBase);
  } catch (err) {
    if (err === NOT_COMPACT) return undefined;
    throw err;
  }
}

function write(event: EgressEvent, timeMs: number, keepId: boolean, timeBase: number): Buffer {
  const e = event as unknown as Record<string, unknown>;
  const close = e.event === 'close';
  if (e.schema !== 1 || (!close && e.event !== 'decision')) throw NOT_COMPACT;
  const host = e.host;
  if (typeof host !== 'string' || host.length === 0) throw NOT_COMPACT;
  const keys = Object.keys(e);
  const [order, timeFirst] = close ? ORDER_LOOKUP.close : ORDER_LOOKUP.decision;
  let mask = orderMask(keys, order!);
  let flags = close ? F_CLOSE : 0;
  if (mask < 0) {
    mask = orderMask(keys, timeFirst!);
    if (mask >= 0) flags |= F_TIME_FIRST;
  }
  const fields = close ? CLOSE_FIELDS : DECISION_FIELDS;
  if (mask < 0) {
    flags |= F_EXPLICIT;
    for (const key of keys) if (!fields.includes(key)) throw NOT_COMPACT;
  }
  const kind = KINDS.indexOf(e.kind as string);
  if (kind < 0 || !isPort(e.port) || typeof e.time !== 'string') throw NOT_COMPACT;
  const canonicalTime = isIsoTimeOf(timeMs, e.time);
  if (keepId) flags |= F_ID;
  if (!canonicalTime) flags |= F_TIME;
  const timeDelta = canonicalTime ? timeMs - timeBase : 0;
  if (timeDelta !== 0) {
    if (!Number.isSafeInteger(timeDelta) || timeDelta < 0) throw NOT_COMPACT;
    flags |= F_TIME_DELTA;
  }
  let enums = kind;
  if (!close) {
    const outcome = OUTCOMES.indexOf(e.decision as string);
    const mode = MODES.indexOf(e.mode as string);
    if (outcome < 0 || mode < 0) throw NOT_COMPACT;
    enums |= (outcome << 3) | (mode << 5);
  } else {
    const d = e.duration_ms;
    if (typeof d !== 'number' || !(d >= 0)) throw NOT_COMPACT;
    if (!Number.isSafeInteger(d)) flags |= F_FLOAT;
    if (typeof e.bytes_in !== 'number' || typeof e.bytes_out !== 'number') throw NOT_COMPACT;
  }

  const w = writer;
  w.pos = 0;
  w.byte(BODY_V3);
  w.byte(flags);
  w.byte(enums);
  if (flags & F_EXPLICIT) {
    w.byte(keys.length);
    for (const key of keys) w.byte(fields.indexOf(key));
  } else w.byte(mask);
  if (keepId) w.text(e.id);
  else if (typeof e.id !== 'string') throw NOT_COMPACT;
  if (!canonicalTime) w.text(e.time);
  else if (timeDelta !== 0) w.varint(timeDelta);
  for (const key of keys) {
    const v = e[key];
    switch (key) {
      case 'client':
      case 'ip':
        w.address(v);
        break;
      case 'port':
        w.u16(v as number);
        break;
      case 'sni':
      case 'qtype':
      case 'method':
      case 'path':
        w.text(v);
        break;
      case 'reason':
        w.named(v, REASONS);
        break;
      case 'rule':
        w.rule(v, host);
        break;
      case 'message':
        w.message(v, host, e.rule);
        break;
      case 'ci':
        writeCi(w, v);
        break;
      case 'duration_ms':
        if (flags & F_FLOAT) {
          w.buf.writeDoubleBE(v as number, w.pos);
          w.pos += 8;
        } else w.varint(v as number);
        break;
      case 'status':
        if (!isPort(v)) throw NOT_COMPACT;
        w.u16(v);
        break;
      case 'error':
        w.named(v, ERRORS);
        break;
      case 'level':
        w.named(v, LEVELS);
        break;
      // schema, event, kind, decision, mode: in the flags and enum bytes; id, time: above; host, bytes: the row's.
    }
  }
  return Buffer.from(w.buf.subarray(0, w.pos));
}

/** The CI context: a byte of fields present (in CI_FIELDS order only) and their text; job_id left out when it is the job key. */
function writeCi(w: Writer, v: unknown): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw NOT_COMPACT;
  const ci = v as Record<string, unknown>;
  const keys = Object.keys(ci);
  const mask = orderMask(keys, CI_ORDER);
  if (mask < 0) throw NOT_COMPACT;
  // events/job-key.ts: a job_id that is not empty is the job key, which the row holds.
  const jobFromRow = typeof ci.job_id === 'string' && ci.job_id !== '';
  w.byte(mask | (jobFromRow ? CI_JOB_FROM_ROW : 0));
  for (const key of keys) if (!(key === 'job_id' && jobFromRow)) w.text(ci[key]);
}

class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    at: number,
  ) {
    this.pos = at;
  }

  byte(): number {
    if (this.pos >= this.buf.length) throw new Error('stored event body is truncated');
    return this.buf[this.pos++]!;
  }

  u16(): number {
    return (this.byte() << 8) | this.byte();
  }

  varint(): number {
    let n = 0;
    let scale = 1;
    for (;;) {
      const b = this.byte();
      n += (b & 127) * scale;
      if (b < 128) return n;
      scale *= 128;
    }
  }

  text(): string {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new Error('stored event body is truncated');
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  address(): string {
    const tag = this.byte();
    if (tag > A_LOOPBACK_PORT) throw corrupt();
    if (tag === A_TEXT) return this.text();
    if (tag === A_LOOPBACK_PORT) return `127.0.0.1:${this.u16()}`;
    const ip = `${this.byte()}.${this.byte()}.${this.byte()}.${this.byte()}`;
    return tag === A_IPV4_PORT ? `${ip}:${this.u16()}` : ip;
  }

  rule(host: string): string | null {
    const tag = this.byte();
    if (tag > T_MARKED) throw corrupt();
    if (tag === T_NULL) return null;
    const s = this.text();
    return tag === T_MARKED ? s.split(HOST_MARK).join(host) : s;
  }

  /** A message; its rule's mark is put back by the caller (`withRule`), once the rule is read. */
  message(host: string): { text: string; ruleMarked: boolean } {
    const tag = this.byte();
    if (tag === T_NULL || tag > T_MARKED_RULE) throw corrupt();
    let s = this.text();
    if (tag === T_TEXT) return { text: s, ruleMarked: false };
    for (let i = PHRASES.length - 1; i >= 0; i--) if (s.includes(PHRASE_MARKS[i]!)) s = s.split(PHRASE_MARKS[i]!).join(PHRASES[i]!);
    if (tag === T_MARKED_RULE) return { text: s, ruleMarked: true };
    return { text: s.includes(HOST_MARK) ? s.split(HOST_MARK).join(host) : s, ruleMarked: false };
  }

  named(names: readonly string[]): string {
    const i = this.byte();
    if (i > names.length) throw corrupt();
    return i === 0 ? this.text() : names[i - 1]!;
  }
}

/** A body no writer makes (a damaged row): an error, never an event with a field missing or wrong. */
function corrupt(): Error {
  return new Error('stored event body is corrupt');
}

/** The header of a version 3 body: its flags, enum byte, field names in order, and where the id (if kept) starts. */
function readHeader(body: Buffer): { flags: number; enums: number; keys: readonly string[]; r: Reader } {
  const r = new Reader(body, 1);
  const flags = r.byte();
  const enums = r.byte();
  const close = (flags & F_CLOSE) !== 0;
  // Flags no writer sets, both times, an outcome past the list, bits past the mode (a close: past the kind).
  if (flags >= 128 || (flags & F_TIME && flags & F_TIME_DELTA) || (close ? enums > 7 : enums >= 64 || ((enums >> 3) & 3) === 3)) throw corrupt();
  const fields = close ? CLOSE_FIELDS : DECISION_FIELDS;
  let keys: string[];
  if (flags & F_EXPLICIT) {
    const n = r.byte();
    keys = [];
    for (let i = 0; i < n; i++) keys.push(fields[r.byte()]!);
  } else {
    const mask = r.byte();
    const optional = close ? CLOSE_OPTIONAL : DECISION_OPTIONAL;
    if (mask >= 1 << optional.length) throw corrupt();
    const order = (close ? ORDERS.close : ORDERS.decision)[flags & F_TIME_FIRST ? 1 : 0]!;
    keys = order.filter((k) => {
      const bit = optional.indexOf(k);
      return bit < 0 || (mask & (1 << bit)) !== 0;
    });
  }
  return { flags, enums, keys, r };
}

/** The event of a version 3 body, with the row's id (unless the body kept one), host, time, job and a close's bytes. */
export function unpackCompact(body: Buffer, id: string, host: string, timeMs: number, job: string | null, bytes: { in: number; out: number } | null): EgressEvent {
  const { flags, enums, keys, r } = readHeader(body);
  const eventId = flags & F_ID ? r.text() : id;
  const time = flags & F_TIME ? r.text() : new Date(flags & F_TIME_DELTA ? timeMs + r.varint() : timeMs).toISOString();
  const e: Record<string, unknown> = {};
  let message: { text: string; ruleMarked: boolean } | undefined;
  for (const key of keys) {
    switch (key) {
      case 'schema':
        e.schema = 1;
        break;
      case 'event':
        e.event = flags & F_CLOSE ? 'close' : 'decision';
        break;
      case 'id':
        e.id = eventId;
        break;
      case 'time':
        e.time = time;
        break;
      case 'kind':
        e.kind = KINDS[enums & 7];
        break;
      case 'host':
        e.host = host;
        break;
      case 'client':
      case 'ip':
        e[key] = r.address();
        break;
      case 'port':
      case 'status':
        e[key] = r.u16();
        break;
      case 'sni':
      case 'qtype':
      case 'method':
      case 'path':
        e[key] = r.text();
        break;
      case 'decision':
        e.decision = OUTCOMES[(enums >> 3) & 3];
        break;
      case 'mode':
        e.mode = MODES[(enums >> 5) & 1];
        break;
      case 'reason':
        e.reason = r.named(REASONS);
        break;
      case 'rule':
        e.rule = r.rule(host);
        break;
      case 'message':
        message = r.message(host);
        e.message = message.text;
        break;
      case 'ci':
        e.ci = readCi(r, job);
        break;
      case 'bytes_in':
        e.bytes_in = bytes?.in ?? 0;
        break;
      case 'bytes_out':
        e.bytes_out = bytes?.out ?? 0;
        break;
      case 'duration_ms':
        if (flags & F_FLOAT) {
          if (r.pos + 8 > body.length) throw new Error('stored event body is truncated');
          e.duration_ms = body.readDoubleBE(r.pos);
          r.pos += 8;
        } else e.duration_ms = r.varint();
        break;
      case 'error':
        e.error = r.named(ERRORS);
        break;
      case 'level':
        e.level = r.named(LEVELS);
        break;
      default:
        throw new Error('stored event body has an unknown field code');
    }
  }
  if (message?.ruleMarked) {
    // The rule as its body had it (its host marked), into the message, then the host.
    if (typeof e.rule !== 'string') throw new Error('stored event body refers to a rule it does not have');
    const rule = e.rule.includes(host) ? e.rule.split(host).join(HOST_MARK) : e.rule;
    e.message = message.text.split(RULE_MARK).join(rule).split(HOST_MARK).join(host);
  }
  if (r.pos !== body.length) throw corrupt(); // bytes no field read
  return e as unknown as EgressEvent;
}

function readCi(r: Reader, job: string | null): Record<string, unknown> {
  const mask = r.byte();
  if (mask & ~(CI_JOB_FROM_ROW | 15)) throw corrupt();
  const ci: Record<string, unknown> = {};
  for (const [bit, key] of CI_FIELDS.entries()) {
    if ((mask & (1 << bit)) === 0) continue;
    ci[key] = key === 'job_id' && mask & CI_JOB_FROM_ROW ? job : r.text();
  }
  return ci;
}

/** A version 3 body with its id set to `id` (0: left out, the key gives it), the rest the same bytes. */
export function withCompactId(body: Buffer, id: string | 0): Buffer {
  const { flags, r } = readHeader(body);
  const headerEnd = r.pos;
  if (flags & F_ID) r.text();
  const rest = body.subarray(r.pos);
  const head = Buffer.from(body.subarray(0, headerEnd));
  head[1] = id === 0 ? flags & ~F_ID : flags | F_ID;
  if (id === 0) return Buffer.concat([head, rest]);
  if (!isWellFormed(id)) throw new Error('an id kept in a stored event body must be well-formed text');
  writer.pos = 0;
  writer.text(id);
  return Buffer.concat([head, writer.buf.subarray(0, writer.pos), rest]);
}
