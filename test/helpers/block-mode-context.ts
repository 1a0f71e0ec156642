import { AddressBook } from '../../decision/address-book.js';
import type { AuthorizeContext } from '../../decision/authorize.js';
import { Resolver } from '../../decision/resolver.js';
import type { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';

/** What authorize() needs in a test: block mode allowing `allowed`, loopback trusted, each of `names` at 127.0.0.1. */
export function blockModeContext(allowed: string, names: readonly string[], events: EventLog): AuthorizeContext {
  const origin = { file: 'test', line: 1 };
  const policy = buildPolicy({
    mode: { value: 'block', origin },
    'allowed-endpoints': { value: allowed, origin },
    'trusted-ranges': { value: '127.0.0.0/8', origin },
  });
  const resolver = new Resolver({ overrides: new Map(names.map((name) => [name, ['127.0.0.1']])), addressBook: new AddressBook() });
  return { policy: () => policy, resolver, events };
}
