import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReportBudget } from '../../dns/report-budget.js';

test('a report budget gives `limit` events a minute, counts the rest, and summarises them when the next minute starts', () => {
  const summaries: number[] = [];
  const budget = new ReportBudget(2, (n) => summaries.push(n));
  const t0 = 1_000_000;
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => budget.take(t0 + i)),
    [true, true, false, false],
  );
  assert.deepEqual(summaries, [], 'nothing summarised within the minute');
  assert.equal(budget.take(t0 + 60_000), false, 'still the same minute');
  assert.equal(budget.take(t0 + 60_001), true, 'a new minute');
  assert.deepEqual(summaries, [3]);
  assert.equal(budget.take(t0 + 60_002), true);
  assert.equal(budget.take(t0 + 130_000), true, 'nothing suppressed in the last minute: no summary');
  assert.deepEqual(summaries, [3]);
});

test('flush() summarises what the minute suppressed so far, once', () => {
  const summaries: number[] = [];
  const budget = new ReportBudget(1, (n) => summaries.push(n));
  [0, 1, 2].forEach((i) => budget.take(1_000 + i));
  budget.flush();
  budget.flush();
  assert.deepEqual(summaries, [2]);
});
