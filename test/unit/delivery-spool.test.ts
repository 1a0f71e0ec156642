import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SpoolBuffer } from '../../events/delivery/spool.js';
import { MemoryBuffer } from '../../events/delivery/event-buffer.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'egress-spool-'));
  dirs.push(dir);
  return dir;
}
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function drain(buffer: SpoolBuffer | MemoryBuffer, maxEvents = 3, maxBytes = 1 << 20): string[] {
  const out: string[] = [];
  for (let batch = buffer.take(maxEvents, maxBytes); batch; batch = buffer.take(maxEvents, maxBytes)) {
    out.push(...batch.lines);
    batch.commit();
  }
  return out;
}

describe('on-disk spool', () => {
  it('keeps undelivered events across a restart and resumes after the acknowledged ones', () => {
    const dir = tempDir();
    const first = new SpoolBuffer(dir, { maxBytes: 1 << 20 });
    for (let i = 0; i < 10; i++) assert.ok(first.append(`{"n":${i}}`));
    const batch = first.take(4, 1 << 20)!;
    assert.deepEqual(batch.lines, ['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}']);
    batch.commit();
    // A batch taken but not acknowledged (delivery in flight at the crash) is delivered again.
    assert.equal(first.take(2, 1 << 20)!.lines[0], '{"n":4}');
    first.close();

    const second = new SpoolBuffer(dir, { maxBytes: 1 << 20 });
    assert.equal(second.pending, 6);
    second.append('{"n":10}');
    assert.deepEqual(
      drain(second),
      [4, 5, 6, 7, 8, 9, 10].map((n) => `{"n":${n}}`),
    );
    assert.equal(second.pending, 0);
    assert.equal(second.diskBytes, 0);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.ack')),
      [],
      'no acknowledgement left once all is delivered',
    );
    second.close();
  });

  it('skips a line cut short by a crash and counts it', () => {
    const dir = tempDir();
    const first = new SpoolBuffer(dir, { maxBytes: 1 << 20 });
    first.append('{"n":1}');
    first.close();
    const segment = readdirSync(dir).find((f) => f.endsWith('.ndjson'))!;
    appendFileSync(join(dir, segment), '{"n":2, "cut');
    const second = new SpoolBuffer(dir, { maxBytes: 1 << 20 });
    second.append('{"n":3}');
    assert.deepEqual(drain(second), ['{"n":1}', '{"n":3}']);
    assert.equal(second.discarded, 1);
    second.close();
  });

  it('refuses events beyond its size and rotates segments, deleting delivered ones', () => {
    const dir = tempDir();
    const spool = new SpoolBuffer(dir, { maxBytes: 100, segmentBytes: 30 });
    let accepted = 0;
    for (let i = 0; i < 20; i++) if (spool.append(`{"event":${String(i).padStart(3, '0')}}`)) accepted++;
    assert.equal(accepted, 7, '14-byte lines into 100 bytes');
    assert.ok(readdirSync(dir).filter((f) => f.endsWith('.ndjson')).length >= 3);
    assert.equal(drain(spool, 100).length, 7);
    assert.ok(spool.append('{"event":999}'), 'room again once delivered');
    assert.deepEqual(drain(spool), ['{"event":999}']);
    assert.equal(readdirSync(dir).filter((f) => f.endsWith('.ack')).length, 0);
    spool.close();
  });

  it('memory queue: bounded, batches by count and bytes', () => {
    const queue = new MemoryBuffer(5);
    for (let i = 0; i < 7; i++) queue.append(`line-${i}`);
    assert.equal(queue.pending, 5);
    assert.deepEqual(queue.take(10, 14)!.lines, ['line-0', 'line-1'], 'two 7-byte lines fit in 14 bytes');
    assert.deepEqual(drain(queue, 2), ['line-0', 'line-1', 'line-2', 'line-3', 'line-4']);
  });
});
