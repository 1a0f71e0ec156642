import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { Privileged } from '../../action/privileged.js';
import { assertAdminPortFree, processStartTime, stopSidecar } from '../../action/sidecar-process.js';

/** Root as post has it, recording what it is asked to run (and running nothing). */
function recordingRoot(): Privileged & { calls: string[][] } {
  const calls: string[][] = [];
  const run: Privileged['run'] = (command, args) => {
    calls.push([command, ...args]);
    return Promise.resolve({ code: 0, stdout: '', stderr: '' });
  };
  return { calls, run, must: async (command, args) => (await run(command, args)).stdout, argv: (command, args) => [command, ...args] };
}

test("post: egress-guard's pid taken by a later process (egress-guard exited during the job) is 'gone', and root signals nothing", { timeout: 15_000 }, async () => {
  // The process that has the pid now: alive, but not the one main started (another start time).
  const later = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10_000)'], { stdio: 'ignore' });
  try {
    await once(later, 'spawn');
    const start = processStartTime(later.pid!);
    assert.match(start ?? '', /^\d+$/, 'a start time from /proc/PID/stat');
    const earlier = String(Number(start) - 1);
    const root = recordingRoot();
    assert.equal(await stopSidecar(root, later.pid!, { start: earlier, timeoutMs: 500 }), 'gone');
    assert.deepEqual(root.calls, [], 'root signalled a process that only has the pid egress-guard had');
    // The same process (its own start time) is stopped as before.
    const same = recordingRoot();
    assert.equal(await stopSidecar(same, later.pid!, { start: start!, timeoutMs: 300 }), 'killed');
    assert.deepEqual(same.calls[0], ['kill', '-TERM', String(later.pid)]);
  } finally {
    later.kill('SIGKILL');
  }
});

test('processStartTime: the 22nd field of /proc/PID/stat, past a command name with spaces and parentheses; none for no process', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  assert.equal(
    processStartTime(7, () => `7 (a) b (c) ${fields.join(' ')}\n`),
    '22',
  );
  assert.equal(processStartTime(999_999_999), undefined);
});

test("main refuses to start while something listens on egress-guard's admin port (an earlier job's egress-guard would answer /healthz for the new one)", async () => {
  const server = createServer((_req, res) => res.writeHead(200).end('ok\n'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  try {
    await assert.rejects(assertAdminPortFree(port), /already listens on 127\.0\.0\.1:\d+/);
  } finally {
    server.close();
  }
  await once(server, 'close');
  await assertAdminPortFree(port);
});
