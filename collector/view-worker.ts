import { parentPort } from 'node:worker_threads';
import { renderUnpackedJob, type JobView } from './job-view.js';
import { jobUnpacker, type JobUnpacker } from './stores/job-rows.js';
import type { ToViewThread } from './view-thread.js';

/**
 * The collector's view thread (started by view-thread.ts): unpacks a job's rows as the collector's loop sends them, a
 * page per message, then renders the view and sends its text back. Views are rendered one at a time, in the order
 * their last page came, each in a turn of its own; a view dropped (its client went away) before its turn is forgotten.
 */
if (!parentPort) throw new Error("collector/view-worker.js runs as the collector's worker thread only");
const port = parentPort;
const gathering = new Map<number, { view: JobView; limit: number; unpacker?: JobUnpacker }>();
// The views whose last page came, to render in that order. Rendered in the 'end' message's own turn, a view dropped
// while the thread rendered others (its 'drop' queued behind its 'end') was rendered all the same, for nobody, and the
// views after it waited for that; the messages that came meanwhile are read before the next turn.
const ready: number[] = [];

function answer(id: number, render: () => string | null): void {
  try {
    port.postMessage({ id, text: render() });
  } catch (err) {
    port.postMessage({ id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
}

function renderNext(): void {
  const id = ready.shift()!;
  if (ready.length > 0) setImmediate(renderNext);
  const gathered = gathering.get(id);
  if (!gathered) return; // dropped
  gathering.delete(id);
  answer(id, () => renderUnpackedJob(gathered.view, gathered.unpacker));
}

port.on('message', (message: ToViewThread) => {
  switch (message.type) {
    case 'begin':
      gathering.set(message.id, { view: message.view, limit: message.limit });
      return;
    case 'rows': {
      const gathered = gathering.get(message.id);
      if (!gathered) return;
      try {
        gathered.unpacker ??= jobUnpacker(message.page.engine, gathered.view.job, gathered.limit);
        gathered.unpacker.add(message.page);
      } catch (err) {
        // A row it cannot unpack: the view fails now, and its later pages are ignored.
        gathering.delete(message.id);
        answer(message.id, () => {
          throw err;
        });
      }
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
