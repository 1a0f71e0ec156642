import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ActionLayout } from './layout.js';
import { execCommand, type Privileged } from './privileged.js';
import type { SidecarUser } from './sidecar-user.js';

export interface NetfilterLog {
  jsonFile: string;
  pidFile: string;
}

function ulogdBinary(): string | undefined {
  return ['/usr/sbin/ulogd', '/usr/bin/ulogd', '/sbin/ulogd'].find((file) => existsSync(file));
}

/**
 * ulogd as root, as the container's entrypoint starts it: it turns what the rules refuse or report (UDP other
 * than DNS, ICMP, answers to outside hosts) into JSON lines that egress-guard reads as events. GitHub's images
 * do not ship ulogd; without it those packets are still refused in block mode, but they are not events.
 */
export async function startNetfilterLog(root: Privileged, layout: ActionLayout, user: SidecarUser): Promise<NetfilterLog | undefined> {
  const ulogd = ulogdBinary();
  if (!ulogd) return undefined;
  const jsonFile = path.join(layout.netlogDir, 'nflog.json');
  const pidFile = path.join(layout.netlogDir, 'ulogd.pid');
  const config = await execCommand(layout.node, [layout.entry, 'rules', 'log-config', '--json-file', jsonFile, '--log-file', path.join(layout.netlogDir, 'ulogd.log')]);
  if (config.code !== 0) throw new Error(`egress-guard rules log-config failed: ${config.stderr.trim()}`);
  const configFile = path.join(layout.workDir, 'ulogd.conf');
  writeFileSync(configFile, config.stdout);
  await root.must('install', ['-d', '-m', '0755', '-o', String(user.uid), '-g', String(user.gid), layout.netlogDir]);
  await root.must('install', ['-m', '0644', '/dev/null', jsonFile]);
  await root.must(ulogd, ['-d', '-c', configFile, '-p', pidFile]);
  return { jsonFile, pidFile };
}

export async function stopNetfilterLog(root: Privileged, log: NetfilterLog): Promise<void> {
  let pid: string;
  try {
    pid = readFileSync(log.pidFile, 'utf8').trim();
  } catch {
    return;
  }
  if (/^\d+$/.test(pid)) await root.run('kill', ['-TERM', pid]);
}
