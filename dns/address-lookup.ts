import type { UpstreamClient } from './upstream.js';
import { flagsOf, questionFor, RCODE, recordAddress, TYPE } from './wire.js';

/**
 * A name's IPv4 and IPv6 addresses, asked of the upstream resolvers with egress-guard's own DNS client (whose
 * sockets carry the socket mark; node's resolvers open sockets nobody can mark). Every A/AAAA record of the
 * answer section counts: a recursive resolver answers a CNAME chain with the final addresses. Errors carry the
 * codes node's resolver would (ENOTFOUND, ENODATA), so decision/resolver.ts maps them the same way.
 */
export async function lookupAddresses(client: UpstreamClient, name: string): Promise<string[]> {
  const answers = await Promise.allSettled([TYPE.A, TYPE.AAAA].map((type) => client.query(questionFor(name, type), 0)));
  const addresses: string[] = [];
  let nxdomain = false;
  for (const answer of answers) {
    if (answer.status === 'rejected') continue;
    const { response, message } = answer.value;
    if (flagsOf(message.flags).rcode === RCODE.NXDOMAIN) nxdomain = true;
    for (const record of message.answers) {
      const address = record.type === TYPE.A || record.type === TYPE.AAAA ? recordAddress(response, record) : null;
      if (address) addresses.push(address);
    }
  }
  if (addresses.length > 0) return addresses;
  const failed = answers.find((answer): answer is PromiseRejectedResult => answer.status === 'rejected');
  if (failed && !nxdomain) throw failed.reason;
  throw Object.assign(new Error(`${name}: ${nxdomain ? 'no such name' : 'no address'}`), { code: nxdomain ? 'ENOTFOUND' : 'ENODATA' });
}
