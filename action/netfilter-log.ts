import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ActionLayout } from './layout.js';
import { execCommand, type Privileged } from './privileged.js';

export interface NetfilterLog {
  jsonFile: string;
  pidFile: string;
  /** Who reads the NFLOG group: egress-guard's own `rules log-reader`, or ulogd. */
  reader: 'built-in' | 'ulogd';
}

function ulogdBinary(): string | undefined {
  return ['/usr/sbin/ulogd', '/usr/bin/ulogd', '/sbin/ulogd'].find((file) => existsSync(file));
}

/** How long the built-in reader may take to bind its group (load the addon, netlink set-up). */
const READER_READY_MS = 10_000;

/**
 * `egress-guard rules log-reader` as root, left running when this step ends (its pid file is written once the NFLOG
 * group is bound): the packets the rules refuse or report, as ulogd's JSON lines, without ulogd. The reason, when
 * it does not come up (no prebuilt addon for this machine, no netlink, another reader on the group).
 */
async function startBuiltInReader(root: Privileged, layout: ActionLayout, jsonFile: string): Promise<{ log: NetfilterLog } | { reason: string }> {
  const pidFile = path.join(layout.netlogDir, 'reader.pid');
  // The runner's own scratch space: this step (not root) opens it for the reader's output.
  const logFile = path.join(layout.workDir, 'nflog-reader.log');
  const output = openSync(logFile, 'a');
  const [command, ...args] = root.argv(layout.node, [layout.entry, 'rules', 'log-reader', '--json-file', jsonFile, '--pid-file', pidFile]);
  const child = spawn(command!, args, { detached: true, stdio: ['ignore', output, output] });
  closeSync(output);
  let exited = false;
  child.on('exit', () => (exited = true));
  child.on('error', () => (exited = true));
  child.unref();
  const deadline = Date.now() + READER_READY_MS;
  while (!existsSync(pidFile) && !exited && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
  if (existsSync(pidFile)) return { log: { jsonFile, pidFile, reader: 'built-in' } };
  if (!exited && child.pid !== undefined) await root.run('kill', ['-TERM', String(child.pid)]);
  let tail = '';
  try {
    tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' ');
  } catch {
    // no output
  }
  return { reason: exited ? `the built-in reader exited: ${tail || 'no output'}` : `the built-in reader was not ready after ${READER_READY_MS} ms` };
}

/**
 * What the rules refuse or report (UDP other than DNS, ICMP, answers to outside hosts) made into JSON lines that
 * egress-guard reads as events: by the built-in reader (`rules log-reader`, GitHub's images ship no ulogd), else by
 * ulogd as root, as the container's entrypoint starts it. Without either, those packets are still refused in block
 * mode, but they are not events; `reason` says why.
 */
export async function startNetfilterLog(root: Privileged, layout: ActionLayout): Promise<NetfilterLog | { reason: string }> {
  const jsonFile = path.join(layout.netlogDir, 'nflog.json');
  // Root's: the reader (root) writes here. What an earlier job left (a pid file above all) goes.
  await root.must('rm', ['-rf', layout.netlogDir]);
  await root.must('install', ['-d', '-m', '0755', '-o', '0', '-g', '0', layout.netlogDir]);
  await root.must('install', ['-m', '0644', '/dev/null', jsonFile]);
  const builtIn = await startBuiltInReader(root, layout, jsonFile);
  if ('log' in builtIn) return builtIn.log;
  const ulogd = ulogdBinary();
  if (!ulogd) return { reason: `${builtIn.reason}; ulogd is not installed` };
  const pidFile = path.join(layout.netlogDir, 'ulogd.pid');
  const config = await execCommand(layout.node, [layout.entry, 'rules', 'log-config', '--json-file', jsonFile, '--log-file', path.join(layout.netlogDir, 'ulogd.log')]);
  if (config.code !== 0) throw new Error(`egress-guard rules log-config failed: ${config.stderr.trim()}`);
  const configFile = path.join(layout.workDir, 'ulogd.conf');
  writeFileSync(configFile, config.stdout);
  await root.must(ulogd, ['-d', '-c', configFile, '-p', pidFile]);
  return { jsonFile, pidFile, reader: 'ulogd' };
}

/** Whether process `pid` is still the reader: its command line (a reader that died leaves its pid to be reused). */
export function isReaderProcess(pid: string, reader: NetfilterLog['reader'], readCmdline = (file: string) => readFileSync(file)): boolean {
  let argv: string[];
  try {
    argv = readCmdline(`/proc/${pid}/cmdline`).toString('utf8').split('\0');
  } catch {
    return false;
  }
  if (reader === 'ulogd') return argv.some((arg) => path.basename(arg) === 'ulogd');
  return argv.some((arg, i) => arg === 'rules' && argv[i + 1] === 'log-reader');
}

export async function stopNetfilterLog(root: Privileged, log: NetfilterLog): Promise<void> {
  let pid: string;
  try {
    pid = readFileSync(log.pidFile, 'utf8').trim();
  } catch {
    return;
  }
  if (/^\d+$/.test(pid) && isReaderProcess(pid, log.reader)) await root.run('kill', ['-TERM', pid]);
}
