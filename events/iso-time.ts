/** `000Z` to `999Z`: how an ISO time ends after its second, by millisecond. */
const MILLIS = Array.from({ length: 1000 }, (_, ms) => `${String(ms).padStart(3, '0')}Z`);

/** The second the cached prefix is for, and the prefix: `new Date(ms).toISOString()` up to and including the `.`. */
let prefixSecond = Number.NaN;
let prefix = '';

/**
 * `new Date(ms).toISOString()` for a time in whole milliseconds (Date.now()), the text up to the second made once per
 * second: V8 formats the whole string with snprintf on every call, which was 2% of the main thread's instructions per
 * tunnel (two events, each in a new millisecond at c=10: docs/benchmark.md, "Issue 14, eighth round"). Any other
 * number (a fraction, out of Date's range) goes to toISOString as it is.
 */
export function isoTime(ms: number): string {
  if (!Number.isInteger(ms)) return new Date(ms).toISOString();
  const second = Math.floor(ms / 1000);
  if (second === prefixSecond) return prefix + MILLIS[ms - second * 1000]!;
  const iso = new Date(ms).toISOString();
  prefixSecond = second;
  prefix = iso.slice(0, -4);
  return iso;
}
