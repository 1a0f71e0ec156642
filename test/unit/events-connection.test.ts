import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Connection } from '../../events/connection.js';
import { EventLog } from '../../events/event-log.js';
import { CLOSE_ERRORS, DECISION_REASONS, type EgressEvent } from '../../events/schema.js';
import { validateEvent } from '../../events/validate.js';

const EVENTS_DOC = fileURLToPath(new URL('../../../docs/events.md', import.meta.url));

function recording(): { events: EventLog; seen: EgressEvent[] } {
  const events = new EventLog({ stdout: false });
  const seen: EgressEvent[] = [];
  events.subscribe((e) => seen.push(e));
  return { events, seen };
}

describe('connection record', () => {
  it('writes one close event with the fields of its decision, however often it is closed', () => {
    const { events, seen } = recording();
    const started = Date.now() - 25;
    const connection = new Connection(events, { id: 'd-1', kind: 'connect', client: '127.0.0.1:5000', host: 'example.test', port: 443, ip: '203.0.113.7' }, started);
    assert.equal(connection.closed, false);
    const first = connection.close({ bytesIn: 10, bytesOut: 3, error: 'idle-timeout' });
    const second = connection.close({ bytesIn: 99, error: 'client-aborted' });
    assert.equal(connection.closed, true);
    assert.equal(seen.length, 1);
    assert.equal(second, first);
    const close = validateEvent(JSON.parse(JSON.stringify(seen[0])));
    assert.equal(close.event, 'close');
    if (close.event !== 'close') return;
    assert.deepEqual(
      {
        id: close.id,
        kind: close.kind,
        client: close.client,
        host: close.host,
        port: close.port,
        ip: close.ip,
        bytes_in: close.bytes_in,
        bytes_out: close.bytes_out,
        error: close.error,
      },
      { id: 'd-1', kind: 'connect', client: '127.0.0.1:5000', host: 'example.test', port: 443, ip: '203.0.113.7', bytes_in: 10, bytes_out: 3, error: 'idle-timeout' },
    );
    assert.ok(close.duration_ms >= 25, `duration counts from the start given (${close.duration_ms})`);
    assert.equal('status' in close, false);
  });

  it('a failed request without an address closes with its status and no ip', () => {
    const { events, seen } = recording();
    new Connection(events, { id: 'd-2', kind: 'http', client: '[::1]:6000', host: 'nowhere.test', port: 80 }).close({ status: 502, error: 'upstream-dns' });
    const close = seen[0]!;
    assert.equal(close.event, 'close');
    assert.equal('ip' in close, false);
    if (close.event === 'close') {
      assert.equal(close.status, 502);
      assert.equal(close.bytes_in, 0);
      assert.equal(close.bytes_out, 0);
    }
  });
});

describe('close error values', () => {
  it('docs/events.md lists every decision reason of DECISION_REASONS, and no other', () => {
    const doc = readFileSync(EVENTS_DOC, 'utf8');
    const section = doc.slice(doc.indexOf('### Reasons'), doc.indexOf('\n## ', doc.indexOf('### Reasons')));
    const documented = [...section.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual([...documented].sort(), [...DECISION_REASONS].sort());
  });

  it('docs/events.md lists every value of CLOSE_ERRORS, and no other fixed value', () => {
    const doc = readFileSync(EVENTS_DOC, 'utf8');
    const section = doc.slice(doc.indexOf('### Close errors'), doc.indexOf('## Example'));
    const documented = [...section.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual([...documented].sort(), Object.keys(CLOSE_ERRORS).sort());
  });
});
