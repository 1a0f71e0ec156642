import { createHash } from 'node:crypto';

/** Size of the block the bulk body repeats; large enough that writes are not syscall-bound. */
export const BODY_BLOCK_SIZE = 64 * 1024;

/** 1 KiB response of the request-rate scenarios. */
export const SMALL_BODY = Buffer.alloc(1024, 'egress-guard bench 1 KiB body\n');

let block: Buffer | undefined;

/** A deterministic pseudo-random block (a sha256 chain), so a client can check what it received. */
export function bodyBlock(): Buffer {
  if (block) return block;
  const out = Buffer.alloc(BODY_BLOCK_SIZE);
  let digest = createHash('sha256').update('egress-guard bench').digest();
  for (let offset = 0; offset < out.length; offset += digest.length) {
    digest.copy(out, offset);
    digest = createHash('sha256').update(digest).digest();
  }
  block = out;
  return out;
}

/** The chunks of a body of `size` bytes: the block repeated, the last one cut short. */
export function* bodyChunks(size: number): Generator<Buffer> {
  const b = bodyBlock();
  for (let sent = 0; sent < size; sent += b.length) yield size - sent >= b.length ? b : b.subarray(0, size - sent);
}

/** sha256 (hex) of the body the servers send for `size` bytes. */
export function expectedBodyDigest(size: number): string {
  const hash = createHash('sha256');
  for (const chunk of bodyChunks(size)) hash.update(chunk);
  return hash.digest('hex');
}
