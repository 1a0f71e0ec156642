import type { Socket } from 'node:net';
import {
  clientHelloFactsOf,
  clientHelloSplitAcrossRecords,
  firstTlsRecordLength,
  looksLikeSslv2ClientHello,
  looksLikeTls,
  sslv2RecordLength,
  TLS_MAX_RECORD,
} from './client-hello.js';
import { headersComplete, httpRequestStart, parseHttpHead, versionlessRequestLine, type PeekedHttpRequest } from './http-head.js';

/** `eof`: the client half-closed (FIN) within the peek; its bytes are put back all the same. */
export type PeekResult = PeekedProtocol & { eof?: true };

type PeekedProtocol =
  /**
   * `split`: the ClientHello does not fit in its first record, so no SNI could be read; `unreadableSni`: it has
   * a server_name that is not exactly one host name (why), which a check must not take for "no SNI";
   * `encryptedClientHello`: it carries an encrypted inner ClientHello (ECH), whose server name only the server reads;
   * `sslv2`: an SSLv2-format ClientHello (client-hello.ts looksLikeSslv2ClientHello), which has no SNI.
   */
  | { protocol: 'tls'; sni?: string; bytes: number; split?: true; unreadableSni?: string; encryptedClientHello?: true; sslv2?: true }
  /**
   * `request`: method, path and Host when the head was complete and well-formed; `http2`: the HTTP/2 connection preface
   * (prior knowledge, h2c), whose requests name their host in frames (`:authority`), not in a head; `unfinishedLine`:
   * the wait ended in a first line of text that had not ended but may still become a request line.
   */
  | { protocol: 'http'; request?: PeekedHttpRequest; bytes: number; http2?: true; unfinishedLine?: true }
  /**
   * Not TLS, not HTTP, or the client said nothing in time (server-speaks-first protocols, ssh...).
   * `incomplete`: the wait ended inside a TLS record, or on white space only (empty lines, spaces, tabs).
   * `versionlessRequest`: a first line that a server may read as a request without a version (HTTP/0.9's `GET /x`,
   * `GET http://attacker.test/x`), which names no host (http-head.ts versionlessRequestLine).
   */
  | { protocol: 'other'; bytes: number; incomplete?: 'tls' | 'text'; versionlessRequest?: true };

/**
 * What names no host that a check could read, yet may reach a server as a request or a ClientHello: the peek ended
 * mid-head (endsMidHead), or a request line without a version. Decided as such (a raw address, sni-mismatch), never
 * relayed as another protocol's bytes.
 */
export function namesNoHost(peek: PeekResult): boolean {
  return endsMidHead(peek) || (peek.protocol === 'other' && peek.versionlessRequest === true);
}

/**
 * The wait ended in the middle of something that names a host once it is whole: a ClientHello, the first line of
 * what may be a request, or white space before one. Decided on it now, a check would let the name that follows by.
 */
export function unfinished(peek: PeekResult): boolean {
  return !peek.eof && endsMidHead(peek);
}

/** The peek ended inside a ClientHello, a first line, or white space before one, whether or not the client's FIN ended it. */
export function endsMidHead(peek: PeekResult): boolean {
  return (peek.protocol === 'other' && peek.incomplete !== undefined) || (peek.protocol === 'http' && peek.unfinishedLine === true);
}

export interface PeekOptions {
  /** How long to wait for the client's first bytes. */
  timeoutMs: number;
  /** Stop buffering past this many bytes. */
  maxBytes?: number;
  /** 'tls': only a ClientHello is waited for; anything else is classified at once (CONNECT tunnels). */
  look?: 'tls' | 'tls-or-http';
  /**
   * Once the first byte has come, the wait ends at most this long after it. A long `timeoutMs` waits for a silent
   * client; this bounds what follows its first byte: a client of another protocol whose first byte is 0x16 (a TLS
   * handshake's), then waiting for its answer, was held for the whole `timeoutMs` (the idle timeout, in audit mode too).
   * A TLS client writes its ClientHello in one piece.
   */
  finishWithinMs?: number;
}

type Verdict = 'more' | 'done';

/** The HTTP/2 client connection preface's request line (RFC 9113 3.4). */
const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n', 'latin1');

/**
 * Servers ignore empty lines before a request line (RFC 9112 2.2), and some any white space: Varnish skips spaces
 * and tabs too (http1_splitline). The peek skips all of it, so that `\t\r\nGET ...` is not taken for another
 * protocol's line and relayed unread.
 */
function withoutLeadingWhiteSpace(head: Buffer): Buffer {
  let i = 0;
  while (i < head.length && (head[i] === 0x0d || head[i] === 0x0a || head[i] === 0x20 || head[i] === 0x09)) i++;
  return i === 0 ? head : head.subarray(i);
}

function verdict(whole: Buffer, maxBytes: number, tlsOnly: boolean): Verdict {
  if (whole.length >= maxBytes) return 'done';
  if (looksLikeTls(whole)) {
    const length = firstTlsRecordLength(whole);
    return length !== undefined && whole.length >= Math.min(length, TLS_MAX_RECORD) ? 'done' : 'more';
  }
  if (looksLikeSslv2ClientHello(whole)) {
    const length = sslv2RecordLength(whole);
    return length !== undefined && whole.length >= 4 && whole.length >= length ? 'done' : 'more';
  }
  if (tlsOnly) return whole.length > 0 ? 'done' : 'more';
  const head = withoutLeadingWhiteSpace(whole);
  if (head.length === 0) return 'more';
  const start = httpRequestStart(head);
  if (start === 'yes') return headersComplete(head) ? 'done' : 'more';
  return start === 'line' ? 'more' : 'done';
}

/** True once the client's FIN has arrived, though 'end' may not have been emitted (data still buffered). */
function finReceived(socket: Socket): boolean {
  // Node has no public flag for "EOF received, not yet consumed" ('end' and readableEnded come only after
  // the last byte is read); ReadableState.ended is it, unchanged from Node 10 to 24.
  return (socket as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

/**
 * Read the client's first bytes (a TLS ClientHello record or an HTTP request head) with a bounded wait,
 * then put every byte back on the socket (unshift), paused, so that whoever reads it next (a pipe to the
 * server, the HTTP parser) gets them unchanged. Reads in paused mode and never past the buffered bytes, so
 * a client that sends its request and its FIN together still has 'end' ahead of it: the bytes can be put
 * back, and the FIN follows them to whoever reads next (half-close is relayed, not lost).
 */
export function peekFirstBytes(socket: Socket, options: PeekOptions): Promise<PeekResult> {
  const maxBytes = options.maxBytes ?? TLS_MAX_RECORD;
  const tlsOnly = options.look === 'tls';
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('close', finish);
      const head = joined(chunks, length);
      const eof = finReceived(socket);
      if (head.length > 0 && !socket.destroyed && !socket.readableEnded) socket.unshift(head);
      const capped = head.length >= maxBytes;
      // After the client's FIN nothing more will come: what is there is judged as it is, not as unfinished.
      const result = classify(head, !capped && !eof && verdict(head, maxBytes, tlsOnly) === 'more', capped, eof);
      resolve(eof ? { ...result, eof: true } : result);
    };
    const onReadable = () => {
      // read(n) with n = what is buffered: a read() without a size at the FIN would schedule 'end'.
      while (!settled && socket.readableLength > 0) {
        const chunk = socket.read(socket.readableLength) as Buffer | null;
        if (chunk === null) break;
        if (length === 0 && options.finishWithinMs !== undefined && options.finishWithinMs < deadline - Date.now()) {
          clearTimeout(timer);
          timer = setTimeout(finish, options.finishWithinMs);
        }
        chunks.push(chunk);
        length += chunk.length;
        if (verdict(joined(chunks, length), maxBytes, tlsOnly) === 'done') return finish();
      }
      if (finReceived(socket)) finish();
    };
    const deadline = Date.now() + options.timeoutMs;
    let timer = setTimeout(finish, options.timeoutMs);
    socket.on('readable', onReadable);
    socket.once('close', finish);
    // Bytes put back by an earlier peek are buffered already: no 'readable' may come for them.
    onReadable();
  });
}

/**
 * The chunks read so far as one buffer: the one chunk itself when there is one (nearly always: a ClientHello comes in
 * one read), which Buffer.concat would copy, twice per peek.
 */
function joined(chunks: Buffer[], length: number): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
}

/** `unfinished`: the wait ended in the middle of something; `capped`: the byte cap ended it; `eof`: the client's FIN did. */
function classify(whole: Buffer, unfinished: boolean, capped: boolean, eof: boolean): PeekResult {
  const bytes = whole.length;
  if (bytes === 0) return { protocol: 'other', bytes };
  // SSLv2's record format: a ClientHello without extensions, so without SNI (decided as one without server_name). It
  // was taken for another protocol's bytes: on the transparent path, decided by DNS attribution (an allowed name's).
  if (looksLikeSslv2ClientHello(whole)) return unfinished ? { protocol: 'other', bytes, incomplete: 'tls' } : { protocol: 'tls', bytes, sslv2: true };
  if (looksLikeTls(whole)) {
    if (unfinished) return { protocol: 'other', bytes, incomplete: 'tls' };
    const length = firstTlsRecordLength(whole);
    const record = length !== undefined ? whole.subarray(0, length) : whole;
    const name = clientHelloFactsOf(record);
    // Member by member, in this order, not through a conditional spread per member.
    const tls: PeekedProtocol & { protocol: 'tls' } = { protocol: 'tls', bytes };
    if ('name' in name) tls.sni = name.name;
    if ('unreadable' in name) tls.unreadableSni = name.unreadable;
    if (name.encryptedClientHello) tls.encryptedClientHello = true;
    if (clientHelloSplitAcrossRecords(whole)) tls.split = true;
    return tls;
  }
  const head = withoutLeadingWhiteSpace(whole);
  // White space only (however much): the request, if one comes, has not started.
  if (head.length === 0) return { protocol: 'other', bytes, incomplete: 'text' };
  const start = httpRequestStart(head);
  // A request line still going when the wait or the byte cap ended is handed to the HTTP parser too.
  if (start === 'yes' || (start === 'line' && (unfinished || capped))) {
    if (start === 'line' && !capped) return { protocol: 'http', bytes, unfinishedLine: true };
    if (head.subarray(0, HTTP2_PREFACE.length).equals(HTTP2_PREFACE)) return { protocol: 'http', bytes, http2: true };
    const request = parseHttpHead(head);
    return { protocol: 'http', bytes, ...(request && { request }) };
  }
  // A first line that has ended, or all there is before the FIN (a line still going is judged once it ends: the wait
  // for a ClientHello ends at text's first byte).
  if ((start === 'no' || eof) && versionlessRequestLine(head)) return { protocol: 'other', bytes, versionlessRequest: true };
  return { protocol: 'other', bytes };
}
