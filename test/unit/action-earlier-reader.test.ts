import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { findEarlierReader, stopEarlierReader } from '../../action/earlier-reader.js';
import { actionLayout, type ActionLayout } from '../../action/layout.js';
import { builtInReaderArgv, netlogFiles } from '../../action/netfilter-log.js';
import { privileged } from '../../action/privileged.js';
import { identifyProcess, isSameProcess } from '../../action/process-identity.js';
import { idleScript, startIdle } from '../helpers/action-processes.js';
import { tempDir } from '../helpers/temp-dir.js';

/** A state directory as an earlier job's main left it (root's, 0755, netlog/ inside), whose node and entry run `idleScript`. */
function earlierLayout(): ActionLayout {
  const dir = tempDir('egact-earlier-');
  const base = actionLayout({ RUNNER_TEMP: dir });
  const stateDir = path.join(dir, 'state');
  const layout = { ...base, stateDir, netlogDir: path.join(stateDir, 'netlog'), node: process.execPath, entry: idleScript(dir) };
  mkdirSync(layout.netlogDir, { recursive: true, mode: 0o755 });
  chmodSync(stateDir, 0o755);
  chmodSync(layout.netlogDir, 0o755);
  return layout;
}

/** A process whose argv is the built-in reader's of `layout`, exactly (an earlier main's reader). */
function readerLike(layout: ActionLayout) {
  const [, ...args] = builtInReaderArgv(layout);
  return startIdle(args[0]!, ...args.slice(1));
}

test("main stops the reader an earlier job left, told by that job's record (pid, start time, boot), and says so", { timeout: 30_000 }, async () => {
  const layout = earlierLayout();
  const reader = await startIdle(layout.entry, 'rules', 'log-reader');
  try {
    const identity = identifyProcess(reader.pid)!;
    writeFileSync(netlogFiles(layout).record, JSON.stringify({ reader: 'built-in', process: identity }), { mode: 0o644 });
    const said = await stopEarlierReader(privileged(true), layout);
    assert.match(said ?? '', new RegExp(`an earlier job's NFLOG reader \\(built-in, pid ${reader.pid}, told by its pid and start time.*: stopped$`));
    assert.equal(isSameProcess(identity), false);
  } finally {
    reader.kill('SIGKILL');
  }
});

test('a record whose pid is another process now (another start time, another boot) stops nothing, whatever that process is', { timeout: 30_000 }, async () => {
  const layout = earlierLayout();
  const later = await readerLike(layout);
  try {
    const identity = identifyProcess(later.pid)!;
    for (const stale of [
      { ...identity, start: String(Number(identity.start) - 1) },
      { ...identity, boot: '00000000-0000-0000-0000-000000000000' },
    ]) {
      writeFileSync(netlogFiles(layout).record, JSON.stringify({ reader: 'built-in', process: stale }));
      assert.equal(await stopEarlierReader(privileged(true), layout), undefined);
    }
    // With a record, the pid file (an argv that matches) proves nothing more.
    writeFileSync(netlogFiles(layout).readerPidFile, `${later.pid}\n`);
    assert.equal(findEarlierReader(layout), undefined);
    assert.equal(isSameProcess(identity), true, 'signalled');
  } finally {
    later.kill('SIGKILL');
  }
});

test("the format before records (a pid file alone): stopped only when the process is root's and has exactly the reader's argv", { timeout: 30_000 }, async () => {
  const layout = earlierLayout();
  const files = netlogFiles(layout);
  const reader = await readerLike(layout);
  const other = await startIdle(layout.entry, 'rules', 'log-reader', '--json-file', '/elsewhere/nflog.json', '--pid-file', files.readerPidFile);
  // ulogd as an earlier main started it: argv[0] ulogd, its pid file after -p.
  const ulogd = spawn(process.execPath, [layout.entry, '-d', '-c', '/tmp/u.conf', '-p', files.ulogdPidFile], { argv0: '/usr/sbin/ulogd', stdio: 'ignore' });
  await once(ulogd, 'spawn');
  try {
    writeFileSync(files.readerPidFile, `${other.pid}\n`);
    assert.equal(findEarlierReader(layout), undefined, 'another command line');
    writeFileSync(files.readerPidFile, `${reader.pid}\n`);
    const identity = identifyProcess(reader.pid)!;
    assert.match(
      (await stopEarlierReader(privileged(true), layout)) ?? '',
      /\(built-in, pid \d+, told by its pid file and command line \(left by an earlier version\)\).*: stopped$/,
    );
    assert.equal(isSameProcess(identity), false);
    assert.equal(isSameProcess(identifyProcess(other.pid)!), true);
    rmSync(files.readerPidFile);
    writeFileSync(files.ulogdPidFile, `${ulogd.pid}\n`);
    assert.equal(findEarlierReader(layout)?.reader, 'ulogd');
    writeFileSync(files.ulogdPidFile, `${other.pid}\n`);
    assert.equal(findEarlierReader(layout), undefined, 'not ulogd');
  } finally {
    for (const child of [reader, other, ulogd]) child.kill('SIGKILL');
  }
});

test('nothing is evidence in a netlog/ or a file someone else could write, and bad records are nothing (no crash)', { timeout: 30_000 }, async () => {
  const layout = earlierLayout();
  const files = netlogFiles(layout);
  const reader = await readerLike(layout);
  try {
    const identity = identifyProcess(reader.pid)!;
    writeFileSync(files.record, JSON.stringify({ reader: 'built-in', process: identity }));
    assert.equal(findEarlierReader(layout)?.process.pid, reader.pid, 'the control: a root record of a live reader');
    chmodSync(layout.netlogDir, 0o777);
    assert.equal(findEarlierReader(layout), undefined, 'netlog/ writable by others');
    chmodSync(layout.netlogDir, 0o755);
    chownSync(files.record, 65534, 65534);
    assert.equal(findEarlierReader(layout), undefined, "a record that is not root's");
    rmSync(files.record);
    for (const bad of [
      'not json',
      'null',
      '[]',
      '{"reader":"built-in"}',
      `{"reader":"x","process":${JSON.stringify(identity)}}`,
      '{"reader":"built-in","process":{"pid":"1; rm","start":"1"}}',
    ]) {
      writeFileSync(files.record, bad);
      assert.equal(findEarlierReader(layout), undefined, bad);
    }
    rmSync(files.record);
    for (const bad of ['abc', '', '-1', '99999999999999']) {
      writeFileSync(files.readerPidFile, bad);
      assert.equal(findEarlierReader(layout), undefined, bad);
    }
    rmSync(layout.netlogDir, { recursive: true });
    assert.equal(findEarlierReader(layout), undefined, 'no netlog/');
    assert.equal(isSameProcess(identity), true);
  } finally {
    reader.kill('SIGKILL');
  }
});
