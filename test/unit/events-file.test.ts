import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EventLog } from '../../events/event-log.js';
import { EventsFile } from '../../events/events-file.js';
import pino from 'pino';

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

  it('EventLog: every decision is in the file when decision() returns; close events ride the end of the turn', async () => {
    const path = join(dir, 'decisions.ndjson');
    const log = new EventLog({ stdout: false, eventsFile: path });
    const lines = () =>
      readFileSync(path, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { event: string; decision?: string });
    const fields = { kind: 'connect', client: '127.0.0.1:1', host: 'a.test', port: 443, reason: 'allowed-endpoint', rule: 'a.test', message: 'm', mode: 'block' } as const;
    log.close({ id: 'x', kind: 'connect', client: '127.0.0.1:1', host: 'a.test', port: 443, bytes_in: 0, bytes_out: 0, duration_ms: 1 });
    assert.deepEqual(lines(), [], 'a close event waits for the end of the turn');
    log.decision({ ...fields, decision: 'allowed' });
    assert.deepEqual(
      lines().map((l) => l.event),
      ['close', 'decision'],
      'a decision is written before the call returns, with what was queued before it',
    );
    log.decision({ ...fields, decision: 'blocked', reason: 'not-allowed-endpoint' });
    log.decision({ ...fields, decision: 'would-block', reason: 'not-allowed-endpoint', mode: 'audit' });
    assert.deepEqual(
      lines().map((l) => l.decision),
      [undefined, 'allowed', 'blocked', 'would-block'],
    );
    log.close({ id: 'y', kind: 'connect', client: '127.0.0.1:1', host: 'a.test', port: 443, bytes_in: 0, bytes_out: 0, duration_ms: 1 });
    assert.equal(lines().length, 4);
    await nextTurn();
    assert.equal(lines().at(-1)?.event, 'close');
  });

  it("EventLog: a decision emitted 'end-of-turn' rides the end-of-turn write, and flushDecisions() writes it at once", async () => {
    const path = join(dir, 'end-of-turn.ndjson');
    const log = new EventLog({ stdout: false, eventsFile: path });
    const count = () => readFileSync(path, 'utf8').split('\n').filter(Boolean).length;
    const fields = { kind: 'dns', client: '127.0.0.1:1', host: 'a.test', port: 53, qtype: 'A', reason: 'allowed-endpoint', rule: 'a.test', message: 'm', mode: 'block' } as const;
    log.decision({ ...fields, decision: 'allowed' }, 'end-of-turn');
    assert.equal(count(), 0, 'not written synchronously');
    await nextTurn();
    assert.equal(count(), 1, 'written once the turn has ended');
    log.decision({ ...fields, decision: 'allowed' }, 'end-of-turn');
    log.flushDecisions();
    assert.equal(count(), 2, 'flushDecisions writes what is queued');
    log.decision({ ...fields, decision: 'allowed' }, 'end-of-turn');
    log.decision({ ...fields, host: 'b.test', decision: 'blocked', reason: 'not-allowed-endpoint' });
    assert.equal(count(), 4, "a decision written 'now' takes the queued ones with it, in order");
    assert.deepEqual(
      readFileSync(path, 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { host: string }).host),
      ['a.test', 'a.test', 'a.test', 'b.test'],
    );
  });

  it("EventLog: an 'end-of-turn' decision is in the file when the process exits right after it", () => {
    const path = join(dir, 'end-of-turn-exit.ndjson');
    const module = fileURLToPath(new URL('../../events/event-log.js', import.meta.url));
    const fields = { kind: 'dns', client: '127.0.0.1:1', host: 'last.test', port: 53, decision: 'allowed', reason: 'r', rule: null, message: 'm', mode: 'block' };
    const script = `import { EventLog } from ${JSON.stringify(module)}; const log = new EventLog({ stdout: false, eventsFile: ${JSON.stringify(path)} }); log.decision(${JSON.stringify(fields)}, 'end-of-turn'); process.exit(0);`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 });
    assert.equal(run.status, 0, String(run.stderr));
    const lines = readFileSync(path, 'utf8').trim().split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { host: string }).host, 'last.test');
  });

  it('EventLog: an event line is byte for byte the line pino writes for it (level first; awkward strings; ci)', () => {
    const path = join(dir, 'same-as-pino.ndjson');
    const ci = { repository: 'o/r', run_id: '7', job: 'build' };
    const log = new EventLog({ stdout: false, eventsFile: path, ci });
    const host = 'q"u\\o\u2028te\u00e9\ud83d\ude00.test';
    const events = [
      log.decision({
        kind: 'dns',
        client: '[::1]:5',
        host,
        port: 53,
        qtype: 'TYPE65534',
        decision: 'allowed',
        reason: 'allowed-endpoint',
        rule: null,
        message: 'tab\tnl\n',
        mode: 'block',
      }),
      log.decision({
        kind: 'connect',
        client: '127.0.0.1:1',
        host: 'a.test',
        port: 443,
        decision: 'blocked',
        reason: 'not-allowed-endpoint',
        rule: 'x',
        message: 'm',
        mode: 'audit',
      }),
      log.close({ id: 'c', kind: 'connect', client: '127.0.0.1:1', host: 'a.test', port: 443, bytes_in: 1, bytes_out: 2, duration_ms: 1.5, error: 'upstream-reset' }),
    ];
    log.flushDecisions();
    const expected: string[] = [];
    const reference = pino(
      { level: 'info', base: undefined, timestamp: false, formatters: { level: (label) => ({ level: label }) } },
      { write: (line: string) => expected.push(line) },
    );
    reference.info(events[0]);
    reference.warn(events[1]);
    reference.info(events[2]);
    assert.equal(readFileSync(path, 'utf8'), expected.join(''));
  });
});
