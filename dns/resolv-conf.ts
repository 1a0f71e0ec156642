import { readFile } from 'node:fs/promises';
import net from 'node:net';

/**
 * The `nameserver` addresses of a resolv.conf text, in order. IPv6 ones come back bracketed
 * (`[::1]`), the form parseUpstream reads; anything that is not an address is skipped.
 */
export function parseResolvConf(text: string): string[] {
  const servers: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const fields = line
      .replace(/[#;].*$/, '')
      .trim()
      .split(/\s+/);
    if (fields[0] !== 'nameserver' || !fields[1]) continue;
    const address = fields[1];
    const family = net.isIP(address.split('%')[0] ?? '');
    if (family === 4) servers.push(address);
    else if (family === 6) servers.push(`[${address}]`);
  }
  return servers;
}

/** Default upstreams: the host's resolv.conf nameservers, read once at start ([] when unreadable). */
export async function readResolvConfUpstreams(path = '/etc/resolv.conf'): Promise<string[]> {
  try {
    return parseResolvConf(await readFile(path, 'utf8'));
  } catch {
    return [];
  }
}
