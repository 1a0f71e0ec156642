import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EventsFile } from '../../events/events-file.js';

const dir = mkdtempSync(join(tmpdir(), 'eg-events-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe('EventsFile', () => {
  it('writes the lines of one turn together at the end of that turn, in order', async () => {
    const path = join(dir, 'turn.ndjson');
    const file = new EventsFile(path);
    for (let i = 0; i < 100; i++) file.write(`{"n":${i}}\n`);
    assert.equal(readFileSync(path, 'utf8'), '', 'nothing is written before the turn ends');
    assert.equal(file.pending, 100);
    await nextTurn();
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { n: number }).n),
      Array.from({ length: 100 }, (_, i) => i),
    );
    file.write('{"n":100}\n');
    await nextTurn();
    assert.equal(readFileSync(path, 'utf8').trim().split('\n').length, 101);
    file.close();
  });

  it('writes what is queued when the process exits right after an event', () => {
    const path = join(dir, 'exit.ndjson');
    const module = fileURLToPath(new URL('../../events/events-file.js', import.meta.url));
    const script = `import { EventsFile } from ${JSON.stringify(module)}; const f = new EventsFile(${JSON.stringify(path)}); f.write('{"last":true}\\n'); process.exit(3);`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 });
    assert.equal(run.status, 3);
    assert.equal(readFileSync(path, 'utf8'), '{"last":true}\n');
  });

  it('keeps the lines of a failed write (a full disk) and says so, instead of dropping them', async () => {
    const file = new EventsFile('/dev/full');
    const stderr: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (stderr.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      file.write('{"a":1}\n');
      file.write('{"b":2}\n');
      await nextTurn();
      file.write('{"c":3}\n');
      await nextTurn();
    } finally {
      process.stderr.write = write;
    }
    assert.ok(file.pending > 0, 'the unwritten lines are kept');
    assert.equal(stderr.length, 1, 'one message per kind of failure, not one per turn');
    assert.match(stderr[0]!, /cannot write the events file \/dev\/full \(ENOSPC\)/);
    file.close();
  });
});
