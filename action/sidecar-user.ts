import { readFileSync } from 'node:fs';
import { uidOfUser } from '../rules/user-id.js';
import type { Privileged } from './privileged.js';

export interface SidecarUser {
  name: string;
  uid: number;
  gid: number;
}

function gidOfUser(name: string, passwd: string): number | undefined {
  const fields = passwd
    .split('\n')
    .find((line) => line.split(':')[0] === name)
    ?.split(':');
  return fields?.[3] !== undefined && /^\d+$/.test(fields[3]) ? Number(fields[3]) : undefined;
}

/** egress-guard's own system user (the rules exempt its uid), created when the runner does not have it yet. */
export async function ensureSidecarUser(root: Privileged, name: string): Promise<SidecarUser & { created: boolean }> {
  let created = false;
  if (uidOfUser(name) === undefined) {
    await root.must('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name]);
    created = true;
  }
  const passwd = readFileSync('/etc/passwd', 'utf8');
  const uid = uidOfUser(name, passwd);
  const gid = gidOfUser(name, passwd);
  if (uid === undefined || gid === undefined) throw new Error(`user ${name} is not in /etc/passwd after useradd`);
  if (uid === 0) throw new Error(`user ${name} has uid 0: the rules would exempt every root process`);
  return { name, uid, gid, created };
}
