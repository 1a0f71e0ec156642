import { isWellFormed, wellFormedText } from './well-formed.js';
import { EVENT_SCHEMA_VERSION, REQUEST_KINDS, type CloseEvent, type DecisionEvent, type EgressEvent } from './schema.js';

const KINDS = new Set<string>(REQUEST_KINDS);
const OUTCOMES = new Set(['allowed', 'blocked', 'would-block']);
const MODES = new Set(['audit', 'block']);
const MAX_TEXT = 4096;
const DECISION_OPTIONAL_TEXT = ['sni', 'qtype', 'method', 'path'];
const CI_TEXT = ['repository', 'run_id', 'job', 'job_id'];

export class EventValidationError extends Error {}

type Json = Record<string, unknown>;

function fail(reason: string): never {
  throw new EventValidationError(reason);
}

function str(o: Json, key: string, optional = false): void {
  const v = o[key];
  if (v === undefined && optional) return;
  if (typeof v !== 'string') fail(`"${key}" must be a string`);
  if (v.length > MAX_TEXT) fail(`"${key}" is longer than ${MAX_TEXT} characters`);
}

/** Whether `c` (a char code) is an ASCII digit; its value is then `c - 48`. */
function digit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function twoDigits(text: string, at: number): number {
  const a = text.charCodeAt(at);
  const b = text.charCodeAt(at + 1);
  return digit(a) && digit(b) ? (a - 48) * 10 + (b - 48) : -1;
}

/** Days from 1970-01-01 to day `day` of month `month` (1-12) of `year`; a day past the month's end runs on into the next (as Date.UTC). */
function daysFromCivil(year: number, month: number, day: number): number {
  // H. Hinnant's days_from_civil: years starting in March, so that February's length only matters at a year's end.
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  return era * 146_097 + yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear - 719_468;
}

/**
 * Whether `text` has the shape every sidecar writes (`Date.prototype.toISOString`: `YYYY-MM-DDTHH:MM:SS.sssZ`) with
 * each field in its range, any day up to 31 (V8's Date.parse reads 02-31 as March 3rd): a date Date.parse reads, whose
 * number dateTextMs computes from its characters.
 */
function isIsoShape(text: string): boolean {
  if (
    text.length === 24 &&
    text.charCodeAt(4) === 45 && // -
    text.charCodeAt(7) === 45 &&
    text.charCodeAt(10) === 84 && // T
    text.charCodeAt(13) === 58 && // :
    text.charCodeAt(16) === 58 &&
    text.charCodeAt(19) === 46 && // .
    text.charCodeAt(23) === 90 && // Z
    twoDigits(text, 0) >= 0 &&
    twoDigits(text, 2) >= 0 &&
    digit(text.charCodeAt(20)) &&
    twoDigits(text, 21) >= 0
  ) {
    const month = twoDigits(text, 5);
    const day = twoDigits(text, 8);
    const hour = twoDigits(text, 11);
    const minute = twoDigits(text, 14);
    const second = twoDigits(text, 17);
    return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 && second >= 0 && second <= 59;
  }
  return false;
}

/**
 * Whether `text` is a date Date.parse reads: the sidecar's shape answered from its characters (isIsoShape), anything
 * else by Date.parse: the same verdict either way (events-validate-time.test.ts compares them on every field's bounds
 * and every one-character change), at a fraction of Date.parse's cost per event at ingest.
 */
export function isDateText(text: string): boolean {
  return isIsoShape(text) || !Number.isNaN(Date.parse(text));
}

/**
 * `Date.parse(text)`, computed from the characters for the sidecar's shape (isIsoShape), else by Date.parse: the same
 * number (or NaN) either way (events-validate-time.test.ts), without Date.parse's cost per event in the stores' rows.
 */
export function dateTextMs(text: string): number {
  if (!isIsoShape(text)) return Date.parse(text);
  const days = daysFromCivil(twoDigits(text, 0) * 100 + twoDigits(text, 2), twoDigits(text, 5), twoDigits(text, 8));
  const millis = (text.charCodeAt(20) - 48) * 100 + twoDigits(text, 21);
  return days * 86_400_000 + twoDigits(text, 11) * 3_600_000 + twoDigits(text, 14) * 60_000 + twoDigits(text, 17) * 1000 + millis;
}

function int(o: Json, key: string, min: number, max: number, optional = false): void {
  const v = o[key];
  if (v === undefined && optional) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(`"${key}" must be an integer from ${min} to ${max}`);
}

/**
 * Check that a parsed JSON value is a decision or close event of schema version 1; throws
 * EventValidationError with the first problem. Unknown extra fields are kept (adding optional fields
 * does not bump the schema version).
 */
export function validateEvent(value: unknown): EgressEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('an event is a JSON object');
  const o = value as Json;
  if (o.schema !== EVENT_SCHEMA_VERSION) fail(`"schema" must be ${EVENT_SCHEMA_VERSION}`);
  if (o.event !== 'decision' && o.event !== 'close') fail('"event" must be "decision" or "close"');
  str(o, 'id');
  if ((o.id as string).length === 0 || (o.id as string).length > 200) fail('"id" must be 1 to 200 characters');
  str(o, 'time');
  if (!isDateText(o.time as string)) fail('"time" is not a date');
  if (!KINDS.has(o.kind as string)) fail(`"kind" must be one of ${REQUEST_KINDS.join(', ')}`);
  str(o, 'client');
  str(o, 'host');
  if ((o.host as string).length === 0) fail('"host" is empty');
  int(o, 'port', 0, 65535);
  str(o, 'ip', true);
  if (o.event === 'decision') {
    if (!OUTCOMES.has(o.decision as string)) fail('"decision" must be allowed, blocked or would-block');
    str(o, 'reason');
    if (o.rule !== null) str(o, 'rule');
    str(o, 'message');
    if (!MODES.has(o.mode as string)) fail('"mode" must be audit or block');
    for (const key of DECISION_OPTIONAL_TEXT) str(o, key, true);
    if (o.ci !== undefined) {
      if (typeof o.ci !== 'object' || o.ci === null || Array.isArray(o.ci)) fail('"ci" must be an object');
      for (const key of CI_TEXT) str(o.ci as Json, key, true);
    }
    return o as unknown as DecisionEvent;
  }
  int(o, 'bytes_in', 0, Number.MAX_SAFE_INTEGER);
  int(o, 'bytes_out', 0, Number.MAX_SAFE_INTEGER);
  if (typeof o.duration_ms !== 'number' || !(o.duration_ms >= 0)) fail('"duration_ms" must be a number >= 0');
  int(o, 'status', 100, 999, true);
  str(o, 'error', true);
  return o as unknown as CloseEvent;
}

/**
 * UTF-8 bytes at most of a host or a CI context value, the strings the collector's stores keep once each in a
 * dictionary: PostgreSQL's unique index on eg_strings(text) refuses an entry over 2,704 bytes (fewer when it does not
 * compress), which failed the whole batch. storableEvent refuses a longer one; conformEvent cuts it, so the sidecar
 * never writes one (a CONNECT to a long junk target is an invalid-host decision naming it as written).
 */
export const MAX_KEY_TEXT_BYTES = 2048;

/** At most 3 bytes of UTF-8 per UTF-16 unit: a string no longer than this cannot be over MAX_KEY_TEXT_BYTES. */
const SURELY_SHORT_KEY = Math.floor(MAX_KEY_TEXT_BYTES / 3);

/**
 * A string the stores keep as text, refused when a store cannot keep it as it is: a lone surrogate, which has no UTF-8
 * form (encoding writes U+FFFD, so two ids may become one key); and, for a `key` string (the host and the CI context),
 * NUL, which PostgreSQL's text type refuses, or more than MAX_KEY_TEXT_BYTES. Native checks: fewer instructions than a
 * regular expression or a loop (docs/collector.md, "Review of the sixth round's ingest and search changes").
 */
function checkStorable(v: unknown, name: string, key: boolean): void {
  if (typeof v !== 'string') return;
  if (key) {
    if (v.includes('\0')) fail(`"${name}" holds a NUL character`);
    if (v.length > SURELY_SHORT_KEY && Buffer.byteLength(v) > MAX_KEY_TEXT_BYTES) fail(`"${name}" is longer than ${MAX_KEY_TEXT_BYTES} bytes of UTF-8`);
  }
  if (!isWellFormed(v)) fail(`"${name}" holds a lone UTF-16 surrogate`);
}

/**
 * A valid event whose text every store can keep (checkStorable); throws EventValidationError. The collector checks
 * each line with it, so such a line is reported and the rest of its batch stored; not part of validateEvent: a report
 * of an events file shows such an event.
 */
export function storableEvent(event: EgressEvent): EgressEvent {
  checkStorable(event.id, 'id', false);
  checkStorable(event.host, 'host', true);
  const ci = event.event === 'decision' ? event.ci : undefined;
  if (ci) {
    // The CI context's text that becomes dictionary strings (its repository, and the job key: job_id or the other three).
    checkStorable(ci.repository, 'ci.repository', true);
    checkStorable(ci.run_id, 'ci.run_id', true);
    checkStorable(ci.job, 'ci.job', true);
    checkStorable(ci.job_id, 'ci.job_id', true);
  }
  return event;
}

/**
 * A host or CI context value as storableEvent accepts it: NUL and lone surrogates become U+FFFD, and text over
 * MAX_KEY_TEXT_BYTES of UTF-8 is cut there (at a character's start, never inside one).
 */
function conformKeyText(text: string): string {
  const out = wellFormedText(text.includes('\0') ? text.replaceAll('\0', '\uFFFD') : text);
  if (out.length <= SURELY_SHORT_KEY) return out;
  const bytes = Buffer.from(out, 'utf8');
  if (bytes.length <= MAX_KEY_TEXT_BYTES) return out;
  let end = MAX_KEY_TEXT_BYTES;
  while ((bytes[end]! & 0xc0) === 0x80) end--; // a continuation byte: the character started before
  return bytes.toString('utf8', 0, end);
}

/** Whether conformKeyText leaves `text` as it is (the DNS path's fast check, decisionFieldsConform). */
function keyTextConforms(text: string): boolean {
  return text.length <= SURELY_SHORT_KEY && !text.includes('\0') && isWellFormed(text);
}

/** The text fields of an event, each bounded by MAX_TEXT. */
const TEXT_FIELDS = ['client', 'host', 'ip', 'sni', 'qtype', 'method', 'path', 'reason', 'rule', 'message', 'error'] as const;

/** Placeholder host of an event about a request that named none (a malformed DNS packet, an empty Host). */
export const NO_HOST = '(none)';

/**
 * Make an event the sidecar is about to emit one that validateEvent and storableEvent accept, so that the collector
 * never refuses what the sidecar wrote: text over MAX_TEXT is cut, the host and the CI context as conformKeyText
 * makes them, an empty host becomes NO_HOST, a port, status or duration out of range is corrected. Whatever a client
 * sent, the event keeps what fits.
 */
export function conformEvent<T extends EgressEvent>(event: T): T {
  const o = event as unknown as Record<string, unknown>;
  for (const key of TEXT_FIELDS) {
    const v = o[key];
    if (typeof v === 'string' && v.length > MAX_TEXT) o[key] = v.slice(0, MAX_TEXT);
  }
  if (typeof o.host === 'string') o.host = conformKeyText(o.host);
  if (typeof o.ci === 'object' && o.ci !== null) conformCiContext(o.ci as Record<string, unknown>);
  conformHostAndNumbers(o);
  return event;
}

/** Whether `v` is a port number (an integer 0-65535). */
export function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535;
}

/** What conformEvent and conformCloseEvent correct alike: an empty host, and a port, status or duration out of range. */
function conformHostAndNumbers(o: Record<string, unknown>): void {
  if (o.host === '') o.host = NO_HOST;
  if (!isPort(o.port)) o.port = 0;
  if (o.status !== undefined && (typeof o.status !== 'number' || !Number.isInteger(o.status) || o.status < 100 || o.status > 999)) delete o.status;
  if (typeof o.duration_ms === 'number' && !(o.duration_ms >= 0)) o.duration_ms = 0;
}

/** A text member cut to MAX_TEXT, as conformEvent cuts it. */
function cut<T extends string | undefined>(text: T): T {
  return typeof text === 'string' && text.length > MAX_TEXT ? (text.slice(0, MAX_TEXT) as T) : text;
}

/**
 * conformEvent for a close event that has a close event's members only (EventLog.close makes it so): the same
 * corrections, reading only those members by name, where conformEvent's loop looks up every text field of either kind
 * of event by key (most absent from a close event, each a lookup along the prototype chain).
 */
export function conformCloseEvent(event: CloseEvent): CloseEvent {
  event.client = cut(event.client);
  event.host = conformKeyText(cut(event.host));
  if (event.ip !== undefined) event.ip = cut(event.ip);
  if (event.error !== undefined) event.error = cut(event.error);
  conformHostAndNumbers(event as unknown as Record<string, unknown>);
  return event;
}

/** The CI context's text cut to MAX_TEXT and made as conformKeyText makes it, as conformEvent does (EventLog conforms its one context once). */
export function conformCiContext<T extends object>(context: T): T {
  const ci = context as Record<string, unknown>;
  for (const [key, v] of Object.entries(ci)) if (typeof v === 'string') ci[key] = conformKeyText(cut(v));
  return context;
}

/**
 * Whether conformEvent would leave a decision event made of these fields as it is, judged from the fields and their
 * JSON (`JSON.stringify(fields)`, with or without its braces): a host that is not empty and that conformKeyText
 * leaves as it is, a port in range, and JSON no longer than MAX_TEXT (a string's JSON is never shorter than the
 * string, so none of its text fields can be over MAX_TEXT). A `false` is not a verdict: the caller then conforms the
 * whole event.
 */
export function decisionFieldsConform(fields: { host: unknown; port: unknown }, json: string): boolean {
  const { host } = fields;
  return json.length <= MAX_TEXT && host !== '' && (typeof host !== 'string' || keyTextConforms(host)) && isPort(fields.port);
}

/** An NDJSON line that is a decision or close event, else null (pino operational lines, blanks, junk). */
export function eventFromLine(line: string): EgressEvent | null {
  const text = line.trim();
  if (!text.startsWith('{')) return null;
  try {
    return validateEvent(JSON.parse(text));
  } catch {
    return null;
  }
}
