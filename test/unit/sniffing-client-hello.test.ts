import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import { serverNameOf, type ServerName } from '../../net/sniffing/client-hello.js';
import { clientHelloFor, nameList, withServerName } from '../helpers/tls-client-hello.js';

/** read-tls-client-hello's full stream parser, the oracle the synchronous walk must agree with on real hellos. */
async function libraryServerName(record: Buffer): Promise<string | undefined> {
  try {
    const hello = await readTlsClientHello(Readable.from([record], { objectMode: false }));
    const name = (getExtensionData(hello, 'server_name') as { serverName?: string } | null | undefined)?.serverName;
    return typeof name === 'string' && name.length > 0 ? name : undefined;
  } catch {
    return undefined;
  }
}

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/);
const hostname = fc.array(label, { minLength: 2, maxLength: 4 }).map((labels) => `${labels.join('.')}.test`);
const nameOf = (s: ServerName) => ('name' in s ? s.name : undefined);

describe('serverNameOf (synchronous ClientHello walk)', () => {
  it('reads the SNI of real ClientHellos exactly as the library does', async () => {
    const names = fc.sample(hostname, { numRuns: 25, seed: 14 });
    for (const name of [...names, 'a.test', `${'x'.repeat(63)}.${'y'.repeat(63)}.test`]) {
      const record = await clientHelloFor(name);
      assert.deepEqual(serverNameOf(record), { name });
      assert.equal(await libraryServerName(record), name);
    }
  });

  it('a ClientHello without a server_name (an IP address as the server name) has none', async () => {
    assert.deepEqual(serverNameOf(await clientHelloFor('')), { absent: true });
  });

  it('a server_name that is not exactly one printable host name is unreadable, never "no SNI" nor its first entry', async () => {
    const record = await clientHelloFor('github.test');
    const ascii = (s: string) => Buffer.from(s, 'latin1');
    const cases: Array<[string, Buffer, Buffer?]> = [
      ['a list with a second entry', nameList([0, ascii('github.test')], [0, ascii('evil.test')])],
      ['a list whose first entry is another name type', nameList([1, ascii('x')], [0, ascii('evil.test')])],
      ['a NUL in the name', nameList([0, ascii('github.test\0.evil.test')])],
      ['a byte past ASCII (read as the allowed name by 7-bit decoding)', nameList([0, ascii('\xe7ithub.test')])],
      ['an empty name', nameList([0, Buffer.alloc(0)])],
      ['a list length that lies', Buffer.concat([Buffer.from([0, 99]), nameList([0, ascii('github.test')]).subarray(2)])],
      // A second server_name extension after the first.
      ['two server_name extensions', nameList([0, ascii('github.test')]), Buffer.concat([Buffer.from([0, 0, 0, 14]), nameList([0, ascii('evil.test')])])],
    ];
    for (const [what, data, extra] of cases) {
      const result = serverNameOf(withServerName(record, data, extra));
      assert.ok('unreadable' in result, `${what}: ${JSON.stringify(result)}`);
    }
    // The re-encoding itself is sound: the same name re-encoded reads back.
    assert.deepEqual(serverNameOf(withServerName(record, nameList([0, ascii('evil.test')]))), { name: 'evil.test' });
  });

  it('never throws on damaged hellos, and a name it reads is one the library reads too', async () => {
    const base = await clientHelloFor('damaged.example.test');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.nat({ max: base.length }),
        async (edits, keep) => {
          const record = Buffer.from(base.subarray(0, Math.max(keep, 1)));
          for (const [at, byte] of edits) if (at < record.length) record[at] = byte;
          const ours = nameOf(serverNameOf(record));
          // The library also reads names in hellos refused here as malformed: refusing more is the safe side.
          if (ours !== undefined) assert.equal(ours, await libraryServerName(record));
        },
      ),
      { numRuns: 400, seed: 14 },
    );
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const record = Buffer.from(bytes);
        if (record.length > 0) record[0] = 0x16;
        const result = serverNameOf(record);
        assert.ok('name' in result || 'absent' in result || 'unreadable' in result);
      }),
      { numRuns: 2000, seed: 14 },
    );
  });
});
