import { extensionParsers } from 'read-tls-client-hello';

/** TLS handshake record: content type 22, then a 2-byte version and a 2-byte length. */
export const TLS_RECORD_HEADER = 5;
export const TLS_MAX_RECORD = 16_384 + 2048;

/** A TLS handshake record (content type 22), whatever version it claims: some servers accept any. */
export function looksLikeTls(head: Buffer): boolean {
  return head.length > 0 && head[0] === 0x16;
}

/** Bytes of the first TLS record, once its header is in; undefined until then. */
export function firstTlsRecordLength(head: Buffer): number | undefined {
  if (head.length < TLS_RECORD_HEADER) return undefined;
  return TLS_RECORD_HEADER + head.readUInt16BE(3);
}

/**
 * True when the first record holds only part of the ClientHello (the handshake message is longer than the
 * record): its SNI cannot be read from that record, whatever the next one says.
 */
export function clientHelloSplitAcrossRecords(head: Buffer): boolean {
  if (head.length < TLS_RECORD_HEADER) return false;
  const recordPayload = head.readUInt16BE(3);
  // A record too short for a handshake header (even empty) is a split too: servers reassemble what follows.
  if (recordPayload < 4 || head.length < TLS_RECORD_HEADER + 4) return true;
  const handshakeLength = head.readUIntBE(TLS_RECORD_HEADER + 1, 3);
  return recordPayload < 4 + handshakeLength;
}

/** The handshake type of a ClientHello (RFC 8446 4). */
const CLIENT_HELLO = 1;
/** The server_name extension (RFC 6066 3). */
const SERVER_NAME = 0x0000;

/**
 * The SNI of a buffered ClientHello (the whole first record); undefined when there is no server_name
 * extension or the hello is malformed. Synchronous and copy-free: the walk to the extensions follows the
 * fixed layout of RFC 8446 4.1.2 with a bounds check at every step, and the extension itself is parsed by
 * read-tls-client-hello's own SNI parser. The library's stream reader (a promise per field) cost 14% of a
 * tunnel's CPU (docs/benchmark.md), more than the policy decision.
 */
export function serverNameOf(record: Buffer): string | undefined {
  try {
    const extension = serverNameExtension(record);
    if (!extension) return undefined;
    const name = (extensionParsers[SERVER_NAME](extension) as { serverName?: string } | null)?.serverName;
    return typeof name === 'string' && name.length > 0 ? name : undefined;
  } catch {
    // The extension's parser reads past a lying length with a RangeError: no readable name.
    return undefined;
  }
}

/** The data of the server_name extension, or undefined (no such extension, or a malformed hello). */
function serverNameExtension(record: Buffer): Buffer | undefined {
  if (record.length < TLS_RECORD_HEADER + 4 || !looksLikeTls(record)) return undefined;
  // The whole record, as it says it is, must have been read.
  const end = TLS_RECORD_HEADER + record.readUInt16BE(3);
  if (record.length < end) return undefined;
  let at = TLS_RECORD_HEADER;
  if (record[at] !== CLIENT_HELLO) return undefined;
  at += 4; // type, 3-byte length
  at += 2 + 32; // legacy_version, random
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (at + lengthBytes > end) return false;
    at += lengthBytes + record.readUIntBE(at, lengthBytes);
    return at <= end;
  };
  // legacy_session_id, cipher_suites, legacy_compression_methods
  if (!skip(1) || !skip(2) || !skip(1)) return undefined;
  if (at + 2 > end) return undefined;
  const extensionsEnd = Math.min(end, at + 2 + record.readUInt16BE(at));
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = record.readUInt16BE(at);
    const length = record.readUInt16BE(at + 2);
    at += 4;
    if (at + length > extensionsEnd) return undefined;
    if (type === SERVER_NAME) return record.subarray(at, at + length);
    at += length;
  }
  return undefined;
}
