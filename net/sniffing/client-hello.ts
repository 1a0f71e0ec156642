/** TLS handshake record: content type 22, then a 2-byte version and a 2-byte length. */
export const TLS_RECORD_HEADER = 5;
export const TLS_MAX_RECORD = 16_384 + 2048;

/** A TLS handshake record (content type 22), whatever version it claims: some servers accept any. */
export function looksLikeTls(head: Buffer): boolean {
  return head.length > 0 && head[0] === 0x16;
}

/**
 * An SSLv2-format ClientHello (RFC 5246 E.2, "backward compatibility"): a 2-byte record header with the high bit set
 * (a length up to 16 KiB, 0x4000 included: 0x80-0xbf, or 0xc0 0x00, which OpenSSL takes too), then msg_type 1 and a
 * version whose major is 3. OpenSSL servers still take it as the first record of a TLS 1.0-1.2 handshake. It has no
 * extensions, so no SNI: it is decided as a ClientHello without server_name. True too while too few bytes have come to
 * tell (the first one, or two).
 */
export function looksLikeSslv2ClientHello(head: Buffer): boolean {
  if (head.length === 0 || head[0]! < 0x80 || head[0]! > 0xc0) return false;
  // 0xc0: only a length of exactly 16 KiB (0xc0 0x00); a longer record OpenSSL refuses (data length too long).
  if (head[0] === 0xc0 && head.length >= 2 && head[1] !== 0) return false;
  if ((head.length >= 3 && head[2] !== CLIENT_HELLO) || (head.length >= 4 && head[3] !== 3)) return false;
  // Once its three lengths are in: they add up to the record, a session id of at most 32 bytes, as OpenSSL requires
  // (tls_process_client_hello: nothing may follow the challenge). A Thrift compact call (0x82 0x21, seqid 1, a method name
  // of 3 letters) matched the first four bytes and was waited for, then refused as an unfinished ClientHello.
  if (head.length < 11) return true;
  const sessionId = head.readUInt16BE(7);
  return sessionId <= 32 && 9 + head.readUInt16BE(5) + sessionId + head.readUInt16BE(9) === sslv2RecordLength(head)! - 2;
}

/** Bytes of an SSLv2-format record (its 2-byte header and what it says follows), once that header is in. */
export function sslv2RecordLength(head: Buffer): number | undefined {
  if (head.length < 2) return undefined;
  return 2 + (((head[0]! & 0x7f) << 8) | head[1]!);
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
/** The server_name extension and its only name type, host_name (RFC 6066 3). */
const SERVER_NAME = 0x0000;
const HOST_NAME = 0;
/**
 * encrypted_client_hello (draft-ietf-tls-esni, 0xfe0d): the outer ClientHello carries an encrypted inner one whose
 * server name only the server (a shared front) can read. ech_outer_extensions (0xfd00) appears only inside the inner.
 */
const ENCRYPTED_CLIENT_HELLO = 0xfe0d;

/**
 * What a ClientHello says its server is: a name, no server_name extension at all, or a server_name that
 * cannot be read as exactly one host name. A server_name that is there but unreadable is not "no SNI": TLS
 * stacks differ on such hellos (one takes a later entry of a list, another decodes bytes past ASCII), so a
 * check that let it through as nameless would let a client name one host to egress-guard and another to
 * the server.
 */
export type ServerName = { name: string } | { absent: true } | { unreadable: string };

/** What a buffered ClientHello says: its server name, and `encryptedClientHello` when it carries the ECH extension. */
export type ClientHelloFacts = ServerName & { encryptedClientHello?: true };

/**
 * Whether the last walk (serverNameAt) met an encrypted_client_hello extension. A variable of the module, not a member
 * of an object per walk: the walk is synchronous, and its caller reads this at once.
 */
let walkMetEncryptedClientHello = false;

/**
 * The server name of a buffered ClientHello (the whole first record). Synchronous and copy-free: the walk
 * to the extensions follows the layout of RFC 8446 4.1.2 with a bounds check at every step. The stream
 * reader of read-tls-client-hello (a promise per field) cost 14% of a tunnel's CPU, more than the policy
 * decision, and its SNI parser takes the first entry of a list and decodes bytes as 7-bit ASCII: both are
 * refused here (docs/benchmark.md, README "Dependencies").
 */
export function serverNameOf(record: Buffer): ServerName {
  const at = serverNameAt(record);
  if (typeof at === 'string') return { unreadable: at };
  return at === -1 ? { absent: true } : hostNameIn(record.subarray(at, at + record.readUInt16BE(at - 2)));
}

/** serverNameOf, and whether the hello carries an encrypted inner ClientHello (ECH), in the same walk. */
export function clientHelloFactsOf(record: Buffer): ClientHelloFacts {
  const facts: ClientHelloFacts = serverNameOf(record);
  if (walkMetEncryptedClientHello) facts.encryptedClientHello = true;
  return facts;
}

/** The one host_name of a server_name extension (RFC 6066 3: a list of one name, printable ASCII). */
function hostNameIn(data: Buffer): ServerName {
  if (data.length < 2 || data.readUInt16BE(0) !== data.length - 2) return { unreadable: 'a server_name list whose length is not its size' };
  if (data.length < 5 || data[2] !== HOST_NAME) return { unreadable: 'a server_name list whose first entry is not a host name' };
  const length = data.readUInt16BE(3);
  if (5 + length !== data.length) return { unreadable: 'a server_name list of more than one entry, or a name whose length is not its size' };
  if (length === 0 || length > 255) return { unreadable: `a host name of ${length} bytes` };
  for (let i = 5; i < data.length; i++) {
    const byte = data[i]!;
    if (byte < 0x21 || byte > 0x7e) return { unreadable: `a host name with byte 0x${byte.toString(16).padStart(2, '0')}` };
  }
  return { name: data.toString('latin1', 5) };
}

/**
 * Where the data of a ClientHello's server_name extension starts in the record (its length is the two bytes before),
 * -1 when it has none, or why the hello cannot be read. Every extension's bounds are checked, those after a
 * server_name too, before a second server_name is reported. No object per extension: a Buffer view and a pair for
 * each (a dozen or more per hello) were most of the walk's instructions (docs/benchmark.md, "Issue 14, eighth round").
 */
function serverNameAt(record: Buffer): number | string {
  walkMetEncryptedClientHello = false;
  if (record.length < TLS_RECORD_HEADER + 4 || !looksLikeTls(record)) return 'not a TLS handshake record';
  // The whole record, as it says it is, must have been read.
  const end = TLS_RECORD_HEADER + record.readUInt16BE(3);
  if (record.length < end) return 'a record shorter than its length';
  let at = TLS_RECORD_HEADER;
  if (record[at] !== CLIENT_HELLO) return 'a handshake that is not a ClientHello';
  at += 4; // type, 3-byte length
  at += 2 + 32; // legacy_version, random
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (at + lengthBytes > end) return false;
    at += lengthBytes + record.readUIntBE(at, lengthBytes);
    return at <= end;
  };
  // legacy_session_id, cipher_suites, legacy_compression_methods
  if (!skip(1) || !skip(2) || !skip(1)) return 'a ClientHello cut short before its extensions';
  // No extensions at all (an old client): a hello without a server name.
  if (at === end) return -1;
  if (at + 2 > end) return 'a ClientHello cut short before its extensions';
  const extensionsEnd = at + 2 + record.readUInt16BE(at);
  if (extensionsEnd > end) return 'extensions longer than the record';
  at += 2;
  let serverName = -1;
  let serverNames = 0;
  while (at < extensionsEnd) {
    if (at + 4 > extensionsEnd) return 'an extension cut short';
    const type = record.readUInt16BE(at);
    const length = record.readUInt16BE(at + 2);
    at += 4;
    if (at + length > extensionsEnd) return 'an extension longer than the extensions';
    if (type === SERVER_NAME && serverNames++ === 0) serverName = at;
    else if (type === ENCRYPTED_CLIENT_HELLO) walkMetEncryptedClientHello = true;
    at += length;
  }
  return serverNames > 1 ? 'two server_name extensions' : serverName;
}
