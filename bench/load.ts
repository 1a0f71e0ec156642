import { performance } from 'node:perf_hooks';

export interface LoadOptions {
  /** Stop after this many requests have been started... */
  count: number;
  /** ...or once this much time has passed, whichever comes first. */
  timeCapMs: number;
  concurrency: number;
  task: () => Promise<void>;
}

export interface LoadResult {
  started: number;
  completed: number;
  failed: number;
  elapsedMs: number;
  /** Latency of each completed request, ms. */
  latenciesMs: number[];
  /** Error message -> count. */
  errors: Record<string, number>;
}

/**
 * Closed-loop load: `concurrency` workers each run one request at a time until `count` requests were
 * started or `timeCapMs` passed. Requests in flight at the cap finish (each task bounds itself).
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const result: LoadResult = { started: 0, completed: 0, failed: 0, elapsedMs: 0, latenciesMs: [], errors: {} };
  const begin = performance.now();
  const deadline = begin + options.timeCapMs;
  const worker = async () => {
    while (result.started < options.count && performance.now() < deadline) {
      result.started++;
      const t0 = performance.now();
      try {
        await options.task();
        result.latenciesMs.push(performance.now() - t0);
        result.completed++;
      } catch (err) {
        result.failed++;
        const message = (err as Error).message ?? String(err);
        result.errors[message] = (result.errors[message] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency) }, worker));
  result.elapsedMs = performance.now() - begin;
  return result;
}
