import { parentPort } from 'node:worker_threads';
import type { EgressEvent } from '../events/schema.js';
import { renderJobView, type JobView } from './job-view.js';
import type { ToViewThread } from './view-thread.js';

/**
 * The collector's view thread (started by view-thread.ts): gathers a job's events as the collector's loop sends them,
 * a chunk per message, then renders the view and sends its text back. Views are rendered one at a time, in the order
 * their last chunk came; a view dropped (its client went away) before that is forgotten.
 */
if (!parentPort) throw new Error("collector/view-worker.js runs as the collector's worker thread only");
const port = parentPort;
const gathering = new Map<number, { view: JobView; events: EgressEvent[] }>();

port.on('message', (message: ToViewThread) => {
  switch (message.type) {
    case 'begin':
      gathering.set(message.id, { view: message.view, events: [] });
      return;
    case 'events': {
      const events = gathering.get(message.id)?.events;
      // A loop, not push(...chunk): a chunk of 10,000 spread into arguments is near the engine's limit.
      if (events) for (const event of message.events) events.push(event);
      return;
    }
    case 'drop':
      gathering.delete(message.id);
      return;
    case 'end': {
      const gathered = gathering.get(message.id);
      if (!gathered) return;
      gathering.delete(message.id);
      try {
        port.postMessage({ id: message.id, text: renderJobView(gathered.view, gathered.events) });
      } catch (err) {
        port.postMessage({ id: message.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      }
      return;
    }
  }
});
