import type { EgressEvent } from '../events/schema.js';
import { validateEvent } from '../events/validate.js';
import { readEventsFile } from './events-file.js';
import { eventsOfJob } from './summary.js';

/** The events source cannot be read (a file, or a collector that is unreachable or answers an error). */
export class EventSourceError extends Error {}

export interface LoadedEvents {
  events: EgressEvent[];
  /** What the events came from, for report headers. */
  source: string;
  skipped: number;
}

function isUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

export async function getJson(url: URL): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new EventSourceError(`cannot reach the collector at ${url.origin}: ${(err as Error).message}`);
  }
  const body = await res.text();
  if (!res.ok) {
    let message = body.slice(0, 300);
    try {
      message = (JSON.parse(body) as { error?: string }).error ?? message;
    } catch {
      // not JSON: keep the text
    }
    throw new EventSourceError(`collector answered ${res.status} for ${url.pathname}: ${message}`);
  }
  try {
    return JSON.parse(body);
  } catch {
    throw new EventSourceError(`collector answer for ${url.pathname} is not JSON`);
  }
}

export function apiUrl(base: string, path: string): URL {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
  return url;
}

/**
 * Events from a file of NDJSON events (`-` for standard input), or from a collector (its base URL) for
 * one job. With a file, `job` keeps only that job's events. Throws EventSourceError with a readable message.
 */
export async function loadEvents(source: string, job: string | undefined): Promise<LoadedEvents> {
  if (isUrl(source)) {
    let chosen = job;
    if (!chosen) {
      const { jobs } = (await getJson(apiUrl(source, '/api/v1/jobs'))) as { jobs: Array<{ job: string }> };
      if (jobs.length !== 1) {
        throw new EventSourceError(
          `--job is needed: the collector has ${jobs.length} jobs${
            jobs.length
              ? ` (${jobs
                  .slice(0, 10)
                  .map((j) => j.job)
                  .join(', ')})`
              : ''
          }`,
        );
      }
      chosen = jobs[0]!.job;
    }
    const { events } = (await getJson(apiUrl(source, `/api/v1/jobs/${encodeURIComponent(chosen)}/events`))) as { events: unknown[] };
    return { events: events.map((e) => validateEvent(e)), source: `${source} job ${chosen}`, skipped: 0 };
  }
  let loaded;
  try {
    loaded = await readEventsFile(source);
  } catch (err) {
    throw new EventSourceError(`cannot read ${source}: ${(err as Error).message}`);
  }
  return { events: job ? eventsOfJob(loaded.events, job) : loaded.events, source: job ? `${source} job ${job}` : source, skipped: loaded.skipped };
}
