export const INGEST_PATH = '/api/v1/events';

/**
 * A line of a batch the collector did not store, and why (1-based line numbers): what its answer lists under
 * `rejected`, and what the stream client counts. One shape for both ends of the ingest protocol.
 */
export interface RejectedLine {
  line: number;
  error: string;
}

/** The ingest endpoint of a collector given by its base URL (a path prefix is kept). */
export function ingestUrl(base: string): URL {
  const url = new URL(base);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`collector URL must be http or https: ${base}`);
  if (!url.pathname.endsWith(INGEST_PATH)) url.pathname = `${url.pathname.replace(/\/+$/, '')}${INGEST_PATH}`;
  return url;
}
