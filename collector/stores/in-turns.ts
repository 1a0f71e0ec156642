/**
 * Rows a long read handles per event-loop turn (a job's view: up to 200,000 events, ~5 µs each to unpack, and on
 * SQLite about as long again to read). In one turn such a read held the collector's loop for ~2 s, and ingest and
 * every other request with it. 10,000 rows a turn took ~50 ms (SQLite), up to ~0.2 s when a collection of the growing
 * heap fell in the turn; 2,500 rows take ~15 ms, the whole read as long. The reader awaits `nextTurn()` between two
 * chunks.
 */
export const ROWS_PER_TURN = 2_500;

export { setImmediate as nextTurn } from 'node:timers/promises';
