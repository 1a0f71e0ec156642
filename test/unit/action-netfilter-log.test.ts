import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { isReaderProcess } from '../../action/netfilter-log.js';

/** A real process whose command line is `argv` (node, ignoring its arguments, for a few seconds). */
function processWith(...argv: string[]) {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10_000)', ...argv], { stdio: 'ignore' });
  return child;
}

test("post stops the NFLOG reader by its pid file only while that pid is still a reader (a stale file's pid may be anyone's now)", { timeout: 15_000 }, async () => {
  const reader = processWith('rules', 'log-reader', '--json-file', '/x');
  const other = processWith('run');
  try {
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(isReaderProcess(String(reader.pid), 'built-in'), true);
    assert.equal(isReaderProcess(String(other.pid), 'built-in'), false);
    assert.equal(isReaderProcess(String(reader.pid), 'ulogd'), false);
    assert.equal(isReaderProcess('999999999', 'built-in'), false, 'no such process');
    const ulogd = (file: string) => Buffer.from(file.startsWith('/proc/7/') ? '/usr/sbin/ulogd\0-d\0-c\0/tmp/u.conf\0' : 'sleep\0');
    assert.equal(isReaderProcess('7', 'ulogd', ulogd), true);
    assert.equal(isReaderProcess('8', 'ulogd', ulogd), false);
  } finally {
    reader.kill('SIGKILL');
    other.kill('SIGKILL');
  }
});
