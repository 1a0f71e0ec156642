import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { stopNetfilterLog, type NetfilterLog } from '../../action/netfilter-log.js';
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
