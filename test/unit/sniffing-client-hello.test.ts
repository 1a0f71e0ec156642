import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import { serverNameOf } from '../../net/sniffing/client-hello.js';
import { clientHelloFor } from '../helpers/tls-client-hello.js';

/** The library's full stream parser, as the oracle the synchronous walk must agree with. */
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

describe('serverNameOf (synchronous ClientHello walk)', () => {
  it('reads the SNI of real ClientHellos exactly as the library does', async () => {
    const names = fc.sample(hostname, { numRuns: 25, seed: 14 });
    for (const name of [...names, 'a.test', `${'x'.repeat(63)}.${'y'.repeat(63)}.test`]) {
      const record = await clientHelloFor(name);
      assert.equal(serverNameOf(record), name);
      assert.equal(await libraryServerName(record), name);
    }
  });

  it('finds no SNI in a ClientHello without one (an IP address as the server name)', async () => {
    const record = await clientHelloFor('');
    assert.equal(serverNameOf(record), undefined);
    assert.equal(await libraryServerName(record), undefined);
  });

  it('never throws on damaged hellos, and agrees with the library whenever it finds a name', async () => {
    const base = await clientHelloFor('damaged.example.test');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.nat({ max: base.length }),
        async (edits, keep) => {
          const record = Buffer.from(base.subarray(0, Math.max(keep, 1)));
          for (const [at, byte] of edits) if (at < record.length) record[at] = byte;
          const ours = serverNameOf(record);
          // A name we read must be one the library reads too (the library may also read names in hellos we
          // refuse as malformed: refusing more is the safe side for an SNI check).
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
        const name = serverNameOf(record);
        assert.ok(name === undefined || typeof name === 'string');
      }),
      { numRuns: 2000, seed: 14 },
    );
  });
});
