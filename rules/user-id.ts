import { readFileSync } from 'node:fs';

/** The uid of a user name from /etc/passwd (no NSS lookups: rules are applied where the sidecar user is local). */
export function uidOfUser(name: string, passwd: string = readFileSync('/etc/passwd', 'utf8')): number | undefined {
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields[2] !== undefined && /^\d+$/.test(fields[2])) return Number(fields[2]);
  }
  return undefined;
}
