import { parseAuthority } from './authority.js';

const METHOD = /^[A-Z]{3,10} /;
const REQUEST_LINE = /^([A-Z]{3,10}) (\S+) HTTP\/1\.[01]\r?\n/;

/** Enough of an HTTP/1 request line to know this is HTTP (or could become it). */
export function looksLikeHttp(head: Buffer): boolean {
  const text = head.subarray(0, 12).toString('latin1');
  return METHOD.test(text) || /^[A-Z]{1,10}$/.test(text);
}

export function headersComplete(head: Buffer): boolean {
  return head.includes('\r\n\r\n') || head.includes('\n\n');
}

export interface PeekedHttpRequest {
  method: string;
  path: string;
  /** Host header (or absolute-URI host) without the port; undefined when there is none. */
  host?: string;
}

/** Method, path and Host of a buffered HTTP/1 request head; null when it is not one. */
export function parseHttpHead(head: Buffer): PeekedHttpRequest | null {
  const text = head.toString('latin1');
  const line = REQUEST_LINE.exec(text);
  if (!line) return null;
  const method = line[1]!;
  let path = line[2]!;
  let host: string | undefined;
  if (/^https?:\/\//i.test(path)) {
    try {
      const url = new URL(path);
      host = url.hostname.replace(/^\[|\]$/g, '');
      path = url.pathname;
    } catch {
      // keep the raw target
    }
  }
  const end = text.search(/\r?\n\r?\n/);
  const lines = text.slice(line[0].length, end === -1 ? undefined : end).split(/\r?\n/);
  for (const header of lines) {
    const m = /^host:[ \t]*(.*?)[ \t]*$/i.exec(header);
    if (!m) continue;
    host ??= parseAuthority(m[1]!, 80)?.host;
    break;
  }
  return { method, path: path.split('?')[0]!.slice(0, 512), ...(host && { host }) };
}
