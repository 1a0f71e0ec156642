/**
 * A PostgreSQL array literal (`{1,NULL,3}`) of values whose text needs no quoting: integers, null, and uuid text (as
 * pg-key.ts makes it). The pg driver turns a JavaScript array into the same literal, but quotes and escapes every
 * element (two regular expressions each): for a batch's insert, ten such arrays a row, that was a measurable part of
 * the collector's CPU per event (docs/collector.md, "Fourth round: collector CPU per ingested event").
 */
export function plainArrayLiteral(values: ReadonlyArray<number | string | null>): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    out += v === null ? 'NULL' : v;
  }
  return `${out}}`;
}
