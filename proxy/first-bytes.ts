import type { Socket } from 'node:net';
import { firstTlsRecordLength, looksLikeTls, serverNameOf, TLS_MAX_RECORD } from './client-hello.js';
import { headersComplete, looksLikeHttp, parseHttpHead, type PeekedHttpRequest } from './http-host-peek.js';

export type PeekResult =
  | { protocol: 'tls'; sni?: string; bytes: number }
  | { protocol: 'http'; request: PeekedHttpRequest; bytes: number }
  /** Not TLS, not HTTP, or the client said nothing in time (server-speaks-first protocols, ssh...). */
  | { protocol: 'other'; bytes: number };

export interface PeekOptions {
  /** How long to wait for the client's first bytes. */
  timeoutMs: number;
  /** Stop buffering past this many bytes. */
  maxBytes?: number;
}

type Verdict = 'more' | 'done';

function verdict(head: Buffer, maxBytes: number): Verdict {
  if (head.length >= maxBytes) return 'done';
  if (looksLikeTls(head)) {
    const length = firstTlsRecordLength(head);
    return length !== undefined && head.length >= Math.min(length, TLS_MAX_RECORD) ? 'done' : 'more';
  }
  if (looksLikeHttp(head)) return headersComplete(head) ? 'done' : 'more';
  return 'done';
}

/**
 * Read the client's first bytes (a TLS ClientHello record or an HTTP request head) with a bounded wait,
 * then put every byte back on the socket (unshift), paused, so that whoever pipes it next relays them
 * to the server unchanged.
 */
export function peekFirstBytes(socket: Socket, options: PeekOptions): Promise<PeekResult> {
  const maxBytes = options.maxBytes ?? TLS_MAX_RECORD;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.pause();
      socket.off('data', onData);
      socket.off('end', finish);
      socket.off('close', finish);
      const head = Buffer.concat(chunks, length);
      if (head.length > 0 && !socket.destroyed && !socket.readableEnded) socket.unshift(head);
      void classify(head).then(resolve);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (verdict(Buffer.concat(chunks, length), maxBytes) === 'done') finish();
    };
    const timer = setTimeout(finish, options.timeoutMs);
    socket.on('data', onData);
    socket.once('end', finish);
    socket.once('close', finish);
    // A socket paused by an earlier peek does not flow again just because a 'data' listener was added.
    socket.resume();
  });
}

async function classify(head: Buffer): Promise<PeekResult> {
  if (looksLikeTls(head)) {
    const length = firstTlsRecordLength(head);
    const record = length !== undefined ? head.subarray(0, length) : head;
    const sni = await serverNameOf(record);
    return { protocol: 'tls', bytes: head.length, ...(sni && { sni }) };
  }
  const request = looksLikeHttp(head) ? parseHttpHead(head) : null;
  if (request) return { protocol: 'http', request, bytes: head.length };
  return { protocol: 'other', bytes: head.length };
}
