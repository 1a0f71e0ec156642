import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { getExtensionData, readTlsClientHello } from 'read-tls-client-hello';
import { clientHelloFactsOf, serverNameOf, type ServerName } from '../../net/sniffing/client-hello.js';
import {
  clientHelloFor,
  clientHelloWithEch,
  ENCRYPTED_CLIENT_HELLO,
  extensionBytes,
  nameList,
  outerEncryptedClientHello,
  withExtensionsAfterServerName,
  withServerName,
} from '../helpers/tls-client-hello.js';

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

/**
 * serverNameOf as it was before it walked the extensions without a view per extension (docs/benchmark.md, "Issue 14,
 * eighth round"): the extensions listed as (type, data) pairs, then the server_name looked for among them. The walk
 * must give the same answer, the same reason included, on every input.
 */
function serverNameByList(record: Buffer): ServerName {
  const end = record.length >= 9 && record[0] === 0x16 ? 5 + record.readUInt16BE(3) : -1;
  if (end === -1) return { unreadable: 'not a TLS handshake record' };
  if (record.length < end) return { unreadable: 'a record shorter than its length' };
  if (record[5] !== 1) return { unreadable: 'a handshake that is not a ClientHello' };
  let at = 5 + 4 + 2 + 32;
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (at + lengthBytes > end) return false;
    at += lengthBytes + record.readUIntBE(at, lengthBytes);
    return at <= end;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return { unreadable: 'a ClientHello cut short before its extensions' };
  const extensions: Array<[number, Buffer]> = [];
  if (at !== end) {
    if (at + 2 > end) return { unreadable: 'a ClientHello cut short before its extensions' };
    const extensionsEnd = at + 2 + record.readUInt16BE(at);
    if (extensionsEnd > end) return { unreadable: 'extensions longer than the record' };
    at += 2;
    while (at < extensionsEnd) {
      if (at + 4 > extensionsEnd) return { unreadable: 'an extension cut short' };
      const type = record.readUInt16BE(at);
      const length = record.readUInt16BE(at + 2);
      at += 4;
      if (at + length > extensionsEnd) return { unreadable: 'an extension longer than the extensions' };
      extensions.push([type, record.subarray(at, at + length)]);
      at += length;
    }
  }
  const names = extensions.filter(([type]) => type === 0);
  if (names.length > 1) return { unreadable: 'two server_name extensions' };
  // The name inside is read by the same function either way: the one extension's data re-encoded alone.
  return names.length === 0 ? { absent: true } : hostNameOfData(names[0]![1]);
}

/** A minimal ClientHello record whose extensions block is `extensions` as given. */
function helloWithExtensions(extensions: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0, 0, 2, 0x13, 0x01, 1, 0, extensions.length >> 8, extensions.length & 0xff]), extensions]);
  const handshake = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1, handshake.length >> 8, handshake.length & 0xff]), handshake]);
}

/** One extension: type, length, data. */
function extension(type: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type >> 8, type & 0xff, data.length >> 8, data.length & 0xff]), data]);
}

/** What serverNameOf says of a hello whose only extension is a server_name with `data`. */
function hostNameOfData(data: Buffer): ServerName {
  return serverNameOf(helloWithExtensions(extension(0, data)));
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

  it('answers as the walk that listed every extension first did, reason for reason, on damaged and doubled hellos', async () => {
    const base = await clientHelloFor('walk.example.test');
    const ascii = (text: string) => Buffer.from(text, 'latin1');
    const second = Buffer.concat([Buffer.from([0, 0, 0, 14]), nameList([0, ascii('evil.test')])]);
    const shapes = [
      base,
      await clientHelloFor(''),
      withServerName(base, nameList([0, ascii('walk.example.test')]), second),
      // A second server_name, then an extension that runs past the end: the bounds are reported, not the second name.
      withServerName(base, nameList([0, ascii('walk.example.test')]), Buffer.concat([second, Buffer.from([0, 5, 0, 200])])),
      withServerName(base, Buffer.alloc(0)),
      // Two stray bytes after the server_name: an extension cut short.
      helloWithExtensions(Buffer.concat([extension(0, nameList([0, ascii('walk.example.test')])), extension(23, Buffer.alloc(0)), Buffer.from([0, 21])])),
    ];
    const seen = new Set<string>();
    fc.assert(
      fc.property(
        fc.constantFrom(...shapes),
        fc.array(fc.tuple(fc.nat({ max: 600 }), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        fc.nat({ max: 2000 }),
        fc.boolean(),
        (shape, edits, cut, fitted) => {
          const record = Buffer.from(shape.subarray(0, Math.max(1, shape.length - (cut % (shape.length + 1)))));
          // A cut record whose length says so: what is cut short is then the hello inside it.
          if (fitted && record.length >= 5) record.writeUInt16BE(record.length - 5, 3);
          for (const [at, byte] of edits) if (at < record.length) record[at] = byte;
          const expected = serverNameByList(record);
          seen.add(JSON.stringify(expected).slice(0, 40));
          assert.deepEqual(serverNameOf(record), expected);
        },
      ),
      { numRuns: 3000, seed: 14 },
    );
    // The inputs reached the answers that matter: a name, none, and the walk's own reasons.
    for (const answer of ['{"name"', '{"absent"', 'two server_name', 'an extension longer', 'an extension cut short', 'ClientHello cut short'])
      assert.ok(
        [...seen].some((s) => s.includes(answer)),
        `no input gave ${answer}: ${[...seen].join(' | ')}`,
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

describe('clientHelloFactsOf: the encrypted_client_hello extension (ECH)', () => {
  it('is reported on a real ClientHello that carries it, with the outer SNI read as before', async () => {
    const record = await clientHelloWithEch('registry.npmjs.test');
    // The lengths were fixed up right: the library's full parser reads the same hello.
    assert.equal(await libraryServerName(record), 'registry.npmjs.test');
    assert.deepEqual(clientHelloFactsOf(record), { name: 'registry.npmjs.test', encryptedClientHello: true });
    assert.deepEqual(serverNameOf(record), { name: 'registry.npmjs.test' });
  });

  it('is not reported when absent, nor for ech_outer_extensions (0xfd00), which only an inner hello carries', async () => {
    const record = await clientHelloFor('registry.npmjs.test');
    assert.deepEqual(clientHelloFactsOf(record), { name: 'registry.npmjs.test' });
    const outerExtensions = withExtensionsAfterServerName(record, extensionBytes(0xfd00, Buffer.from([2, 0x00, 0x0a])));
    assert.deepEqual(clientHelloFactsOf(outerExtensions), { name: 'registry.npmjs.test' });
  });

  it('is reported on a hello without a server_name, and wherever it is among the extensions', () => {
    const ech = extensionBytes(ENCRYPTED_CLIENT_HELLO, outerEncryptedClientHello(40));
    const sni = extensionBytes(0, nameList([0, Buffer.from('front.test')]));
    assert.deepEqual(clientHelloFactsOf(helloWithExtensions(ech)), { absent: true, encryptedClientHello: true });
    assert.deepEqual(clientHelloFactsOf(helloWithExtensions(Buffer.concat([ech, sni]))), { name: 'front.test', encryptedClientHello: true });
    assert.deepEqual(clientHelloFactsOf(helloWithExtensions(Buffer.concat([sni, ech]))), { name: 'front.test', encryptedClientHello: true });
  });

  it('one walk does not leak into the next: a hello without ECH after one with it', async () => {
    const withEch = await clientHelloWithEch('a.test');
    const without = await clientHelloFor('b.test');
    assert.equal(clientHelloFactsOf(withEch).encryptedClientHello, true);
    assert.equal(clientHelloFactsOf(without).encryptedClientHello, undefined);
    assert.equal(clientHelloFactsOf(Buffer.from([0x16, 3, 1, 0, 0])).encryptedClientHello, undefined);
  });
});
