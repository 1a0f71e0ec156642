import type { JobPage, JobQuery } from './stores/event-store.js';
import { formatBytes, review, type ReviewRow } from '../report/review.js';
import { destinationKey, type Connection, type Summary } from '../report/summary.js';

/** Escape text for HTML element content and quoted attribute values. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function jobPath(job: string): string {
  return `/jobs/${encodeURIComponent(job)}`;
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px;max-width:1200px}
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}td.num{text-align:right}td.time,td code{white-space:nowrap}
tr.blocked td{background:#ffebe9}tr.would-block td{background:#fff8c5}tr.flagged td:first-child{box-shadow:inset 4px 0 #cf222e}.flag{display:inline-block;padding:0 6px;border-radius:8px;background:#cf222e;color:#fff;font-size:12px;margin:1px}td.num{white-space:nowrap}ul.findings{border-left:4px solid #cf222e;padding:6px 6px 6px 28px;background:#ffebe9}
.badge{display:inline-block;white-space:nowrap;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff}
.badge.blocked{background:#cf222e}.badge.would-block{background:#9a6700}.badge.allowed{background:#1a7f37}
.totals span{margin-right:16px}
pre{background:#fff;border:1px solid #d0d7de;padding:12px;overflow:auto}
button{font:inherit;padding:4px 12px;cursor:pointer}
.muted{color:#57606a}svg{background:#fff;border:1px solid #d0d7de}
`;

function layout(title: string, body: string, nonce: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>${STYLE}</style></head>
<body><header><a href="/">egress-guard collector</a></header><main>
${body}
</main>
<script nonce="${esc(nonce)}">
document.querySelectorAll('button[data-copy]').forEach(function (button) {
  button.addEventListener('click', function () {
    var text = document.getElementById(button.getAttribute('data-copy')).textContent;
    var done = function () { button.textContent = 'Copied'; setTimeout(function () { button.textContent = 'Copy policy'; }, 2000); };
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); return; }
    var area = document.createElement('textarea'); area.value = text; document.body.appendChild(area);
    area.select(); document.execCommand('copy'); document.body.removeChild(area); done();
  });
});
${SEARCH_SCRIPT}
</script></body></html>
`;
}

export function contentSecurityPolicy(nonce: string): string {
  return `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`;
}

function badge(decision: string): string {
  return `<span class="badge ${esc(decision)}">${esc(decision)}</span>`;
}

/** The host search box: asks GET /api/v1/search and draws the answer with text nodes only (no HTML from data). */
const SEARCH_SCRIPT = `
(function () {
  var form = document.getElementById('search');
  if (!form) return;
  var out = document.getElementById('search-results');
  var cursor = null;
  var shown = 0;
  function cell(row, text, cls) { var td = document.createElement('td'); td.textContent = String(text); if (cls) td.className = cls; row.appendChild(td); return td; }
  function show(answer, append) {
    if (!append) { out.textContent = ''; shown = 0; }
    shown += answer.jobs.length;
    var table = out.querySelector('table');
    if (!table) {
      var p = document.createElement('p'); p.id = 'search-total'; out.appendChild(p);
      table = document.createElement('table'); table.id = 'search-table';
      var head = table.createTHead().insertRow();
      ['Job', 'Hosts', 'First seen', 'Last seen', 'Decisions', 'Blocked', 'Bytes out'].forEach(function (h) { var th = document.createElement('th'); th.textContent = h; head.appendChild(th); });
      table.createTBody(); out.appendChild(table);
    }
    // total: only when the collector knew it cheaply; otherwise the jobs shown so far, and a + when more follow.
    var count = typeof answer.total === 'number' ? String(answer.total) : shown + (answer.more ? '+' : '');
    out.querySelector('#search-total').textContent = count + ' job(s) talked to ' + answer.host;
    answer.jobs.forEach(function (j) {
      var row = table.tBodies[0].insertRow();
      if (j.blocked > 0) row.className = 'blocked';
      var a = document.createElement('a'); a.href = '/jobs/' + encodeURIComponent(j.job); a.textContent = j.job;
      cell(row, '').appendChild(a);
      cell(row, j.hosts.join(', ')); cell(row, j.first); cell(row, j.last); cell(row, j.decisions, 'num'); cell(row, j.blocked, 'num'); cell(row, j.bytesOut, 'num');
    });
    var more = document.getElementById('search-more');
    if (more) more.remove();
    if (answer.next !== null) {
      more = document.createElement('button'); more.id = 'search-more'; more.type = 'button'; more.textContent = 'More';
      more.addEventListener('click', function () { cursor = answer.next; run(true); });
      out.appendChild(more);
    }
  }
  function run(append) {
    var params = new URLSearchParams(new FormData(form));
    if (cursor) params.set('cursor', cursor);
    fetch('/api/v1/search?' + params.toString()).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) { out.textContent = body.error || ('search failed: ' + res.status); return; }
        show(body, append);
      });
    }, function (err) { out.textContent = 'search failed: ' + err; });
  }
  form.addEventListener('submit', function (e) { e.preventDefault(); cursor = null; run(false); });
})();`;

/** The job list with the same filter and page size (`limit` kept when it is not the page's own). */
function jobsLink(query: JobQuery, cursor?: string, pageSize = 100): string {
  const params = new URLSearchParams();
  if (query.repository) params.set('repository', query.repository);
  if (query.limit !== undefined && query.limit !== pageSize) params.set('limit', String(query.limit));
  if (cursor) params.set('cursor', cursor);
  const text = params.toString();
  return text ? `/?${text}` : '/';
}

export function renderJobsPage(page: JobPage, query: JobQuery, nonce: string): string {
  const rows = page.jobs.map((j) => {
    const cls = j.blocked > 0 ? 'blocked' : j.wouldBlock > 0 ? 'would-block' : '';
    return (
      `<tr class="${cls}"><td><a href="${esc(jobPath(j.job))}">${esc(j.job)}</a></td><td>${esc(j.first)}</td><td>${esc(j.last)}</td>` +
      `<td class="num">${j.decisions}</td><td class="num">${j.allowed}</td><td class="num">${j.wouldBlock}</td><td class="num">${j.blocked}</td><td>${esc(j.repository ?? '')}</td></tr>`
    );
  });
  const search = `<h2>Which jobs talked to a host?</h2>
<form id="search" role="search"><input name="host" required placeholder="codecov.io, *.codecov.io, 203.0.113.7" size="32" aria-label="host pattern">
<input name="since" placeholder="since (ISO time)" size="22" aria-label="since"><button type="submit">Search</button></form>
<div id="search-results"></div>`;
  const filter = `<form id="repository-filter" method="get" action="/"><input name="repository" value="${esc(query.repository ?? '')}" placeholder="owner/repository" aria-label="repository">
<button type="submit">Filter</button>${query.repository ? ` <a href="/">all repositories</a>` : ''}</form>`;
  const nav = [
    query.cursor ? `<a id="first-page" href="${esc(jobsLink(query))}">first page</a>` : '',
    page.next ? `<a id="next-page" href="${esc(jobsLink(query, page.next))}">next page</a>` : '',
  ]
    .filter(Boolean)
    .join(' ');
  const list =
    page.jobs.length === 0
      ? query.repository || query.cursor
        ? '<p class="muted">No jobs here.</p>'
        : '<p class="muted">No events received yet. Point a proxy at this collector with EGRESS_COLLECTOR_URL.</p>'
      : `<table id="jobs"><thead><tr><th>Job</th><th>First seen</th><th>Last seen</th><th>Decisions</th><th>Allowed</th><th>Would-block</th><th>Blocked</th><th>Repository</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table>`;
  const body = `<h1>Jobs</h1>${filter}${list}<p class="pages">${nav}</p>${search}`;
  return layout('egress-guard: jobs', body, nonce);
}

/** A time of day (UTC) with the full timestamp on hover. */
function timeCell(time: string): string {
  const short = /T(\d\d:\d\d:\d\d(\.\d+)?)/.exec(time)?.[1] ?? time;
  return `<td class="time" title="${esc(time)}">${esc(short)}</td>`;
}

/** Addresses a destination's row shows; the rest are counted (a CDN name in a long job: thousands). */
const ADDRESSES_SHOWN = 20;

function addressList(ips: readonly string[]): string {
  return ips.length <= ADDRESSES_SHOWN ? ips.join(', ') : `${ips.slice(0, ADDRESSES_SHOWN).join(', ')} and ${ips.length - ADDRESSES_SHOWN} more`;
}

function destinationRows(rows: readonly ReviewRow[]): string {
  return rows
    .map(
      (r) =>
        `<tr class="${esc(r.decision)}${r.flags.length > 0 ? ' flagged' : ''}"><td>${badge(r.decision)}</td><td><code>${esc(r.label)}</code></td>` +
        `<td>${esc(r.kinds.join(', '))}</td><td class="num">${r.count}</td>${timeCell(r.first)}${timeCell(r.last)}` +
        `<td>${esc(r.reasons.join(', '))}</td><td>${esc(addressList(r.ips))}</td><td class="num" title="${r.bytesIn} bytes">${esc(formatBytes(r.bytesIn))}</td>` +
        `<td class="num" title="${r.bytesOut} bytes">${esc(formatBytes(r.bytesOut))}</td>` +
        `<td class="flags">${r.flags.map((f) => `<span class="flag" title="${esc(f.text)}">${esc(f.id)}</span>`).join(' ')}</td></tr>`,
    )
    .join('\n');
}

/** The rows that look like an attack, first and in words. */
function findings(rows: readonly ReviewRow[]): string {
  const flagged = rows.filter((r) => r.flags.length > 0);
  if (flagged.length === 0) return '';
  const items = flagged.flatMap((r) => r.flags.map((f) => `<li><code>${esc(r.label)}</code> (${esc(r.decision)}): ${esc(f.text)}</li>`));
  return `<h2 id="findings">Looks like an attack, not a missing allowlist entry</h2><ul class="findings">${items.join('')}</ul>`;
}

const COLORS: Record<string, string> = { blocked: '#cf222e', 'would-block': '#bf8700', allowed: '#1a7f37' };
const TIMELINE_ROWS = 60;
/** Which marks are drawn over which: the strictest decision on top (Array.prototype.sort is stable). */
const DRAW_ORDER: Record<string, number> = { allowed: 1, 'would-block': 2, blocked: 3 };
/**
 * Up to this many connections the timeline draws a mark per connection; past it, the connections of one destination
 * and one decision within MERGED_COLUMN_PX of each other are one mark titled with their count. A job of 200,000 events
 * drew ~100,000 marks (a page of 10 MiB that a browser barely lays out); merged, at most 80 per row and decision.
 */
const MARKS_EACH_UP_TO = 5_000;
const MERGED_COLUMN_PX = 8;

interface Mark {
  x: number;
  /** Where the last connection of the mark ends (px). */
  end: number;
  row: number;
  decision: string;
  count: number;
  /** The tooltip of a mark of one connection. */
  tip: string;
  first: string;
  last: string;
}

function connectionTip(c: Connection): string {
  return `${c.decision} ${destinationKey(c.host, c.port)} (${c.kind}) at ${c.time}${c.durationMs !== undefined ? `, ${c.durationMs} ms, ${formatBytes(c.bytesIn ?? 0)} in / ${formatBytes(c.bytesOut ?? 0)} out` : ''}`;
}

/** One row per destination, marks for its connections, from the first to the last decision of the job. */
function timeline(summary: Summary): string {
  if (!summary.first || summary.connections.length === 0) return '<p class="muted">No connections.</p>';
  const start = Date.parse(summary.first);
  // A loop, not Math.max(...ends): a spread of more than ~120,000 values overflows the stack (the page failed for such a job).
  let lastEnd = start;
  for (const c of summary.connections) lastEnd = Math.max(lastEnd, Date.parse(c.time) + (c.durationMs ?? 0));
  const span = Math.max(1, lastEnd - start);
  const rows = summary.destinations.slice(0, TIMELINE_ROWS);
  const label = 260;
  const plot = 640;
  const rowHeight = 18;
  const height = rows.length * rowHeight + 30;
  const rowOf = new Map(rows.map((d, i) => [destinationKey(d.host, d.port), i]));
  const merge = summary.connections.length > MARKS_EACH_UP_TO;
  const marks: Mark[] = [];
  const merged = new Map<string, Mark>();
  for (const c of summary.connections) {
    const row = rowOf.get(destinationKey(c.host, c.port));
    if (row === undefined) continue;
    const x = label + ((Date.parse(c.time) - start) / span) * plot;
    const end = x + Math.max(3, ((c.durationMs ?? 0) / span) * plot);
    if (!merge) {
      marks.push({ x, end, row, decision: c.decision, count: 1, tip: connectionTip(c), first: c.time, last: c.time });
      continue;
    }
    const key = `${row} ${Math.floor((x - label) / MERGED_COLUMN_PX)} ${c.decision}`;
    const mark = merged.get(key);
    if (!mark) merged.set(key, { x, end, row, decision: c.decision, count: 1, tip: connectionTip(c), first: c.time, last: c.time });
    else {
      mark.count++;
      mark.end = Math.max(mark.end, end);
      mark.last = c.time;
    }
  }
  // Blocked marks drawn last, over the rest, then would-block ones: in time order an allowed mark at the same place
  // (a connection at the same time, or a merged mark starting just after) was drawn over a blocked one and hid it.
  const drawn = (merge ? [...merged.values()] : marks).sort((a, b) => (DRAW_ORDER[a.decision] ?? 0) - (DRAW_ORDER[b.decision] ?? 0));
  const rects = drawn.map((m) => {
    const title = m.count === 1 ? m.tip : `${m.count} ${m.decision} connections, ${m.first} to ${m.last}`;
    return `<rect x="${m.x.toFixed(1)}" y="${m.row * rowHeight + 4}" width="${(m.end - m.x).toFixed(1)}" height="${rowHeight - 8}" fill="${COLORS[m.decision] ?? '#57606a'}"><title>${esc(title)}</title></rect>`;
  });
  const labels = rows.map((d, i) => `<text x="4" y="${i * rowHeight + 13}" font-size="12">${esc(destinationKey(d.host, d.port).slice(0, 40))}</text>`);
  const axis =
    `<line x1="${label}" y1="${rows.length * rowHeight + 2}" x2="${label + plot}" y2="${rows.length * rowHeight + 2}" stroke="#8c959f"/>` +
    `<text x="${label}" y="${height - 6}" font-size="11">${esc(summary.first)}</text>` +
    `<text x="${label + plot}" y="${height - 6}" font-size="11" text-anchor="end">+${(span / 1000).toFixed(1)} s</text>`;
  const more = summary.destinations.length > TIMELINE_ROWS ? `<p class="muted">${summary.destinations.length - TIMELINE_ROWS} more destinations not drawn.</p>` : '';
  const mergedNote = merge
    ? `<p class="muted">${summary.connections.length} connections: those of one destination and decision within ${MERGED_COLUMN_PX} pixels are drawn as one mark, titled with their count.</p>`
    : '';
  return `<svg id="timeline" role="img" aria-label="Connections over time" width="${label + plot + 10}" height="${height}" xmlns="http://www.w3.org/2000/svg">${labels.join('')}${rects.join('')}${axis}</svg>${more}${mergedNote}`;
}

export function renderJobPage(job: string, summary: Summary, policyYaml: string, nonce: string): string {
  const t = summary.totals;
  const rows = review(summary);
  const body = `<h1>Job <code>${esc(job)}</code></h1>
<p class="totals"><span>${summary.decisions} decisions</span><span>${summary.destinations.length} destinations</span>
<span>${badge('allowed')} ${t.allowed}</span><span>${badge('would-block')} ${t['would-block']}</span><span>${badge('blocked')} ${t.blocked}</span></p>
<p class="muted">${esc(summary.first ?? '')} to ${esc(summary.last ?? '')}</p>
${findings(rows)}
<h2>Destinations</h2>
<table id="destinations"><thead><tr><th>Decision</th><th>Destination</th><th>Kinds</th><th>Count</th><th>First seen</th><th>Last seen</th><th>Reason</th><th>Addresses</th><th>In</th><th>Out</th><th>Looks like</th></tr></thead>
<tbody>${destinationRows(rows)}</tbody></table>
<h2>Timeline</h2>
${timeline(summary)}
<h2>Suggested policy</h2>
<p class="muted">The smallest allowlist that lets this job pass in block mode. <button type="button" data-copy="policy">Copy policy</button>
<a href="/api/v1/jobs/${esc(encodeURIComponent(job))}/policy">download</a></p>
<pre id="policy">${esc(policyYaml)}</pre>`;
  return layout(`egress-guard: ${job}`, body, nonce);
}

export function renderNotFoundPage(what: string, nonce: string): string {
  return layout('egress-guard: not found', `<h1>Not found</h1><p>${esc(what)}</p>`, nonce);
}
