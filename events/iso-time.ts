/*
 * Event times as `Date.prototype.toISOString` writes them: made (`isoTime`, the event log) and recognised (`isIsoTimeOf`,
 * the collector's body writer), each without the Date and string work V8 does per call.
 */

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

/**
 * Whether `text` is `new Date(ms).toISOString()`, without making either: the version 3 writer asks it of every event (a
 * canonical time is left out of the body) and the Date and its string were ~5x the cost of this (docs/collector.md,
 * "Seventh round"). The common shape, `YYYY-MM-DDTHH:MM:SS.sssZ` of a year 0-9999, is compared field by field with the
 * civil date of `ms` (days to year, month and day as in H. Hinnant's `civil_from_days`); any other text (another
 * length; an extended year of toISOString, `+YYYYYY-`) is compared with toISOString as before.
 */
const DAY = 86_400_000;

export function isIsoTimeOf(ms: number, text: string): boolean {
  if (!Number.isFinite(ms)) return false;
  if (text.length !== 24) return new Date(ms).toISOString() === text;
  const days = Math.floor(ms / DAY);
  let rest = ms - days * DAY;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor((dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36_524) - Math.floor(dayOfEra / 146_096)) / 365);
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const m = Math.floor((5 * dayOfYear + 2) / 153); // months from March
  const day = dayOfYear - Math.floor((153 * m + 2) / 5) + 1;
  const month = m < 10 ? m + 3 : m - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  if (year < 0 || year > 9999) return new Date(ms).toISOString() === text;
  const hour = Math.floor(rest / 3_600_000);
  rest -= hour * 3_600_000;
  const minute = Math.floor(rest / 60_000);
  rest -= minute * 60_000;
  const second = Math.floor(rest / 1000);
  const milli = rest - second * 1000;
  return (
    two(text, 0, Math.floor(year / 100)) &&
    two(text, 2, year % 100) &&
    text.charCodeAt(4) === 45 && // -
    two(text, 5, month) &&
    text.charCodeAt(7) === 45 &&
    two(text, 8, day) &&
    text.charCodeAt(10) === 84 && // T
    two(text, 11, hour) &&
    text.charCodeAt(13) === 58 && // :
    two(text, 14, minute) &&
    text.charCodeAt(16) === 58 &&
    two(text, 17, second) &&
    text.charCodeAt(19) === 46 && // .
    text.charCodeAt(20) === 48 + Math.floor(milli / 100) &&
    two(text, 21, milli % 100) &&
    text.charCodeAt(23) === 90 // Z
  );
}

/** Whether the two characters at `at` are `value` (0-99) in decimal. */
function two(text: string, at: number, value: number): boolean {
  return text.charCodeAt(at) === 48 + Math.floor(value / 10) && text.charCodeAt(at + 1) === 48 + (value % 10);
}
