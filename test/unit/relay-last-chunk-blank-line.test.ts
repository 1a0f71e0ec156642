/**
 * LastChunkBlankLine against llhttp itself (AUDIT_MODE_LENIENCY): where it says llhttp eats a chunked body's blank line,
 * llhttp leaves the body unfinished without a blank line of its own and finishes it with one; where it says nothing,
 * llhttp reads the body alike with or without help. Each body is scanned whole and byte by byte (a read cut anywhere).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HTTPParser, PARSER_RESOURCE } from '../../proxy/relay/llhttp.js';
import { BareLfChunkedReads, LastChunkBlankLine, PAUSE_AT_BODY } from '../../proxy/relay/last-chunk-blank-line.js';
import { AUDIT_MODE_LENIENCY } from '../../proxy/relay/request-leniency.js';

const HEAD = 'POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\n';

/** What llhttp makes of HEAD and `body`, given a blank line of its own after `cut` bytes of the body (-1: none). */
function llhttpReads(body: string, cut: number): { complete: boolean; data: string; error?: string } {
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, PARSER_RESOURCE, 0, AUDIT_MODE_LENIENCY);
  const read = { complete: false, data: '' } as { complete: boolean; data: string; error?: string };
  parser[HTTPParser.kOnHeadersComplete] = () => 0;
  parser[HTTPParser.kOnBody] = (chunk: Buffer) => (read.data += chunk.toString('latin1'));
  parser[HTTPParser.kOnMessageComplete] = () => (read.complete = true);
  const bytes = Buffer.from(body, 'latin1');
  const pieces = cut === -1 ? [Buffer.from(HEAD + body, 'latin1')] : [Buffer.from(HEAD, 'latin1'), bytes.subarray(0, cut), Buffer.from('\n'), bytes.subarray(cut)];
  for (const piece of pieces) {
    if (read.complete || read.error) break;
    const ret = parser.execute(piece);
    if (ret instanceof Error) read.error = (ret as NodeJS.ErrnoException).code;
  }
  parser.close();
  return read;
}

function scanWhole(body: string): number {
  return new LastChunkBlankLine().scan(Buffer.from(body, 'latin1'));
}

function scanByteByByte(body: string): number {
  const scan = new LastChunkBlankLine();
  for (let i = 0; i < body.length; i++) if (scan.scan(Buffer.from(body[i]!, 'latin1')) === 1) return i + 1;
  return -1;
}

describe('LastChunkBlankLine: where llhttp, reading bare line ends, eats the blank line after the last chunk', () => {
  const eaten = ['0\n\n', '00\n\n', '5\nhello\n0\n\n', '5\r\nhello\r\n0\n\n', '3\nab\n\n0\n\n', 'a\n0123456789\n0\n\nGET', '5\rhello\n0\n\n'];
  for (const body of eaten) {
    test(`${JSON.stringify(body)}: found, and llhttp finishes the body only with a blank line of its own`, () => {
      const cut = scanWhole(body);
      assert.notEqual(cut, -1);
      assert.equal(scanByteByByte(body), cut);
      assert.equal(body.slice(cut - 2, cut), '\n\n');
      assert.equal(llhttpReads(body.slice(0, cut), -1).complete, false);
      const helped = llhttpReads(body, cut);
      assert.deepEqual([helped.complete, helped.error], [true, undefined]);
    });
  }

  const notEaten = [
    '0\r\n\r\n',
    '0\n\r\n',
    '0\r\n\n',
    '0;ext=1\n\n',
    '0\nX-Trailer: 1\n\n',
    '5\nhello\n0\r\n\r\n',
    '2\n\n\n0\r\n\r\n',
    '5\nhel',
    '5\nhello\n0\n',
    'zz\n\n',
    '1\nX\n\n0\n\n',
  ];
  for (const body of notEaten) {
    test(`${JSON.stringify(body)}: not found (llhttp reads it as it would without help)`, () => {
      assert.equal(scanWhole(body), -1);
      assert.equal(scanByteByByte(body), -1);
    });
  }
});

describe('BareLfChunkedReads: a parser whose head callback pauses at a chunked body', () => {
  /** `reads` parsed one after the other; what llhttp made of them, and whether a body was watched after the head. */
  function readAll(reads: string[]): { complete: number; bodies: string[]; errors: string[]; watched: boolean } {
    const parser = new HTTPParser();
    parser.initialize(HTTPParser.REQUEST, PARSER_RESOURCE, 0, AUDIT_MODE_LENIENCY);
    const lenientReads = new BareLfChunkedReads(parser);
    const seen = { complete: 0, bodies: [''], errors: [] as string[], watched: false };
    parser[HTTPParser.kOnHeadersComplete] = () => PAUSE_AT_BODY;
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => (seen.bodies[seen.bodies.length - 1] += chunk.toString('latin1'));
    parser[HTTPParser.kOnMessageComplete] = () => {
      seen.complete++;
      seen.bodies.push('');
      lenientReads.messageComplete();
    };
    const executed = (ret: number | Error) => {
      if (ret instanceof Error) seen.errors.push((ret as NodeJS.ErrnoException).code ?? 'error');
      seen.watched ||= lenientReads.watching;
    };
    for (const read of reads) lenientReads.read(Buffer.from(read, 'latin1'), executed, () => true);
    parser.close();
    return seen;
  }

  test('bare line ends: `0\\n\\n` ends the body, in one read or cut anywhere, and a request behind it is read as one', () => {
    const bytes = `${HEAD}5\nhello\n0\n\nGET /next HTTP/1.1\nHost: a.test\n\n`;
    for (let cut = 0; cut <= bytes.length; cut++) {
      const seen = readAll([bytes.slice(0, cut), bytes.slice(cut)]);
      assert.deepEqual([seen.complete, seen.bodies[0], seen.errors, seen.watched], [2, 'hello', [], true], `cut at ${cut}`);
    }
  });

  test('a head ended in CRLF CRLF: its body is not watched, and read as llhttp reads it', () => {
    const seen = readAll(['POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n']);
    assert.deepEqual([seen.complete, seen.bodies[0], seen.errors, seen.watched], [1, 'hello', [], false]);
  });
});
