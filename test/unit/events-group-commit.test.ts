/**
 * The proxy's decisions of one event-loop turn share one write(2) of the events file, and each authorize() settles
 * only once its decision's line is in the file (group commit). The writes are counted by wrapping fs.writeSync (the
 * events file's only way to write) and publishing the wrapper to ES module imports with syncBuiltinESMExports.
 */
import assert from 'node:assert/strict';
import fs, { readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { authorize, type AuthorizeContext } from '../../decision/authorize.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import { EventsFile } from '../../events/events-file.js';
import { buildPolicy, type Mode } from '../../policy/index.js';
import { tempDir } from '../helpers/temp-dir.js';

/** write(2) calls on each descriptor while the wrapper is in place. */
const writesByFd = new Map<number, number>();
const realWriteSync = fs.writeSync;

/** Allowed and refused hosts, every one resolved by an override (no lookup leaves the process). */
const HOSTS = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? 'allowed.test' : `refused-${i}.test`));

function context(events: EventLog, mode: Mode): AuthorizeContext {
  const origin = { file: 'events-group-commit.test', line: 1 };
  const policy = buildPolicy({
    mode: { value: mode, origin },
    'allowed-endpoints': { value: 'allowed.test:*', origin },
    'trusted-ranges': { value: '127.0.0.0/8', origin },
  });
  return { policy: () => policy, resolver: new Resolver({ overrides: new Map(HOSTS.map((host) => [host, ['127.0.0.1']])), addressBook: new AddressBook() }), events };
}

/** The descriptor the events file at `path` was opened on (the newest descriptor of this process naming it). */
function fdOf(path: string): number {
  const fds = fs.readdirSync('/proc/self/fd').map(Number);
  const names = (fd: number) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`, { encoding: 'utf8' }) === path;
    } catch {
      return false; // the directory's own descriptor, closed by now
    }
  };
  return Math.max(...fds.filter(names));
}

describe('decisions written once per turn', () => {
  before(() => {
    (fs as { writeSync: typeof fs.writeSync }).writeSync = ((fd: number, ...rest: unknown[]) => {
      writesByFd.set(fd, (writesByFd.get(fd) ?? 0) + 1);
      return (realWriteSync as (...args: unknown[]) => number)(fd, ...rest);
    }) as typeof fs.writeSync;
    syncBuiltinESMExports();
  });
  after(() => {
    (fs as { writeSync: typeof fs.writeSync }).writeSync = realWriteSync;
    syncBuiltinESMExports();
  });

  for (const mode of ['block', 'audit'] as const) {
    test(`${mode} mode: 40 requests decided in one turn: one write, and each settles with its line in the file`, async () => {
      const path = join(tempDir('eg-group-commit-'), 'events.jsonl');
      const events = new EventLog({ stdout: false, eventsFile: path });
      const ctx = context(events, mode);
      const fd = fdOf(path);
      const hosts = HOSTS;
      const settledWith: string[][] = [];
      const all = hosts.map((host, i) =>
        authorize(ctx, { kind: 'http', client: '127.0.0.1', host, port: 80, method: 'GET', path: `/r${i}` }).then((auth) => {
          // What a job's next step would read at the moment this request's action may start.
          const lines = readFileSync(path, 'utf8')
            .split('\n')
            .filter((line) => line.includes(`"path":"/r${i}"`));
          settledWith.push(lines);
          if (auth.action === 'forward') auth.connection.close({});
          return auth;
        }),
      );
      const auths = await Promise.all(all);
      assert.equal(writesByFd.get(fd), 1, 'the 40 decisions share one write');
      assert.deepEqual(
        settledWith.map((lines) => lines.length),
        hosts.map(() => 1),
        'every request settled with its decision line in the file',
      );
      assert.deepEqual(
        auths.map((a) => a.action),
        hosts.map((h) => (h === 'allowed.test' || mode === 'audit' ? 'forward' : 'reject')),
      );
      events.flush();
    });
  }

  test('written() settles when the write fails (a full disk: /dev/full), and the line is kept to retry', async () => {
    const file = new EventsFile('/dev/full');
    const stderr: string[] = [];
    const realStderrWrite = process.stderr.write;
    process.stderr.write = ((chunk: string) => (stderr.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      file.write('{"event":"decision"}\n');
      await file.written();
      assert.equal(file.pending, 1, 'the line is kept');
      assert.match(stderr.join(''), /cannot write the events file \/dev\/full \(ENOSPC\)/);
    } finally {
      process.stderr.write = realStderrWrite;
    }
    file.close();
    await file.written();
  });
});
