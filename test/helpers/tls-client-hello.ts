import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { connect } from 'node:tls';

/** The ClientHello record node's TLS client sends for `servername`. */
export async function clientHelloFor(servername: string): Promise<Buffer> {
  const sink = net.createServer();
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  const first = new Promise<Buffer>((resolve) =>
    sink.once('connection', (s) =>
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
      }),
    ),
  );
  const tls = connect({ port: (sink.address() as AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
  tls.on('error', () => undefined);
  const hello = await first;
  tls.destroy();
  sink.close();
  return hello;
}

/** The same handshake message in two TLS records, the first cut after `cut` bytes of it. */
export function splitClientHello(record: Buffer, cut: number): Buffer {
  const message = record.subarray(5);
  const frame = (part: Buffer) => Buffer.concat([Buffer.from([0x16, record[1]!, record[2]!, part.length >> 8, part.length & 0xff]), part]);
  return Buffer.concat([frame(message.subarray(0, cut)), frame(message.subarray(cut))]);
}

/** Offset and length of the server_name extension's data in a real ClientHello record. */
function sniExtension(record: Buffer): { at: number; length: number } {
  let at = 5 + 4 + 2 + 32;
  at += 1 + record[at]!;
  at += 2 + record.readUInt16BE(at);
  at += 1 + record[at]!;
  const end = at + 2 + record.readUInt16BE(at);
  at += 2;
  while (at < end) {
    const type = record.readUInt16BE(at);
    const length = record.readUInt16BE(at + 2);
    if (type === 0) return { at: at + 4, length };
    at += 4 + length;
  }
  throw new Error('no server_name extension');
}

/** The record with its server_name extension's data replaced (every enclosing length fixed up), plus `extra` extensions after it. */
export function withServerName(record: Buffer, data: Buffer, extra: Buffer = Buffer.alloc(0)): Buffer {
  const { at, length } = sniExtension(record);
  const out = Buffer.concat([record.subarray(0, at), data, extra, record.subarray(at + length)]);
  const grow = data.length + extra.length - length;
  out.writeUInt16BE(data.length, at - 2);
  out.writeUInt16BE(out.readUInt16BE(3) + grow, 3); // record
  out.writeUIntBE(out.readUIntBE(6, 3) + grow, 6, 3); // handshake
  // The extensions block length sits right after the compression methods.
  let p = 5 + 4 + 2 + 32;
  p += 1 + out[p]!;
  p += 2 + out.readUInt16BE(p);
  p += 1 + out[p]!;
  out.writeUInt16BE(out.readUInt16BE(p) + grow, p);
  return out;
}

/** A server_name list: entries of [type, name bytes]. */
export function nameList(...entries: Array<[number, Buffer]>): Buffer {
  const body = Buffer.concat(entries.map(([type, name]) => Buffer.concat([Buffer.from([type, name.length >> 8, name.length & 0xff]), name])));
  return Buffer.concat([Buffer.from([body.length >> 8, body.length & 0xff]), body]);
}

/** encrypted_client_hello (draft-ietf-tls-esni), the extension an outer ClientHello carries its encrypted inner one in. */
export const ENCRYPTED_CLIENT_HELLO = 0xfe0d;

/** One extension as it is written in a ClientHello: type, length, data. */
export function extensionBytes(type: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type >> 8, type & 0xff, data.length >> 8, data.length & 0xff]), data]);
}

/**
 * An outer ECHClientHello as a client that implements ECH sends it: type outer (0), an HPKE cipher suite (HKDF-SHA256,
 * AES-128-GCM), a config id, the 32-byte encapsulated key and the encrypted inner hello (`payloadBytes` of it). The
 * bytes are made up: only the extension's presence matters to egress-guard, which cannot decrypt it.
 */
export function outerEncryptedClientHello(payloadBytes = 176): Buffer {
  const enc = Buffer.alloc(32, 0x5a);
  const payload = Buffer.alloc(payloadBytes, 0xa5);
  return Buffer.concat([Buffer.from([0, 0x00, 0x01, 0x00, 0x01, 0x2a, 0, enc.length]), enc, Buffer.from([payload.length >> 8, payload.length & 0xff]), payload]);
}

/** The record with `extensions` (whole extensions) added after its server_name extension, every length fixed up. */
export function withExtensionsAfterServerName(record: Buffer, extensions: Buffer): Buffer {
  const { at, length } = sniExtension(record);
  return withServerName(record, record.subarray(at, at + length), extensions);
}

/** The ClientHello node's TLS client sends for `servername`, with an outer encrypted_client_hello extension added (ECH). */
export async function clientHelloWithEch(servername: string): Promise<Buffer> {
  return withExtensionsAfterServerName(await clientHelloFor(servername), extensionBytes(ENCRYPTED_CLIENT_HELLO, outerEncryptedClientHello()));
}

/**
 * An SSLv2-format ClientHello (RFC 5246 E.2) offering TLS `version` (0x0301: TLS 1.0): msg_type 1, the version, three
 * lengths, cipher specs (three bytes each), no session id, a 32-byte challenge. It has no extensions, so no SNI.
 */
export function sslv2ClientHello(version = 0x0301, bodyLength?: number): Buffer {
  // ECDHE with ECDSA or RSA, AES-128 (CBC-SHA, GCM), then TLS_RSA_WITH_AES_128_CBC_SHA and the renegotiation SCSV.
  const base = [0x00, 0xc0, 0x09, 0x00, 0xc0, 0x2b, 0x00, 0xc0, 0x13, 0x00, 0xc0, 0x2f, 0x00, 0x00, 0x2f, 0x00, 0x00, 0xff];
  // `bodyLength`: the record's length (its header apart), made up with more TLS_RSA_WITH_AES_128_CBC_SHA entries and a
  // challenge of 16-32 bytes such that the cipher specs stay whole entries of 3 bytes.
  let challengeLength = 32;
  if (bodyLength !== undefined) while ((bodyLength - 9 - challengeLength) % 3 !== 0) challengeLength--;
  const specs = Buffer.alloc(bodyLength === undefined ? base.length : bodyLength - 9 - challengeLength);
  for (let i = 0; i < specs.length; i += 3) specs.set([0x00, 0x00, 0x2f], i);
  specs.set(base);
  const challenge = Buffer.alloc(challengeLength, 0x5a);
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const body = Buffer.concat([Buffer.from([0x01]), u16(version), u16(specs.length), u16(0), u16(challenge.length), specs, challenge]);
  return Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff]), body]);
}
