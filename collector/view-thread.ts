import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { renderUnpackedJob, type JobView } from './job-view.js';
import { jobUnpacker, type JobRowsPage } from './stores/job-rows.js';

/** What the collector's loop sends its view thread (view-worker.ts). */
export type ToViewThread =
  { type: 'begin'; id: number; view: JobView; limit: number } | { type: 'rows'; id: number; page: JobRowsPage } | { type: 'end'; id: number } | { type: 'drop'; id: number };

/** What the view thread answers: the view's text (null: the job has no events), or why it could not render it. */
type FromViewThread = { id: number; text: string | null } | { id: number; error: string };

/** A job's rows, read a page per turn (EventStore.jobRows), at most `limit`. */
export interface JobRowsRead {
  limit: number;
  read(onPage: (page: JobRowsPage) => void, signal?: AbortSignal): Promise<void>;
}

/** A view the thread could not render (its error), or the thread stopped before it answered. */
export class ViewThreadError extends Error {}

/**
 * Smaller jobs are unpacked and rendered in the caller's turn: 10,000 rows take ~40-60 ms, about what sending them to
 * the thread and waiting for it costs the request.
 */
export const VIEW_THREAD_FROM = 10_000;

interface Waiting {
  resolve: (text: string | null) => void;
  reject: (err: Error) => void;
}

export interface ViewThreadOptions {
  /** Jobs of at least this many rows are unpacked and rendered in the thread (default VIEW_THREAD_FROM). */
  from?: number;
  /** The thread stops after this long without a view (its heap with it); the next view starts it again. */
  idleMs?: number;
  log?: Logger;
}

/**
 * Renders a large job's views off the collector's event loop. Unpacking 200,000 events, summarizing them and rendering
 * their page took ~1 s of the loop, ~0.6 s of it in one turn, with ingest and every other request waiting; here the
 * loop reads the job's rows a page per turn and sends each page to the thread as it comes (~0.45 µs a row), and the
 * thread unpacks them meanwhile, then renders the view.
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
   * The view's text, or null for a job without events. Rejects with `signal`'s reason once it is aborted (the client
   * went away): the read stops, and the thread forgets the view or its answer is dropped when it comes.
   */
  async render(view: JobView, rows: JobRowsRead, signal?: AbortSignal): Promise<string | null> {
    if (this.closed) throw new ViewThreadError('the collector is stopping');
    // The first pages are kept until the job is large enough for the thread; a smaller one is rendered here.
    const held: JobRowsPage[] = [];
    let heldRows = 0;
    let id: number | undefined;
    let answer: Promise<string | null> | undefined;
    let failed: unknown;
    const send = (message: ToViewThread) => this.worker?.postMessage(message);
    try {
      await rows.read((page) => {
        if (id === undefined) {
          held.push(page);
          heldRows += page.rows.length;
          if (heldRows < this.from) return;
          ({ id, answer } = this.begin(view, rows.limit));
          answer.catch((err: unknown) => (failed = err));
          for (const p of held.splice(0)) send({ type: 'rows', id, page: p });
          return;
        }
        // The thread stopped (its answer rejected): the read stops too, with why.
        if (!this.waiting.has(id)) throw failed ?? new ViewThreadError('the view thread stopped');
        send({ type: 'rows', id, page });
      }, signal);
      if (id === undefined) {
        const unpacker = held.length > 0 ? jobUnpacker(held[0]!.engine, view.job, rows.limit) : undefined;
        for (const page of held) unpacker!.add(page);
        return renderUnpackedJob(view, unpacker);
      }
      send({ type: 'end', id });
      return await abortable(answer!, signal);
    } catch (err) {
      if (id !== undefined && this.waiting.delete(id)) send({ type: 'drop', id });
      throw err;
    } finally {
      this.idleIfNothingWaits();
    }
  }

  /** A view's number and its answer to come, the thread started if it was not. */
  private begin(view: JobView, limit: number): { id: number; answer: Promise<string | null> } {
    const worker = this.start();
    const id = ++this.lastId;
    const answer = new Promise<string | null>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    worker.postMessage({ type: 'begin', id, view, limit } satisfies ToViewThread);
    return { id, answer };
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
    // close() ran while this view's first pages were read: no thread after it.
    if (this.closed) throw new ViewThreadError('the collector is stopping');
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
