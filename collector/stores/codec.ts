import type { EgressEvent } from '../../events/schema.js';
import { BODY_V3, packCompact, unpackCompact, withCompactId } from './compact-body.js';
import { FixedDeflater } from './fixed-deflate.js';
import { rawCodec } from './raw-deflate.js';

/**
 * The compact row form of an event (docs/collector.md, "Storage layout"). What a column or the dictionary already
 * holds is left out of the stored body; the rest is deflated with a preset dictionary of typical event text, so a
 * body of ~350 bytes of JSON takes ~60. `unpackEvent` rebuilds the event exactly (same fields, same order).
 */

/** Outcomes and event types as small integers in the rows. */
export const OUTCOME_CODES = { allowed: 0, blocked: 1, 'would-block': 2 } as const;
export const DECISION = 0;
export const CLOSE = 1;

/**
 * Version byte in front of every body: 1 as the event was, 2 with the host in `rule` and `message` replaced by
 * HOST_MARK (a decision's message names its host: stored once, in the dictionary), 3 the known fields as bytes, no
 * JSON and no deflate (compact-body.ts: what packBody writes for every event it can; 1 and 2 for the rest). A later
 * dictionary or scheme gets a new version; old rows keep theirs.
 */
const BODY_V1 = 1;
const BODY_V2 = 2;
const HOST_MARK = '\u0001';

/** Typical event text: deflate refers back into it, so field names and common values cost a few bits each. */
const DICTIONARY_V1 = Buffer.from(
  [
    '{"schema":1,"event":"close","kind":"connect","client":"127.0.0.1:5","port":443,"ip":"10.0.0.1","bytes_in":1,"bytes_out":1,"duration_ms":1,"status":200}',
    '{"schema":1,"event":"close","kind":"http","client":"127.0.0.1:4","port":80,"ip":"172.17.0.1","bytes_in":0,"bytes_out":0,"duration_ms":0,"error":"upstream-"}',
    '{"schema":1,"event":"decision","kind":"dns","client":"127.0.0.1:3","port":53,"qtype":"AAAA","decision":"blocked","reason":"not-allowed-endpoint","rule":null,',
    '"message":"not in the allowlist","mode":"block","ci":{"repository":"","run_id":"","job":"build","job_id":""}}',
    '{"schema":1,"event":"decision","kind":"transparent","client":"127.0.0.1:6","port":443,"ip":"104.16.0.1","sni":"","method":"GET","path":"/",',
    '"decision":"would-block","reason":"not-allowed-endpoint","rule":null,"message":"would block: not in the allowlist","mode":"audit","ci":{"repository":"',
    '{"schema":1,"event":"decision","kind":"connect","client":"127.0.0.1:5","port":443,"ip":"140.82.112.3","decision":"allowed","reason":"allowed-endpoint",',
    '"rule":"github.com:443","message":"allowed by endpoint github.com:443","mode":"block","ci":{"repository":"org/repo","run_id":"1","job":"test"}}',
  ].join(''),
);

/** One zlib stream each, reused per body (raw-deflate.ts): what deflateRawSync makes, without its per-call setup. */
const V1 = rawCodec(DICTIONARY_V1);
/**
 * Bodies are deflated by fixed-deflate.ts (the dictionary's index built once: ~25-30% less CPU than zlib's reset
 * stream, and ~1 byte smaller a body; docs/collector.md); zlib deflates what is too large for it. V1.inflate reads either.
 */
const FIXED_V1 = new FixedDeflater(DICTIONARY_V1);

function deflateBody(json: string, version: number): Buffer {
  return FIXED_V1.deflateText(json, version) ?? V1.deflate.runText(json, version);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * An event id as a key: a UUID (what the event log makes) as its 16 bytes after a 0 byte, anything else as its
 * UTF-8 text after a 1 byte. Two ids have the same key only when they are the same text.
 */
export function encodeId(id: string): Buffer {
  return Buffer.from(idKeyHex(id), 'hex');
}

/** encodeId's key as lower-case hex, made from the id's text. */
function idKeyHex(id: string): string {
  if (id.length === 36 && UUID.test(id)) return `00${id.slice(0, 8)}${id.slice(9, 13)}${id.slice(14, 18)}${id.slice(19, 23)}${id.slice(24)}`;
  return `01${Buffer.from(id, 'utf8').toString('hex')}`;
}

export function decodeId(key: Buffer): string {
  return decodeIdHex(key.toString('hex'));
}

/** decodeId of a key as lower-case hex (SQLite's `lower(hex(key))`: no Buffer per row). */
export function decodeIdHex(hex: string): string {
  if (hex.startsWith('01')) return Buffer.from(hex.slice(2), 'hex').toString('utf8');
  const h = hex.slice(2);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The event without what the row's columns and the dictionary hold (id, host, a close's bytes, a decision's job id;
 * time when it is in canonical ISO form), deflated. Those fields stay in the body as 0, so the rebuilt event has its fields in the
 * original order: JSON.stringify of the rebuilt event is the text the collector parsed, re-serialised. `keepId`: the id
 * stays in the body (PostgreSQL, for an id its key cannot give back: pg-key.ts). `timeBase`: the row time a canonical
 * time is stored relative to (a number of ms; 0 for the row's own time): PostgreSQL keeps a close in its decision's
 * row, its time relative to the decision's.
 */
export function packBody(event: EgressEvent, timeMs: number, keepId = false, timeBase = timeMs): Buffer {
  return packCompact(event, timeMs, keepId, timeBase) ?? packJsonBody(event, timeMs, keepId, timeBase);
}

/** packBody of an event version 3 (compact-body.ts) does not write: its JSON, deflated (version 1 or 2). */
function packJsonBody(event: EgressEvent, timeMs: number, keepId: boolean, timeBase: number): Buffer {
  const canonicalTime = new Date(timeMs).toISOString() === event.time;
  const body: Record<string, unknown> = { ...event, id: keepId ? event.id : 0, host: 0, ...(canonicalTime && { time: timeMs - timeBase }) };
  let version = BODY_V1;
  if (event.event === 'close') Object.assign(body, { bytes_in: 0, bytes_out: 0 }); // the row's bytes_in, bytes_out columns
  if (event.event === 'decision') {
    if (event.ci?.job_id) body.ci = { ...event.ci, job_id: 0 }; // the job key (events/job-key.ts): in the dictionary
    const texts = [event.rule ?? '', event.message];
    if (event.host.length >= 4 && texts.some((t) => t.includes(event.host)) && !texts.some((t) => t.includes(HOST_MARK))) {
      version = BODY_V2;
      if (event.rule !== null) body.rule = event.rule.split(event.host).join(HOST_MARK);
      body.message = event.message.split(event.host).join(HOST_MARK);
    }
  }
  return deflateBody(JSON.stringify(body), version);
}

/** A stored body's version byte and its JSON object, inflated; `what` names it in the error for an unknown version. */
function inflateBody(body: Buffer, what: string): { version: number; event: Record<string, unknown> } {
  const version = body[0];
  if (version !== BODY_V1 && version !== BODY_V2) throw new Error(`${what} has an unknown body version ${version}`);
  return { version, event: JSON.parse(V1.inflate.run(body.subarray(1)).toString('utf8')) as Record<string, unknown> };
}

/**
 * Rebuild an event from its row: the stored body plus the id, host, time and byte columns, and its job (decisions).
 * `id` is the one the key gives; a body that kept its id (packBody's `keepId`) answers its own.
 */
export function unpackEvent(body: Buffer, id: string, host: string, timeMs: number, job: string | null, bytes: { in: number; out: number } | null): EgressEvent {
  if (body[0] === BODY_V3) return unpackCompact(body, id, host, timeMs, job, bytes);
  const { version, event } = inflateBody(body, `stored event ${id}`);
  if (typeof event.id !== 'string') event.id = id;
  event.host = host;
  if (typeof event.time === 'number') event.time = new Date(timeMs + event.time).toISOString(); // relative to the row's time (packBody)
  if (event.event === 'close' && bytes) Object.assign(event, { bytes_in: bytes.in, bytes_out: bytes.out });
  const ci = event.ci as Record<string, unknown> | undefined;
  if (ci?.job_id === 0) ci.job_id = job;
  if (version === BODY_V2) {
    if (typeof event.rule === 'string') event.rule = event.rule.split(HOST_MARK).join(host);
    event.message = (event.message as string).split(HOST_MARK).join(host);
  }
  return event as unknown as EgressEvent;
}

/** A stored body with its id set to `id` (0: left out again), the rest the same bytes of JSON: for a migration of the key. */
export function withBodyId(body: Buffer, id: string | 0): Buffer {
  if (body[0] === BODY_V3) return withCompactId(body, id);
  const { version, event } = inflateBody(body, 'stored event body');
  event.id = id;
  return deflateBody(JSON.stringify(event), version);
}
