import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const COMMANDS = fileURLToPath(new URL('../../cli/collector-command.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/audit-run.ndjson', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'egress-cmd-'));
after(() => rmSync(dir, { recursive: true, force: true }));

it('egress-guard collector runs as a process: token from the environment, stops cleanly on SIGTERM', async () => {
  const db = join(dir, 'cmd.db');
  const script = `const m = await import(${JSON.stringify(COMMANDS)}); process.exitCode = await m.collectorCommand(['--listen', '127.0.0.1:0', '--db', ${JSON.stringify(db)}]);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { PATH: process.env.PATH, EGRESS_COLLECTOR_TOKEN: 'cmd-token' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let killed = false;
  after(() => {
    if (!killed) child.kill('SIGKILL');
  });
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${output}`)), 15_000);
    child.stdout.on('data', (c: Buffer) => {
      output += c;
      const m = /"listen":"127\.0\.0\.1:(\d+)"/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.stderr.on('data', (c: Buffer) => (output += c));
  });
  const body = readFileSync(FIXTURE, 'utf8');
  const denied = await fetch(`http://127.0.0.1:${port}/api/v1/events`, { method: 'POST', body });
  assert.equal(denied.status, 401);
  // The fixture holds pino operational lines too: the API takes events only, so send those lines.
  const events = body
    .split('\n')
    .filter((l) => l.includes('"schema":1'))
    .join('\n');
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/events`, { method: 'POST', body: events, headers: { authorization: 'Bearer cmd-token' } });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).stored, 61); // 33 decisions and 28 close events
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  killed = true;
  assert.equal(await exit, 0, output);
  assert.ok(existsSync(db));
  assert.match(output, /collector: stopping/);
});
