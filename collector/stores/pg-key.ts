import { createHash } from 'node:crypto';
import { CLOSE, encodeId } from './codec.js';

/**
 * PostgreSQL's event key: a `uuid` column (16 bytes, no length header), one per (id, event), so that the unique index
 * is (key, time) - 32 bytes an entry instead of the 40 of (bytea key, event, time): alignment to 8 bytes makes 16 + 8
 * fit exactly where 18 + 2 + 8 did not (docs/collector.md, "Fourth round").
 *
 * - An id that is an RFC 9562 UUID (variant bits 10 in byte 8: every UUID the event log makes) is its own key; its close
 *   has bit 0x40 of byte 8 set (variant bits 11, which no RFC UUID has), so a decision and its close never share a key.
 * - Any other id (another producer's text, a UUID of another variant) is keyed by the first 16 bytes of the SHA-256 of
 *   codec.ts's `encodeId`, with variant bits 00 (decision) or 01 (close), so never equal to an RFC UUID's key; its
 *   text is kept in the stored body (codec.ts `packBody`'s `keepId`). Two such ids share a key only if they share 126
 *   bits of SHA-256.
 * `eg_decision_key` and `eg_close_key` (SQL, below) turn one key of a pair into the other inside a query.
 */
const VARIANT_BYTE = 8;
const CLOSE_BIT = 0x40;

/** Whether an `encodeId` key (0 then 16 UUID bytes, or 1 then text) is an RFC 9562 UUID (variant 10). */
export function isRfcUuidKey(idKey: Buffer): boolean {
  return idKey.length === 17 && idKey[0] === 0 && (idKey[1 + VARIANT_BYTE]! & 0xc0) === 0x80;
}

/** Whether the event's id must be kept in its body: its key does not give it back. */
export function keepsIdInBody(idKey: Buffer): boolean {
  return !isRfcUuidKey(idKey);
}

/** Lower-case hex digits by character code: 1, anything else below 128: 0. */
const LOWER_HEX = new Uint8Array(128);
for (const c of '0123456789abcdef') LOWER_HEX[c.charCodeAt(0)] = 1;

/**
 * Whether an id's text is what isRfcUuidKey accepts once encodeId has keyed it: a lower-case canonical UUID (encodeId's
 * 16 bytes) whose byte 8 (characters 19-20) has variant bits 10. From the text: no key made.
 */
export function isRfcUuidId(id: string): boolean {
  if (id.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = id.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23 ? c !== 45 : c >= 128 || LOWER_HEX[c] === 0) return false;
  }
  const variant = id.charCodeAt(19);
  return variant === 56 || variant === 57 || variant === 97 || variant === 98; // 8, 9, a, b
}

/** keepsIdInBody of the id's key, from its text. */
export function keepsIdOfId(id: string): boolean {
  return !isRfcUuidId(id);
}

/** pgKey of the id's key, from its text: an RFC UUID's own text (the close's with the bit set), no key made for it. */
export function pgKeyOfId(id: string, event: number): string {
  if (isRfcUuidId(id)) return event === CLOSE ? withCloseBit(id, true) : id;
  return pgKey(encodeId(id), event);
}

function uuidText(h: string): string {
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The stored key (uuid text) of an event, from its `encodeId` key and its event type. `id`: the id that key was made
 * from, when the caller has it: an RFC UUID key's text is then the id itself (encodeId keys only a lower-case
 * canonical UUID so), not read back from the key's bytes.
 */
export function pgKey(idKey: Buffer, event: number, id?: string): string {
  if (isRfcUuidKey(idKey)) {
    // Its own key, the close's with the bit set in the text (no Buffer copy per row).
    const text = id ?? uuidText(idKey.toString('hex', 1));
    return event === CLOSE ? withCloseBit(text, true) : text;
  }
  const bytes = createHash('sha256').update(idKey).digest().subarray(0, 16);
  bytes[VARIANT_BYTE] = bytes[VARIANT_BYTE]! & 0x3f;
  if (event === CLOSE) bytes[VARIANT_BYTE] = bytes[VARIANT_BYTE]! | CLOSE_BIT;
  return uuidText(bytes.toString('hex'));
}

/** The key of the other event of a pair (a decision's close, a close's decision): bit 0x40 of byte 8 set or cleared. */
function withCloseBit(key: string, set: boolean): string {
  const nibble = HEX_DIGITS.indexOf(key[19]!);
  return `${key.slice(0, 19)}${HEX_DIGITS[set ? nibble | 0x4 : nibble & ~0x4]}${key.slice(20)}`;
}

const HEX_DIGITS = '0123456789abcdef';

export const closeKeyOf = (key: string): string => withCloseBit(key.toLowerCase(), true);
/** Also the id a stored key gives back (an RFC UUID's; a hashed key's id is in the body, which answers instead). */
export const decisionKeyOf = (key: string): string => withCloseBit(key.toLowerCase(), false);

/** SQL of the key functions (IMMUTABLE and inlined: an index lookup by `eg_close_key(d.key)` is a plain one). */
export const KEY_FUNCTIONS_SQL = `
CREATE OR REPLACE FUNCTION eg_close_key(k uuid) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT encode(set_byte(uuid_send(k), ${VARIANT_BYTE}, get_byte(uuid_send(k), ${VARIANT_BYTE}) | ${CLOSE_BIT}), 'hex')::uuid $$;
CREATE OR REPLACE FUNCTION eg_decision_key(k uuid) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT encode(set_byte(uuid_send(k), ${VARIANT_BYTE}, get_byte(uuid_send(k), ${VARIANT_BYTE}) & ${255 - CLOSE_BIT}), 'hex')::uuid $$;
`;

/**
 * The migration's SQL expression of `pgKey` over the earlier layout's columns (`key` bytea as `encodeId` made it,
 * `event`): the same key as pgKey gives (tested).
 */
export const PG_KEY_OF_BYTEA_SQL = `(CASE WHEN length(key) = 17 AND get_byte(key, 0) = 0 AND (get_byte(key, ${1 + VARIANT_BYTE}) & 192) = 128
  THEN encode(set_byte(substr(key, 2), ${VARIANT_BYTE}, get_byte(key, ${1 + VARIANT_BYTE}) | (event * ${CLOSE_BIT})), 'hex')
  ELSE encode(set_byte(substr(sha256(key), 1, 16), ${VARIANT_BYTE}, (get_byte(sha256(key), ${VARIANT_BYTE}) & 63) | (event * ${CLOSE_BIT})), 'hex') END)::uuid`;

/** The earlier layout's rows whose id must move into the body (not an RFC UUID). */
export const KEEPS_ID_BYTEA_SQL = `NOT (length(key) = 17 AND get_byte(key, 0) = 0 AND (get_byte(key, ${1 + VARIANT_BYTE}) & 192) = 128)`;
