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

/**
 * Method, path and host of one request: the host of an absolute-URI target, else of the Host header (without
 * the port); the path without its query, bounded for logs.
 */
export function describeRequest(method: string, target: string, hostHeader: string | undefined): PeekedHttpRequest {
  let path = target;
  let host: string | undefined;
  if (/^https?:\/\//i.test(target)) {
    try {
      const url = new URL(target);
      host = url.hostname.replace(/^\[|\]$/g, '');
      path = url.pathname;
    } catch {
      // keep the raw target
    }
  }
  if (hostHeader !== undefined) host ??= parseAuthority(hostHeader.trim(), 80)?.host;
  return { method, path: path.split('?')[0]!.slice(0, 512), ...(host && { host }) };
}

/** Method, path and Host of a buffered HTTP/1 request head; null when it is not one. */
export function parseHttpHead(head: Buffer): PeekedHttpRequest | null {
  const text = head.toString('latin1');
  const line = REQUEST_LINE.exec(text);
  if (!line) return null;
  const end = text.search(/\r?\n\r?\n/);
  const lines = text.slice(line[0].length, end === -1 ? undefined : end).split(/\r?\n/);
  const hostHeader = lines.map((header) => /^host:[ \t]*(.*?)[ \t]*$/i.exec(header)).find((m) => m !== null)?.[1];
  return describeRequest(line[1]!, line[2]!, hostHeader);
}
