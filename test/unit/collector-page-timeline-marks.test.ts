import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderJobPage } from '../../collector/page.js';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { summarize } from '../../report/summary.js';

const START = Date.parse('2026-12-01T10:00:00.000Z');

/** Decisions to one destination, each at START + its millisecond, in this order (equal times keep it). */
function job(decisions: ReadonlyArray<{ ms: number; decision: 'allowed' | 'blocked' }>): EgressEvent[] {
  const log = new EventLog({ stdout: false, ci: { job_id: 'marks' } });
  const seen: EgressEvent[] = [];
  log.subscribe((e) => seen.push(e));
  for (const d of decisions) {
    log.decision({
      kind: 'connect',
      client: '127.0.0.1:1',
      host: 'busy.example.test',
      port: 443,
      decision: d.decision,
      reason: d.decision === 'allowed' ? 'allowed-endpoint' : 'not-allowed-endpoint',
      rule: null,
      message: '',
      mode: 'block',
    });
  }
  return seen.map((e, i) => ({ ...e, time: new Date(START + decisions[i]!.ms).toISOString() }));
}

interface Rect {
  x: number;
  end: number;
  y: number;
  fill: string;
  title: string;
}

function rects(html: string): Rect[] {
  const svg = /<svg id="timeline"[\s\S]*?<\/svg>/.exec(html)![0];
  return [...svg.matchAll(/<rect x="([\d.]+)" y="(\d+)" width="([\d.]+)" height="\d+" fill="([^"]+)"><title>([^<]*)<\/title><\/rect>/g)].map((m) => ({
    x: Number(m[1]),
    end: Number(m[1]) + Number(m[3]),
    y: Number(m[2]),
    fill: m[4]!,
    title: m[5]!,
  }));
}

/** Every blocked mark is drawn after (over) every other mark of its row that overlaps it. */
function assertBlockedOnTop(drawn: readonly Rect[]): void {
  const blocked = drawn.flatMap((r, i) => (r.title.includes('blocked') ? [i] : []));
  assert.ok(blocked.length > 0, 'a blocked mark is drawn');
  for (const i of blocked) {
    const b = drawn[i]!;
    drawn.forEach((r, j) => {
      if (j > i && r.y === b.y && !r.title.includes('blocked') && r.x < b.end && b.x < r.end) {
        assert.fail(`the blocked mark at x=${b.x}-${b.end} is drawn under "${r.title}" at x=${r.x}-${r.end}`);
      }
    });
  }
}

test('the timeline draws a blocked connection over the allowed ones around it: one mark each (up to 5,000 connections)', () => {
  // The blocked decision comes first at its millisecond; an allowed one at the same time was drawn over it.
  const decisions: Array<{ ms: number; decision: 'allowed' | 'blocked' }> = Array.from({ length: 100 }, (_, i) => ({ ms: i * 10, decision: 'allowed' }));
  decisions.splice(50, 0, { ms: 500, decision: 'blocked' });
  const summary = summarize(job(decisions));
  const drawn = rects(renderJobPage('marks', summary, '', 'nonce'));
  assert.equal(drawn.length, 101);
  assertBlockedOnTop(drawn);
});

test('the timeline draws a blocked connection over the merged allowed marks around it (past 5,000 connections)', () => {
  // 6,000 allowed connections, one a millisecond; the blocked one first in its 8 px column, the allowed ones of
  // that column after it: their merged mark was drawn over it, from nearly the same x on, and hid it.
  const decisions: Array<{ ms: number; decision: 'allowed' | 'blocked' }> = [];
  for (let ms = 0; ms < 6_000; ms++) {
    if (ms === 1_500) decisions.push({ ms, decision: 'blocked' });
    decisions.push({ ms, decision: 'allowed' });
  }
  const summary = summarize(job(decisions));
  const html = renderJobPage('marks', summary, '', 'nonce');
  assert.match(html, /6001 connections: those of one destination and decision within 8 pixels are drawn as one mark/);
  const drawn = rects(html);
  const counted = drawn.reduce((n, r) => n + (/^(\d+) \S+ connections, /.exec(r.title) ? Number(/^(\d+)/.exec(r.title)![1]) : 1), 0);
  assert.equal(counted, 6_001, 'every connection in one mark');
  assert.equal(drawn.filter((r) => r.title.startsWith('blocked ')).length, 1, 'the blocked connection a mark of its own');
  assertBlockedOnTop(drawn);
});
