import { Readable } from 'node:stream';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';

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

/**
 * The SNI of a buffered ClientHello (the whole first record), parsed by read-tls-client-hello.
 * Resolves undefined when there is no server_name extension or the hello cannot be parsed.
 */
export async function serverNameOf(record: Buffer): Promise<string | undefined> {
  try {
    const hello = await readTlsClientHello(Readable.from([record], { objectMode: false }));
    const sni = getExtensionData(hello, 'server_name') as { serverName?: string } | null | undefined;
    const name = sni?.serverName;
    return typeof name === 'string' && name.length > 0 ? name : undefined;
  } catch {
    return undefined;
  }
}
