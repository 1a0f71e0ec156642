import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { EgressEvent } from '../events/schema.js';
import { renderJobView, type JobView } from './job-view.js';
import { nextTurn, ROWS_PER_TURN } from './stores/in-turns.js';

/** What the collector's loop sends its view thread (view-worker.ts). */
export type ToViewThread =
  { type: 'begin'; id: number; view: JobView } | { type: 'events'; id: number; events: EgressEvent[] } | { type: 'end'; id: number } | { type: 'drop'; id: number };

/** What the view thread answers: the view's text, or why it could not render it. */
type FromViewThread = { id: number; text: string } | { id: number; error: string };

/** A view the thread could not render (its error), or the thread stopped before it answered. */
export class ViewThreadError extends Error {}

/**
 * Smaller jobs are rendered in the caller's turn: 10,000 events take ~30-50 ms to summarize and render, about what
 * sending them to the thread and waiting for it costs the request.
 */
export const VIEW_THREAD_FROM = 10_000;

interface Waiting {
  resolve: (text: string) => void;
  reject: (err: Error) => void;
}

export interface ViewThreadOptions {
  /** Jobs of at least this many events are rendered in the thread (default VIEW_THREAD_FROM). */
  from?: number;
  /** The thread stops after this long without a view (its heap with it); the next view starts it again. */
  idleMs?: number;
  log?: Logger;
}

/**
 * Renders a large job's views off the collector's event loop. Summarizing 200,000 events and rendering their page
 * took ~0.6-0.8 s in one turn, with ingest and every other request waiting; here the loop only copies the events to
 * the thread, a chunk of ROWS_PER_TURN per turn (~0.6 µs per event), and the thread does the rest.
 */
export class ViewThread {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private lastId = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly from: number;
  private readonly idleMs: number;

  constructor(private readonly options: ViewThreadOptions = {}) {
    this.from = options.from ?? VIEW_THREAD_FROM;
    this.idleMs = options.idleMs ?? 60_000;
  }

  /**
   * The view's text. Rejects with `signal`'s reason once it is aborted (the client went away): the thread then
   * forgets the view, or its answer is dropped when it comes.
   */
  async render(view: JobView, events: readonly EgressEvent[], signal?: AbortSignal): Promise<string> {
    if (events.length < this.from) return renderJobView(view, events);
    if (this.closed) throw new ViewThreadError('the collector is stopping');
    const worker = this.start();
    const id = ++this.lastId;
    const answer = new Promise<string>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    // Rejected while this call still sends chunks (the thread stopped): awaited below, not unhandled meanwhile.
    answer.catch(() => {});
    const send = (message: ToViewThread) => worker.postMessage(message);
    try {
      send({ type: 'begin', id, view });
      for (let at = 0; at < events.length; at += ROWS_PER_TURN) {
        if (at > 0) {
          await nextTurn();
          signal?.throwIfAborted();
          if (!this.waiting.has(id)) break; // the thread stopped: `answer` says why
        }
        send({ type: 'events', id, events: events.slice(at, at + ROWS_PER_TURN) });
      }
      send({ type: 'end', id });
      return await abortable(answer, signal);
    } catch (err) {
      if (this.waiting.delete(id)) send({ type: 'drop', id });
      throw err;
    } finally {
      this.idleIfNothingWaits();
    }
  }

  /** Whether the thread is started (it stops when idle). */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Stop the thread; views waiting for it reject. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop(new ViewThreadError('the collector is stopping'));
  }

  private start(): Worker {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.worker) return this.worker;
    // view-worker.js sits beside this module: both in dist/collector/ (tsc), both in dist/chunks/ (the CLI bundle,
    // scripts/build-cli-bundle.mjs).
    const worker = new Worker(new URL('./view-worker.js', import.meta.url));
    // The collector's server keeps the process alive; a thread waiting for work should not.
    worker.unref();
    worker.on('message', (message: FromViewThread) => {
      const waiting = this.waiting.get(message.id);
      if (!waiting) return; // dropped: its client went away
      this.waiting.delete(message.id);
      if ('text' in message) waiting.resolve(message.text);
      else waiting.reject(new ViewThreadError(`the view thread could not render the view: ${message.error}`));
    });
    const stopped = (why: Error) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.failWaiting(why);
    };
    worker.on('error', (err) => {
      this.options.log?.error({ err }, 'collector: the view thread failed; the next large view starts another');
      stopped(new ViewThreadError(`the view thread failed: ${err.message}`));
    });
    worker.on('exit', (code) => stopped(new ViewThreadError(`the view thread exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private failWaiting(why: Error): void {
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) w.reject(why);
  }

  private idleIfNothingWaits(): void {
    if (this.waiting.size > 0 || !this.worker || this.idleTimer) return;
    this.idleTimer = setTimeout(() => void this.stop(), this.idleMs);
    this.idleTimer.unref();
  }

  private async stop(why: Error = new ViewThreadError('the view thread stopped')): Promise<void> {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const worker = this.worker;
    if (!worker) return;
    this.worker = undefined;
    this.failWaiting(why);
    await worker.terminate();
  }
}

/** `promise`, or `signal`'s reason once it is aborted. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const aborted = () => reject(signal.reason);
    signal.addEventListener('abort', aborted, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', aborted));
  });
}
