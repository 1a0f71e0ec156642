import { parentPort } from 'node:worker_threads';
import type { EgressEvent } from '../events/schema.js';
import { renderJobView, type JobView } from './job-view.js';
import type { ToViewThread } from './view-thread.js';

/**
 * The collector's view thread (started by view-thread.ts): gathers a job's events as the collector's loop sends them,
 * a chunk per message, then renders the view and sends its text back. Views are rendered one at a time, in the order
 * their last chunk came, each in a turn of its own; a view dropped (its client went away) before its turn is forgotten.
 */
if (!parentPort) throw new Error("collector/view-worker.js runs as the collector's worker thread only");
const port = parentPort;
const gathering = new Map<number, { view: JobView; events: EgressEvent[] }>();
// The views whose last chunk came, to render in that order. Rendered in the 'end' message's own turn, a view dropped
// while the thread rendered others (its 'drop' queued behind its 'end') was rendered all the same, for nobody, and the
// views after it waited for that; the messages that came meanwhile are read before the next turn.
const ready: number[] = [];

function renderNext(): void {
  const id = ready.shift()!;
  if (ready.length > 0) setImmediate(renderNext);
  const gathered = gathering.get(id);
  if (!gathered) return; // dropped
  gathering.delete(id);
  try {
    port.postMessage({ id, text: renderJobView(gathered.view, gathered.events) });
  } catch (err) {
    port.postMessage({ id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
}

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
    case 'end':
      if (!gathering.has(message.id)) return;
      if (ready.push(message.id) === 1) setImmediate(renderNext);
      return;
  }
});
