import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { ActionLayout } from '../../action/layout.js';
import { readPidFile, startNetfilterLog, stopNetfilterLog, type NetfilterLog } from '../../action/netfilter-log.js';
import { privileged } from '../../action/privileged.js';
import { identifyProcess, isSameProcess } from '../../action/process-identity.js';
import { idleScript, recordingRoot, startIdle } from '../helpers/action-processes.js';
import { tempDir } from '../helpers/temp-dir.js';

test(
  'post stops the NFLOG reader only while its pid and start time are the ones main saved; a state without them (the pid file alone) is not signalled',
  { timeout: 30_000 },
  async () => {
    const dir = tempDir('egact-nflog-');
    // A process with a reader's command line, named by the pid file: not proof that it is the reader main started.
    const reader = await startIdle(idleScript(dir, 'egress-guard.js'), 'rules', 'log-reader', '--json-file', '/x');
    const pidFile = path.join(dir, 'reader.pid');
    writeFileSync(pidFile, `${reader.pid}\n`);
    const log: NetfilterLog = { jsonFile: path.join(dir, 'nflog.json'), pidFile, reader: 'built-in' };
    try {
      const identity = identifyProcess(reader.pid)!;
      const blind = recordingRoot(false);
      assert.match(await stopNetfilterLog(blind, log), /not stopped: the state does not name its process/);
      assert.deepEqual(blind.calls, [], 'signalled by its pid file and command line alone');
      const later = recordingRoot(false);
      assert.match(await stopNetfilterLog(later, { ...log, process: { ...identity, start: String(Number(identity.start) - 1) } }), /: gone$/);
      assert.deepEqual(later.calls, [], 'a process that only has the pid of the reader main started was signalled');
      const same = recordingRoot(true);
      assert.match(await stopNetfilterLog(same, { ...log, process: identity }), new RegExp(`pid ${reader.pid}\\): stopped$`));
      assert.deepEqual(same.calls, [['kill', '-TERM', String(reader.pid)]]);
      assert.equal(isSameProcess(identity), false);
    } finally {
      reader.kill('SIGKILL');
    }
  },
);

/** A layout in `dir` for startNetfilterLog: node is this one, egress-guard.js the CommonJS `script` standing in for it. */
function readerLayout(dir: string, script: string): ActionLayout {
  const entry = path.join(dir, 'egress-guard.js');
  writeFileSync(entry, script);
  writeFileSync(path.join(dir, 'package.json'), '{"type": "commonjs"}\n');
  return {
    stateDir: dir,
    appDir: dir,
    sidecarStateDir: path.join(dir, 'sidecar'),
    node: process.execPath,
    entry,
    teardown: path.join(dir, 'teardown.js'),
    eventsFile: path.join(dir, 'events.ndjson'),
    policyFile: path.join(dir, 'policy.yaml'),
    savedResolvConf: path.join(dir, 'resolv.conf.saved'),
    spoolDir: path.join(dir, 'spool'),
    netlogDir: path.join(dir, 'netlog'),
    workDir: dir,
    logFile: path.join(dir, 'egress-guard.log'),
  };
}

/** Kills the stand-in reader a test started through startNetfilterLog: the pid it writes (in the test's own directory). */
async function killReader(pidFile: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (readPidFile(pidFile) === undefined && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  const pid = readPidFile(pidFile);
  if (pid !== undefined) process.kill(pid, 'SIGKILL');
}

test("main names the built-in reader's process although its pid file is there, empty, a moment before the reader writes its pid", { timeout: 30_000 }, async () => {
  const dir = tempDir('egact-nflog-start-');
  // Like `rules log-reader`: the pid file made exclusively, then the pid written into it (here 300 ms later).
  const layout = readerLayout(
    dir,
    `const fs = require('node:fs');
const file = process.argv[process.argv.indexOf('--pid-file') + 1];
const fd = fs.openSync(file, 'wx', 0o644);
setTimeout(() => { fs.writeSync(fd, process.pid + '\\n'); fs.closeSync(fd); }, 300);
process.on('SIGTERM', () => process.exit(0));
setTimeout(() => {}, 60_000);
`,
  );
  const log = await startNetfilterLog(privileged(true), layout, undefined);
  try {
    assert.ok('reader' in log && log.reader === 'built-in', JSON.stringify(log));
    const pid = readPidFile(log.pidFile);
    assert.ok(pid !== undefined);
    assert.equal(log.process?.pid, pid, 'no process recorded: post would never stop this reader');
    const record = JSON.parse(readFileSync(path.join(layout.netlogDir, 'reader.json'), 'utf8')) as { process: { pid: number } };
    assert.equal(record.process.pid, pid);
  } finally {
    await killReader(path.join(layout.netlogDir, 'reader.pid'));
  }
});

test("main names ulogd's daemon although `ulogd -d` returns with its pid file there and empty (it forks, then the daemon writes its pid)", { timeout: 30_000 }, async () => {
  const dir = tempDir('egact-nflog-ulogd-');
  // The built-in reader cannot start here; log-config prints a configuration.
  const layout = readerLayout(
    dir,
    `if (process.argv[3] === 'log-reader') { console.error('no addon'); process.exit(1); }
console.log('# ulogd configuration');
`,
  );
  // As ulogd 2.0.8 does it (strace): the pid file created (O_EXCL) before fork, the parent exits 0 at once, the
  // daemon writes its own pid afterwards.
  const ulogd = path.join(dir, 'ulogd');
  writeFileSync(
    ulogd,
    `#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = -p ] && pidfile=$2; shift; done
set -o noclobber; : > "$pidfile"
( sleep 0.3; echo $BASHPID >| "$pidfile"; exec sleep 60 ) </dev/null >/dev/null 2>&1 &
exit 0
`,
  );
  chmodSync(ulogd, 0o755);
  const log = await startNetfilterLog(privileged(true), layout, ulogd);
  try {
    assert.ok('reader' in log && log.reader === 'ulogd', JSON.stringify(log));
    const pid = readPidFile(log.pidFile);
    assert.ok(pid !== undefined);
    assert.equal(log.process?.pid, pid, 'no process recorded: post would never stop ulogd');
  } finally {
    await killReader(path.join(layout.netlogDir, 'ulogd.pid'));
  }
});

test('when the kernel refuses the built-in reader the group (another process holds it), ulogd is not tried and main says nobody reads it', { timeout: 30_000 }, async () => {
  const dir = tempDir('egact-nflog-held-');
  // As `rules log-reader` ends when the group's bind gets EPERM: exit 3 (NFLOG_GROUP_REFUSED_EXIT), no pid file.
  const layout = readerLayout(
    dir,
    `if (process.argv[3] === 'log-reader') { console.error('egress-guard rules log-reader: NFLOG group bind: Operation not permitted'); process.exit(3); }
console.log('# ulogd configuration');
`,
  );
  // A ulogd that would come up (pid file written): the kernel would refuse it a moment later, after main took it
  // for the reader. Here it leaves a mark if it runs at all.
  const ulogd = path.join(dir, 'ulogd');
  const ran = path.join(dir, 'ulogd-ran');
  writeFileSync(ulogd, `#!/bin/bash\ntouch ${JSON.stringify(ran)}\nwhile [ $# -gt 0 ]; do [ "$1" = -p ] && echo $$ > "$2"; shift; done\n`);
  chmodSync(ulogd, 0o755);
  const log = await startNetfilterLog(privileged(true), layout, ulogd);
  assert.ok('reason' in log, `a reader was named: ${JSON.stringify(log)}`);
  assert.match(log.reason, /refused the built-in reader the NFLOG group: .*Operation not permitted; another process holds the group/);
  assert.equal(existsSync(ran), false, 'ulogd was started');
});
