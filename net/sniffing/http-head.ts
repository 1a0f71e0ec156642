import { parseAuthority } from '../../policy/host-port.js';

const REQUEST_LINE = /^([A-Z]{3,10}) (\S+) HTTP\/1\.[01]\r?\n/;

/**
 * Whether the first bytes are an HTTP request: 'yes' when the first line names an `HTTP/` version, whatever
 * its method looks like (odd methods, odd versions and the HTTP/2 preface included: an HTTP parser answers
 * 400 to what it cannot read, nothing is relayed unread); 'line' while a first line of text (no control bytes
 * but tab and CR) has not ended; 'no' otherwise. A first line without `HTTP/` is another protocol's command (SMTP's `EHLO x`,
 * memcached's `get k`), and binary first bytes (ssh key exchange, git's pkt-lines with NULs: control bytes) are
 * not text.
 */
export function httpRequestStart(head: Buffer): 'yes' | 'line' | 'no' {
  const lineEnd = head.indexOf(0x0a);
  const line = head.subarray(0, lineEnd === -1 ? head.length : lineEnd);
  if (lineEnd !== -1) return /HTTP\//i.test(line.toString('latin1')) ? 'yes' : 'no';
  // Controls are not text, but for the blanks a server may split a request line on (LINE_BLANK); bytes past ASCII may be
  // (nginx, Varnish and Go take them in a target: UTF-8 paths).
  for (const byte of line) if ((byte < 0x20 || byte === 0x7f) && !isLineBlank(byte)) return 'no';
  // Text that can no longer become a request line is another protocol's, whose client may wait for an answer without
  // ending its line (JSON over TCP, `{"id":1}`): read as HTTP, it waited for a line end until the idle timeout, then got 400.
  return mayBecomeRequestLine(line.toString('latin1')) ? 'line' : 'no';
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * What a server may split a request line on: Python's http.server (str.split() of the line read as latin1) takes any
 * white space, so VT, FF, a lone CR, \x1c-\x1f, NEL and NBSP too: it serves `GET\v/x`, `GET\r/x`, `\fGET /x` as HTTP/0.9.
 */
const BLANK = '[\\t\\v\\f\\r \\x1c-\\x1f\\x85\\xa0]';
const LINE_BLANK = new RegExp(BLANK);
const LINE_BLANKS = new RegExp(`${BLANK}+`);
const LEADING_LINE_BLANKS = new RegExp(`^${BLANK}+`);
/** LINE_BLANK by byte (latin1), for the loop over a first line's bytes. */
const BLANK_BYTE = Uint8Array.from({ length: 256 }, (_, byte) => (LINE_BLANK.test(String.fromCharCode(byte)) ? 1 : 0));

function isLineBlank(byte: number): boolean {
  return BLANK_BYTE[byte] === 1;
}

/**
 * Whether an unfinished first line may still become a request line, however lenient the server: a method (a token)
 * and then anything. A target may hold a space (nginx before 1.21.1 reads `GET /a b HTTP/1.1` as the target `/a b`), so whatever
 * follows the method may still end in `HTTP/`, as a finished line is judged: `GET /a b` cut before ` HTTP/1.1` was taken
 * for another protocol's text and relayed unread. No backtracking regular expression: the line may be 16 KiB of blanks.
 */
function mayBecomeRequestLine(text: string): boolean {
  // Blanks before the method (`\fGET /x` to Python's http.server) or only blanks so far: the method may still come.
  const line = text.replace(LEADING_LINE_BLANKS, '');
  if (line === '') return true;
  const blank = line.search(LINE_BLANK);
  return TOKEN.test(blank === -1 ? line : line.slice(0, blank));
}

/** A method that starts with a letter (git's pkt-lines start with their length in hex digits). */
const VERSIONLESS_METHOD = /^[A-Za-z][!#$%&'*+.^_`|~0-9A-Za-z-]*$/;
/** A CONNECT target that may be an authority (`attacker.test:443`), not another protocol's argument (NATS's `CONNECT {"verbose":false}`). */
const AUTHORITY = /^[A-Za-z0-9._~!$&'()*+,;=:%@[\]-]+$/;

/**
 * Whether a first line without `HTTP/` (ended, or all the client sent before its FIN) is still a request line to some
 * server: a method, blanks and a target that looks like one: a path (`/x`), an absolute URL (`http://attacker.test/x`),
 * `*`, or after CONNECT an authority. HTTP/0.9 has no version (`GET /x`), and servers still read it (Apache's
 * HttpProtocolOptions takes it by default, Python's http.server too, a lenient proxy may forward `GET http://attacker.test/x`): it names no host,
 * so it is decided as one that names none (CONNECT tunnel: sni-mismatch; redirected: the raw address), not relayed
 * unread as another protocol's text. What other protocols send first keeps passing: SMTP's `EHLO x`, memcached's
 * `get k`, redis's inline `PING`, `KEYS k*`, git's `0032git-upload-pack /repo.git`, NATS's `CONNECT {...}`. Where the two meet, it fails closed:
 * a key that looks like a path or is `*` (memcached `get /k`, redis inline `KEYS *`) is taken for a request.
 * Blanks are what a server may split on (LINE_BLANK: `GET\v/x`, leading ones too), however many: the line is split whole
 * (a linear split, at most the peek's bytes), not its first 8192 characters, which `GET`, 9000 spaces and `/x` passed.
 */
export function versionlessRequestLine(head: Buffer): boolean {
  const lineEnd = head.indexOf(0x0a);
  const line = head.toString('latin1', 0, lineEnd === -1 ? head.length : lineEnd);
  if (/HTTP\//i.test(line)) return false;
  const [method, target] = line.split(LINE_BLANKS).filter((word) => word !== '');
  if (method === undefined || target === undefined || !VERSIONLESS_METHOD.test(method)) return false;
  return target.startsWith('/') || target === '*' || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(target) || (method.toUpperCase() === 'CONNECT' && AUTHORITY.test(target));
}

/**
 * Whether a head has ended: a blank line, each of the two line ends with or without its CR (a server that takes a bare
 * LF for a line end, nginx, reads `Host: x\n\r\n` as a whole head, and so does the request reader in audit mode).
 */
export function headersComplete(head: Buffer): boolean {
  return head.includes('\r\n\r\n') || head.includes('\n\n') || head.includes('\n\r\n');
}

export interface PeekedHttpRequest {
  method: string;
  /** The target's path and query, whole (describeRequest). */
  path: string;
  /** Host header (or absolute-URI host) without the port; undefined when there is none. */
  host?: string;
  /** Methods its override headers name (DecisionRequest.methodOverrides), when read from a whole head. */
  methodOverrides?: readonly string[];
  /** Why its body, which may name such a method, could not be read (DecisionRequest.unreadBody). */
  unreadBody?: string;
}

/**
 * Method, path and host of one request: the host of an absolute-URI target, else of the Host header (without
 * the port); the path whole, with its query, as the explicit proxy and the inspector hand theirs to the decision. It
 * was cut to 512 characters and its query dropped: path rules judged the cut prefix (`/my-org/aaa…` of a path that
 * dot-segments past character 512 resolve to `/attacker/loot`, or one a deny entry matches past there). The event log
 * bounds what it writes (events/validate.ts) and leaves the query out unless log-query says otherwise (authorize.ts).
 */
export function describeRequest(method: string, target: string, hostHeader: string | undefined): PeekedHttpRequest {
  let path = target;
  let host: string | undefined;
  if (/^https?:\/\//i.test(target)) {
    try {
      const url = new URL(target);
      host = url.hostname.replace(/^\[|\]$/g, '');
      path = url.pathname + url.search;
    } catch {
      // keep the raw target
    }
  }
  if (hostHeader !== undefined) host ??= parseAuthority(hostHeader.trim(), 80)?.host;
  return { method, path, ...(host && { host }) };
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
