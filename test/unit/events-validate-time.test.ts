import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dateTextMs, isDateText, validateEvent } from '../../events/validate.js';

/** Date.parse's verdict, which isDateText must give whether or not it takes its fast path. */
const parses = (text: string) => !Number.isNaN(Date.parse(text));

/** isDateText's verdict and dateTextMs's number are Date.parse's. */
function sameAsDateParse(text: string): void {
  assert.equal(isDateText(text), parses(text), text);
  assert.equal(dateTextMs(text), Date.parse(text), text);
}

const TEMPLATE = '2026-11-30T12:31:44.090Z';
/** Characters tried at each position: digits, the separators, and what Date.parse may or may not accept there. */
const CHARS = '0123456789-T:.Z+ tz/,xX\u0660';

test('isDateText and dateTextMs give the verdict and number of Date.parse on every one-character change of an ISO time', () => {
  for (let i = 0; i < TEMPLATE.length; i++) {
    for (const c of CHARS) {
      const text = TEMPLATE.slice(0, i) + c + TEMPLATE.slice(i + 1);
      sameAsDateParse(text);
    }
    const dropped = TEMPLATE.slice(0, i) + TEMPLATE.slice(i + 1);
    sameAsDateParse(dropped);
  }
});

test('isDateText and dateTextMs give the verdict and number of Date.parse on every month, day, hour, minute and second at its bounds', () => {
  const two = (n: number) => String(n).padStart(2, '0');
  for (const year of ['0000', '0001', '0099', '0100', '0399', '0400', '1900', '1969', '1970', '2000', '2024', '2026', '2100', '9999']) {
    for (let month = 0; month <= 13; month++) {
      for (let day = 0; day <= 32; day++) {
        for (const [h, m, s] of [
          [0, 0, 0],
          [23, 59, 59],
          [24, 0, 0],
          [12, 60, 0],
          [12, 0, 60],
        ] as const) {
          for (const ms of ['000', '001', '999']) {
            const text = `${year}-${two(month)}-${two(day)}T${two(h)}:${two(m)}:${two(s)}.${ms}Z`;
            sameAsDateParse(text);
          }
        }
      }
    }
  }
});

test('isDateText and dateTextMs give the verdict and number of Date.parse on random times and on other shapes', () => {
  let seed = 16;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 20_000; i++) {
    const text = new Date(Math.floor(random() * 8.64e15 * 2) - 8.64e15).toISOString();
    sameAsDateParse(text);
  }
  for (const text of [
    '',
    'now',
    '2026-11-30',
    '2026-11-30T12:31:44Z',
    '2026-11-30T12:31:44.09Z',
    '2026-11-30T12:31:44.0901Z',
    'Mon, 30 Nov 2026 12:31:44 GMT',
    '+002026-11-30T12:31:44.090Z',
  ])
    sameAsDateParse(text);
});

test('validateEvent refuses an event whose time is not a date, and keeps one whose time is', () => {
  const event = { schema: 1, event: 'close', id: 'x', time: TEMPLATE, kind: 'connect', client: 'c', host: 'h.test', port: 443, bytes_in: 1, bytes_out: 2, duration_ms: 3 };
  assert.equal(validateEvent({ ...event }).time, TEMPLATE);
  assert.throws(() => validateEvent({ ...event, time: '2026-13-30T12:31:44.090Z' }), /"time" is not a date/);
  assert.throws(() => validateEvent({ ...event, time: '2026-11-30T25:31:44.090Z' }), /"time" is not a date/);
});
