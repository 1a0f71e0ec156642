import type { EgressEvent } from '../events/schema.js';
import { renderPolicyYaml, suggestPolicy } from '../report/suggest.js';
import { summarize } from '../report/summary.js';
import { renderJobPage } from './page.js';
import type { JobUnpacker } from './stores/job-rows.js';

/**
 * The views of one job the collector computes from its events: its web page, its summary (JSON) and its suggested
 * policy (YAML). Pure: the same events give the same text, whether the collector's loop renders it or its view
 * thread does (view-thread.ts).
 */
export type JobView = { kind: 'page'; job: string; nonce: string } | { kind: 'summary'; job: string } | { kind: 'policy'; job: string; collapse: number };

/** The answer's text for `view` from the job's events (in time order, as the store reads them). */
export function renderJobView(view: JobView, events: readonly EgressEvent[]): string {
  switch (view.kind) {
    case 'page':
      return renderJobPage(view.job, summarize(events), renderPolicyYaml(suggestPolicy(events), `job ${view.job}`), view.nonce);
    case 'summary': {
      // The connections are the page's timeline, not part of the API's summary.
      const { connections: _connections, ...summary } = summarize(events);
      return JSON.stringify({ job: view.job, ...summary });
    }
    case 'policy':
      return renderPolicyYaml(suggestPolicy(events, { collapse: view.collapse }), `job ${view.job}`);
  }
}

/** The view's text from the unpacker of a job's rows (undefined: no rows came), or null when the job has no events. */
export function renderUnpackedJob(view: JobView, unpacker: JobUnpacker | undefined): string | null {
  const events = unpacker?.finish() ?? [];
  return events.length === 0 ? null : renderJobView(view, events);
}
