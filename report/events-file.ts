import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { EgressEvent } from '../events/schema.js';
import { eventFromLine } from '../events/validate.js';

/**
 * Read decision and close events from an NDJSON file (an EGRESS_EVENTS_FILE, or the proxy's stdout);
 * other lines (pino operational logs, blank lines) are counted and skipped. `-` reads standard input.
 */
export async function readEventsFile(path: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<{ events: EgressEvent[]; skipped: number }> {
  const input = path === '-' ? stdin : createReadStream(path);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const events: EgressEvent[] = [];
  let skipped = 0;
  for await (const line of lines) {
    const event = eventFromLine(line);
    if (event) events.push(event);
    else if (line.trim() !== '') skipped++;
  }
  return { events, skipped };
}
