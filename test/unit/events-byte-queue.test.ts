import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ByteQueue } from '../../events/byte-queue.js';

const text = (q: ByteQueue) => q.buffer.toString('utf8', 0, q.length);

describe('ByteQueue (the events file and stdout queue their lines in one)', () => {
  test('text appended in order; multi-byte text counted by its bytes; growth keeps what was queued', () => {
    const q = new ByteQueue(8);
    q.appendText('ab');
    q.appendText('cd');
    q.appendText('é€😀');
    assert.equal(text(q), 'abcdé€😀');
    assert.equal(q.length, 4 + 2 + 3 + 4);
    const long = 'x'.repeat(1000);
    q.appendText(long);
    assert.equal(text(q), `abcdé€😀${long}`);
  });

  test('consume drops what was written and keeps the tail at the front; clear gives back a grown buffer', () => {
    const q = new ByteQueue(16);
    q.appendText('first line\nsecond line\n');
    q.consume(11);
    assert.equal(text(q), 'second line\n');
    q.consume(q.length);
    assert.equal(q.length, 0);
    q.appendText('y'.repeat(100));
    assert.ok(q.buffer.length >= 100);
    q.clear(1024);
    assert.equal(q.length, 0);
    assert.ok(q.buffer.length >= 100, 'kept: not past keepBytes');
    q.appendText('z'.repeat(2000));
    q.clear();
    assert.equal(q.buffer.length, 16, 'past keepBytes (the first size by default): a new buffer of the first size');
  });
});
