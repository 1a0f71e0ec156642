import { lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Privileged } from './privileged.js';

export const RESOLV_CONF = '/etc/resolv.conf';
/** systemd-resolved's list of the real upstream servers (ubuntu runners); /etc/resolv.conf only names its stub. */
export const RESOLVED_UPSTREAMS = '/run/systemd/resolve/resolv.conf';

/** What /etc/resolv.conf was, to put it back in post. */
export type SavedResolvConf = { kind: 'symlink'; target: string } | { kind: 'file'; content: string };

export function nameservers(resolvConf: string): string[] {
  return resolvConf
    .split('\n')
    .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1])
    .filter((address): address is string => address !== undefined && isIP(address.replace(/%.*$/, '')) !== 0);
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}

function readIfPresent(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The resolvers egress-guard forwards to: systemd-resolved's upstreams when it runs, else the nameservers of
 * /etc/resolv.conf. Loopback ones are left out: with the rules applied, a local forwarder's queries come back
 * to egress-guard (a loop).
 */
export function upstreamResolvers(read: (file: string) => string | undefined = readIfPresent): string[] {
  for (const file of [RESOLVED_UPSTREAMS, RESOLV_CONF]) {
    const servers = nameservers(read(file) ?? '').filter((address) => !isLoopback(address));
    if (servers.length > 0) return servers;
  }
  throw new Error(`no upstream DNS server: ${RESOLVED_UPSTREAMS} and ${RESOLV_CONF} name none that is not loopback`);
}

export const JOB_RESOLV_CONF = '# egress-guard action: every lookup of the job goes through egress-guard\nnameserver 127.0.0.1\nnameserver ::1\noptions timeout:2 attempts:2\n';

/** Copy /etc/resolv.conf aside (`cp -a`: a symlink is copied as the symlink) and say what it was. */
export async function saveResolvConf(root: Privileged, saved: string): Promise<SavedResolvConf> {
  const stat = lstatSync(RESOLV_CONF, { throwIfNoEntry: false });
  const was: SavedResolvConf = stat?.isSymbolicLink() ? { kind: 'symlink', target: readlinkSync(RESOLV_CONF) } : { kind: 'file', content: readIfPresent(RESOLV_CONF) ?? '' };
  await root.must('cp', ['-a', '--remove-destination', RESOLV_CONF, saved]);
  return was;
}

/** Replace /etc/resolv.conf (on ubuntu a symlink to resolved's stub) by a file naming egress-guard's DNS listeners. */
export async function pointResolvConf(root: Privileged, content: string): Promise<void> {
  await root.must('rm', ['-f', RESOLV_CONF]);
  await root.must('tee', [RESOLV_CONF], { input: content });
  await root.must('chmod', ['0644', RESOLV_CONF]);
}

/** Put the saved copy back (the audit supervisor does the same in shell when egress-guard dies). */
export async function restoreResolvConf(root: Privileged, saved: string): Promise<void> {
  await root.must('cp', ['-a', '--remove-destination', saved, RESOLV_CONF]);
}
