/** A Transfer-Encoding value whose last coding is chunked (the message is framed by its chunks). */
const CHUNKED_LAST = /(?:^|,)[\t ]*chunked[\t ]*$/i;

/**
 * Whether a message whose Transfer-Encoding says `transferEncoding` (its last header line, or all of them joined as
 * node joins them: the last coding is the same) has a chunked body.
 */
export function chunkedBody(transferEncoding: string | undefined): boolean {
  return transferEncoding !== undefined && CHUNKED_LAST.test(transferEncoding);
}

/**
 * The last Transfer-Encoding header line of raw headers (name, value, ...), or undefined: read from the raw headers,
 * as `IncomingMessage.headers` is built on first use, a copy per message we need not make.
 */
export function lastTransferEncoding(raw: readonly string[]): string | undefined {
  let last: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.length === 17 && raw[i]!.toLowerCase() === 'transfer-encoding') last = raw[i + 1]!;
  return last;
}
