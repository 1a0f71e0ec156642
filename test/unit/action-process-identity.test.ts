import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { findDescendant, identifyProcess, isSameProcess, processStartTime, stopProcess } from '../../action/process-identity.js';
import { idleScript, recordingRoot, startIdle } from '../helpers/action-processes.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

test("stopProcess: a pid taken by a later process (another start time) is 'gone', and root signals nothing; the same process is stopped", { timeout: 15_000 }, async () => {
  const later = await startIdle(idleScript(tempDir('egact-id-')));
  try {
    const start = processStartTime(later.pid);
    assert.match(start ?? '', /^\d+$/, 'a start time from /proc/PID/stat');
    const root = recordingRoot(false);
    assert.equal(await stopProcess(root, { pid: later.pid, start: String(Number(start) - 1) }, 500), 'gone');
    assert.deepEqual(root.calls, [], 'root signalled a process that only has the pid of the one asked for');
    const same = recordingRoot(true);
    assert.equal(await stopProcess(same, identifyProcess(later.pid)!, 10_000), 'stopped');
    assert.deepEqual(same.calls, [['kill', '-TERM', String(later.pid)]]);
  } finally {
    later.kill('SIGKILL');
  }
});

test('isSameProcess: pid, start time and boot; not a process of another boot, not an exited one, not a zombie', { timeout: 15_000 }, async () => {
  const child = await startIdle(idleScript(tempDir('egact-id-')));
  const identity = identifyProcess(child.pid)!;
  try {
    assert.equal(isSameProcess(identity), true);
    assert.match(identity.boot ?? '', /^[0-9a-f-]{36}$/, 'the boot id');
    assert.equal(isSameProcess({ ...identity, boot: '00000000-0000-0000-0000-000000000000' }), false, 'a record of an earlier boot');
    assert.equal(isSameProcess({ pid: child.pid, start: identity.start }), true, 'a state without the boot (written before it was recorded)');
    assert.equal(isSameProcess({ ...identity, pid: -1 }), false);
  } finally {
    child.kill('SIGKILL');
  }
  await once(child, 'exit');
  assert.equal(isSameProcess(identity), false, 'exited');
  // A zombie: `sleep 0` exits in the background of a shell that then execs a process that never reaps it.
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const zombie = Number(line.toString().trim());
    await waitFor('the background child to be a zombie', () => processStartTime(zombie) === undefined, 5_000);
    assert.equal(isSameProcess({ pid: zombie, start: '0' }), false);
  } finally {
    parent.kill('SIGKILL');
  }
});

test('processStartTime: the 22nd field of /proc/PID/stat, past a command name with spaces and parentheses; none for no process', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  assert.equal(
    processStartTime(7, () => `7 (a) b (c) S ${fields.slice(1).join(' ')}\n`),
    '22',
  );
  assert.equal(
    processStartTime(7, () => `7 (a) Z ${fields.slice(1).join(' ')}\n`),
    undefined,
    'a zombie',
  );
  assert.equal(
    processStartTime(7, () => 'garbage'),
    undefined,
  );
  assert.equal(processStartTime(999_999_999), undefined);
});

test('findDescendant: the process with exactly that argv in the tree (under a shell), not one outside it', { timeout: 15_000 }, async () => {
  const script = idleScript(tempDir('egact-id-'));
  const tree = spawn('sh', ['-c', `"${process.execPath}" "${script}" run & wait`], { stdio: 'ignore' });
  await once(tree, 'spawn');
  const outside = await startIdle(script, 'run');
  let found: ReturnType<typeof findDescendant>;
  try {
    await waitFor('the node under the shell', () => (found = findDescendant(tree.pid!, [process.execPath, script, 'run'])) !== undefined, 5_000);
    assert.notEqual(found!.pid, outside.pid);
    assert.notEqual(found!.pid, tree.pid);
    assert.equal(isSameProcess(found!), true);
    assert.equal(findDescendant(tree.pid!, [process.execPath, script]), undefined, 'argv must match exactly');
    assert.equal(findDescendant(outside.pid, [process.execPath, script, 'run'])?.pid, outside.pid, 'the ancestor itself');
  } finally {
    if (found) process.kill(found.pid, 'SIGKILL');
    tree.kill('SIGKILL');
    outside.kill('SIGKILL');
  }
});
