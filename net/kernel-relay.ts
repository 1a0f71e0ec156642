import { isIP, Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';
import type { CloseError } from '../events/schema.js';
import { lazyLinuxAddon } from './native-addon.js';

/**
 * The kernel data plane of a decided tunnel (setting `relay`, issue 14): the native kernel_relay addon
 * (native/kernel_relay.c) moves the bytes of both sockets in native code: a tunnel's first bytes with recv/send on
 * node's own event loop, then bulk with splice(2) on a thread of its own (setting `relay-thread-after`), so its bytes
 * never enter JavaScript. net/splice.ts hands a tunnel over here; this module holds the parts that reach into
 * node's sockets.
 */
interface KernelRelayAddon {
  init(onDone: (id: number, bytesIn: number, bytesOut: number, reason: number, errno: number) => void): void;
  start(clientFd: number, upstreamFd: number, idleMs: number, halfCloseMs: number): number;
  cancel(id: number): [bytesIn: number, bytesOut: number, reason: number, errno: number] | undefined;
  stats(): RelayStats;
  connect(family: 4 | 6, address: string, port: number, mark: number, timeoutMs: number): number;
  attach(id: number, clientFd: number, idleMs: number, halfCloseMs: number): boolean;
  release(id: number, firstBytes?: Buffer): boolean;
  take(id: number): [bytesIn: number, bytesOut: number, reason: number, errno: number, fd: number] | undefined;
  mainLoopBytes(bytes: number): void;
  /** Missing from an addon built before it (a stale prebuild): bodies are relayed in JavaScript then. */
  pump?(upstreamFd: number, clientFd: number, bytes: number, idleMs: number): number;
}

/** The addon's reasons that end a connect() (kernel_relay.c): failed (errno), timed out, connected. */
const CONNECT_FAILED = 5;
const CONNECT_TIMEOUT = 6;
const CONNECTED = 7;
/** The addon's reasons that end a pump() (kernel_relay.c): every byte moved, upstream's FIN first. */
const PUMP_DONE = 0;
const PUMP_CUT = 8;

type OnDone = (bytesIn: number, bytesOut: number, reason: number, errno: number) => void;

export interface RelayStats {
  /** Open native relays, relays ever started, pipes open (spare ones in the pool included). */
  relays: number;
  started: number;
  pipes: number;
  sparePipes: number;
  /** Relays whose bytes node's own event loop moves now, and relays ever moved from there to the relay thread. */
  onMainLoop: number;
  movedToThread: number;
}

export type RelayMode = 'kernel' | 'js';
export const RELAY_MODES: readonly RelayMode[] = ['kernel', 'js'];

export interface KernelRelayEnd {
  bytesIn: number;
  bytesOut: number;
  error?: CloseError;
}

let mode: RelayMode = 'kernel';
const running = new Map<number, OnDone>();

let afterBytes = 0;

/** The default of setting `relay-thread-after`: past a TLS handshake and a small exchange, short of bulk. */
export const RELAY_THREAD_AFTER_DEFAULT = 65536;
let threadAfterBytes = RELAY_THREAD_AFTER_DEFAULT;

/**
 * Which relay splice() uses for decided tunnels from now on; `kernel` falls back to `js` where the addon is missing.
 * `handOverAfterBytes`: relay this many bytes (both ways together) in JavaScript first, and hand over mid-stream.
 * `threadAfter`: the native relay moves this many bytes (both ways together) on node's own event loop (recv/send),
 * then its thread takes the tunnel and splices the rest (0: the thread at once; kernel_relay.c, "The main loop").
 */
export function useRelay(next: RelayMode, handOverAfterBytes = 0, threadAfter = RELAY_THREAD_AFTER_DEFAULT): void {
  mode = next;
  afterBytes = handOverAfterBytes;
  threadAfterBytes = threadAfter;
  // Loaded here when it will be used (the sidecar asks kernelRelayUnavailable() next anyway); else at its first use.
  if (next === 'kernel') loaded()?.mainLoopBytes(threadAfter);
}

export function kernelRelayAfterBytes(): number {
  return afterBytes;
}

/** The addon, loaded at the first use; null (with the reason in kernelRelayUnavailable()) where it cannot be. */
const addon = lazyLinuxAddon<KernelRelayAddon>('kernel_relay', import.meta.url, 'splice(2)', (native) => {
  native.init(onDone);
  native.mainLoopBytes(threadAfterBytes);
  // At exit node closes every socket's fd without calling its _destroy; the relays still running are taken
  // from the thread first, so that it never touches an fd number node has let go of.
  process.once('exit', () => {
    for (const id of [...running.keys()]) native.cancel(id);
  });
});
const loaded = addon.get;

/** Why decided tunnels are relayed in JavaScript although `kernel` was asked for; undefined when they are not. */
export function kernelRelayUnavailable(): string | undefined {
  return mode === 'kernel' ? addon.unavailable() : undefined;
}

/** Open native relays and the pipes they hold (tests: an idle relay holds none). */
export function kernelRelayStats(): RelayStats {
  return loaded()?.stats() ?? { relays: 0, started: 0, pipes: 0, sparePipes: 0, onMainLoop: 0, movedToThread: 0 };
}

const REASONS: Record<number, (errno: number) => CloseError | undefined> = {
  0: () => undefined,
  1: (errno) => `client-${errnoName(errno)}`,
  2: (errno) => `upstream-${errnoName(errno)}`,
  3: () => 'idle-timeout',
  4: () => 'half-close-timeout',
};

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return 'error';
  }
}

function ending(bytesIn: number, bytesOut: number, reason: number, errno: number): KernelRelayEnd {
  const error = REASONS[reason]?.(errno);
  return { bytesIn, bytesOut, ...(error && { error }) };
}

function onDone(id: number, bytesIn: number, bytesOut: number, reason: number, errno: number): void {
  const handler = running.get(id);
  running.delete(id);
  handler?.(bytesIn, bytesOut, reason, errno);
}

/** node's libuv handle of a TCP socket, with the members used here. */
interface TcpHandle {
  fd?: number;
  reading?: boolean;
  writeQueueSize?: number;
  readStop?: () => number;
}

/**
 * The one place that relies on node internals for the fd: on Linux a TCP socket's `_handle` (a TCPWrap) has the
 * descriptor as `fd`. A socket without one (TLS, not connected yet, another platform) is not handed over.
 */
function handleOf(socket: Socket): TcpHandle | undefined {
  return (socket as unknown as { _handle?: TcpHandle | null })._handle ?? undefined;
}

function fdOf(socket: Socket): number | undefined {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** Whether splice() may hand this pair over: the kernel relay is on and available, both are plain connected TCP sockets, neither has ended its writing. */
export function kernelRelayUsable(client: Socket, upstream: Socket): boolean {
  if (mode !== 'kernel' || !loaded()) return false;
  return [client, upstream].every(
    (s) => !('encrypted' in s) && !s.destroyed && !s.connecting && !s.writableEnded && fdOf(s) !== undefined && handleOf(s)?.constructor?.name === 'TCP',
  );
}

/**
 * Stop node reading the socket: pause it, stop its handle's reads, and make its `_read` a no-op so that nothing
 * (a `read(0)` node schedules after a push) starts them again while the fd belongs to the native relay.
 * Returns what node had read already and not yet delivered (to be sent on first).
 */
export function stopReading(socket: Socket): Buffer | undefined {
  holdReading(socket);
  if (socket.readableLength === 0) return undefined;
  return (socket.read() as Buffer | null) ?? undefined;
}

/**
 * Undo stopReading (the hand-over did not happen); the caller pipes the socket again. A read that node started
 * before stopReading (or the no-op `_read` since) left the stream's `reading` flag set: node would take it for a
 * read in progress and never call `_read` (so never restart the handle's reads) again. Cleared here.
 */
export function resumeReading(socket: Socket): void {
  delete (socket as unknown as { _read?: unknown })._read;
  const state = (socket as unknown as { _readableState?: { reading: boolean } })._readableState;
  if (state && !handleOf(socket)?.reading) state.reading = false;
}

/** Nothing of node's left to write: the native relay may write to the fd. */
export function writesFlushed(socket: Socket): boolean {
  return socket.writableLength === 0 && (handleOf(socket)?.writeQueueSize ?? 0) === 0;
}

/**
 * Give both sockets' fds to the native relay (after stopReading and writesFlushed). Until the relay ends, every
 * destroy of either socket first cancels it: node closes the fd inside destroy(), and the native thread must not
 * touch an fd after that (its number may be reused by the next accept at once). Cancelling is synchronous and
 * waits if the thread is mid-operation on the relay.
 *
 * `onEnd` is called once: `byDestroy` false when the relay ended by itself (both FINs passed on, an error, a
 * timeout; the caller then destroys both sockets), true when a destroy of either socket ended it (the socket's
 * own 'close' follows). Returns false, and changes nothing, when the addon refuses the relay.
 */
/** A timeout for the addon (positive ms): 0 is none, as for node's socket.setTimeout(0) in the JS relay. */
function nativeTimeout(ms: number): number {
  return ms > 0 ? Math.max(1, Math.round(ms)) : Number.MAX_SAFE_INTEGER;
}

export function startKernelRelay(
  client: Socket,
  upstream: Socket,
  timeouts: { idleTimeoutMs: number; halfCloseTimeoutMs: number },
  onEnd: (end: KernelRelayEnd, byDestroy: boolean) => void,
): boolean {
  const native = loaded()!;
  let id: number;
  try {
    id = native.start(fdOf(client)!, fdOf(upstream)!, nativeTimeout(timeouts.idleTimeoutMs), nativeTimeout(timeouts.halfCloseTimeoutMs));
  } catch {
    return false;
  }
  watchRelay(native, id, [client, upstream], onEnd);
  return true;
}

/**
 * A started relay's end, reported once through `onEnd`: by the thread (onDone), or by a destroy of one of `sockets`,
 * which cancels the relay first (node closes the fd inside destroy()). Returns what cancels it without a destroy.
 */
function watchRelay(native: KernelRelayAddon, id: number, sockets: Socket[], onEnd: (end: KernelRelayEnd, byDestroy: boolean) => void): RelayCancel {
  let ended = false;
  const end = (result: KernelRelayEnd, byDestroy: boolean) => {
    if (ended) return;
    ended = true;
    running.delete(id);
    onEnd(result, byDestroy);
  };
  running.set(id, (...result) => end(ending(...result), false));
  const cancel = () => {
    const cancelled = native.cancel(id);
    end(cancelled ? ending(...cancelled) : { bytesIn: 0, bytesOut: 0 }, true);
  };
  for (const socket of sockets) cancelOnDestroy(socket, () => ended, cancel);
  return Object.assign(cancel, {
    takeUpstream: (): Socket | undefined => {
      const taken = native.take(id);
      end(taken ? ending(...(taken.slice(0, 4) as [number, number, number, number])) : { bytesIn: 0, bytesOut: 0 }, true);
      return upstreamOf(taken);
    },
  });
}

/** What cancels a relay (see watchRelay); `takeUpstream` cancels it too, keeping its untouched upstream (see takeKernelUpstream). */
export type RelayCancel = (() => void) & { takeUpstream(): Socket | undefined };

/**
 * A node socket for the upstream fd take() handed over (its fifth value; -1 when it closed it), a connected TCP socket
 * read and written by node from now on; undefined when none was.
 */
function upstreamOf(taken: ReturnType<KernelRelayAddon['take']>): Socket | undefined {
  const fd = taken?.[4] ?? -1;
  return fd >= 0 ? new Socket({ fd, readable: true, writable: true }) : undefined;
}

/**
 * The upstream of a connected (or attached, its client's bytes still held) kernelConnect as a node socket, when nothing
 * has been read from it or written to it and it has sent no FIN: the connection a plain-HTTP tunnel's first request
 * reuses (issue 14). Otherwise closed, as cancelKernelUpstream does, and undefined.
 */
export function takeKernelUpstream(id: number): Socket | undefined {
  running.delete(id);
  return upstreamOf(loaded()?.take(id));
}

/** Before node closes the socket's fd (inside destroy()), `cancel` takes its relay out of the native thread, unless `ended`. */
function cancelOnDestroy(socket: Socket, ended: () => boolean, cancel: () => void): void {
  type Destroy = (err: Error | null, callback: (err: Error | null) => void) => void;
  const own = socket as unknown as { _destroy: Destroy };
  const destroy = own._destroy;
  own._destroy = function (this: Socket, err, callback) {
    if (!ended()) cancel();
    destroy.call(this, err, callback);
  };
}

/**
 * The upstream of a decided tunnel opened by the addon (issue 14: no JavaScript socket, no libuv handle for it):
 * a plain fd the native relay owns from its connect to its close. Used where the whole tunnel goes to the kernel
 * relay anyway; see kernelUpstreamUsable.
 */
export type KernelConnectOutcome = { connected: true } | { connected: false; timedOut: true } | { connected: false; timedOut: false; code: string };

/**
 * Whether a tunnel from `client` to `address` may have its upstream opened by the addon: the kernel relay is on
 * (no JavaScript relaying first: kernelRelayAfterBytes() 0), loaded, the client a plain connected TCP socket, the
 * address a plain IP address (no zone: node's connect handles those).
 */
export function kernelUpstreamUsable(client: Socket, address: string): boolean {
  if (mode !== 'kernel' || afterBytes !== 0 || !loaded()) return false;
  return (
    addressFamily(address) !== 0 &&
    !('encrypted' in client) &&
    !client.destroyed &&
    !client.connecting &&
    fdOf(client) !== undefined &&
    handleOf(client)?.constructor?.name === 'TCP'
  );
}

function bare(address: string): string {
  return address.replace(/^\[(.*)\]$/, '$1');
}

function addressFamily(address: string): 0 | 4 | 6 {
  return isIP(bare(address)) as 0 | 4 | 6;
}

/**
 * Start connecting to an IP address (marked with `mark` when given); `done` is called once, on the JS thread, when
 * it connected, failed or took longer than timeoutMs. Returns the upstream's id (for attachKernelRelay, or
 * cancelKernelUpstream when it is not wanted after all). Throws (an errno `code`) when the socket cannot even be made.
 */
export function kernelConnect(address: string, port: number, timeoutMs: number, mark: number | undefined, done: (outcome: KernelConnectOutcome) => void): number {
  const native = loaded()!;
  const id = native.connect(addressFamily(address) as 4 | 6, bare(address), port, mark ?? 0, nativeTimeout(timeoutMs));
  running.set(id, (_in, _out, reason, errno) => {
    if (reason === CONNECTED) return done({ connected: true });
    if (reason === CONNECT_TIMEOUT) return done({ connected: false, timedOut: true });
    done({ connected: false, timedOut: false, code: reason === CONNECT_FAILED ? errnoName(errno) : 'error' });
  });
  return id;
}

/** Close a connected (or still connecting) upstream from kernelConnect that no relay will use. */
export function cancelKernelUpstream(id: number): void {
  running.delete(id);
  loaded()?.cancel(id);
}

/**
 * Make a connected upstream from kernelConnect the relay of `client` (its writes flushed, see writesFlushed): bytes
 * from upstream flow to the client at once; the client's wait for releaseKernelRelay (node still reads them: the
 * first bytes' check). Until the relay ends, a destroy of the client cancels it; the upstream fd is the relay's and
 * closed with it. `onEnd` as for startKernelRelay. Returns what cancels the relay without a destroy (onEnd's
 * byDestroy true), or undefined when the upstream is gone (cancelled).
 */
export function attachKernelRelay(
  upstream: number,
  client: Socket,
  timeouts: { idleTimeoutMs: number; halfCloseTimeoutMs: number },
  onEnd: (end: KernelRelayEnd, byDestroy: boolean) => void,
): RelayCancel | undefined {
  const native = loaded()!;
  if (!native.attach(upstream, fdOf(client)!, nativeTimeout(timeouts.idleTimeoutMs), nativeTimeout(timeouts.halfCloseTimeoutMs))) return undefined;
  return watchRelay(native, upstream, [client], onEnd);
}

/**
 * The client's bytes flow to upstream from now on, `firstBytes` (what node read of them, see stopReading) first.
 * false: the relay has ended already (its onEnd comes). The relay keeps a copy of firstBytes and writes it first.
 */
export function releaseKernelRelay(upstream: number, firstBytes: Buffer | undefined): boolean {
  return loaded()!.release(upstream, firstBytes);
}

/**
 * How a body pump ended: `done` every byte moved; `cut` upstream's FIN came first; `idle` no byte moved for its idle
 * timeout; `client` / `upstream` an error of that side (`code`, an errno name); `destroyed` a destroy of either socket
 * cancelled it (that socket's 'close' follows). `bytes`: what reached the client, in every case. A `done` with a
 * `code`: upstream failed (a reset) after the pump had read its last byte; the client got every byte, but the
 * connection is not to be used again.
 */
export interface BodyPumpEnd {
  outcome: 'done' | 'cut' | 'idle' | 'client' | 'upstream' | 'destroyed';
  bytes: number;
  code?: string;
}

/**
 * Whether the rest of a plain HTTP response body may be pumped from `upstream` to `client` in native code now: the
 * kernel relay is on, its addon has pump() (a stale prebuild has not), both are plain connected TCP sockets and
 * node has nothing left to write to the client.
 */
export function bodyPumpUsable(upstream: Socket, client: Socket): boolean {
  return typeof loaded()?.pump === 'function' && kernelRelayUsable(client, upstream) && writesFlushed(client) && upstream.writable;
}

function pumpEnd(bytes: number, reason: number, errno: number): BodyPumpEnd {
  // An errno with `done`: upstream failed (reset) after its last byte was read, and the client still got them all.
  if (reason === PUMP_DONE) return errno ? { outcome: 'done', bytes, code: errnoName(errno) } : { outcome: 'done', bytes };
  if (reason === PUMP_CUT) return { outcome: 'cut', bytes };
  if (reason === 3) return { outcome: 'idle', bytes };
  return { outcome: reason === 1 ? 'client' : 'upstream', bytes, code: errnoName(errno) };
}

/**
 * Pump exactly `bytes` of a response body from `upstream` to `client` with splice(2) on the relay thread (after
 * bodyPumpUsable, and after the caller stopped node reading both sockets). Both sockets' idle timers are stopped
 * meanwhile (native writes do not refresh them; the pump has its own, `idleMs`) and set again at its end, for the
 * sockets not destroyed. A destroy of either socket cancels the pump first (node closes the fd inside destroy()),
 * and the guard is taken off again at the end: a keep-alive connection pumps many bodies, and a guard left per
 * pump would wrap its destroy once more each time. `onEnd` is called once. False: the addon refused it (nothing
 * changed).
 */
export function startBodyPump(upstream: Socket, client: Socket, bytes: number, idleMs: number, onEnd: (end: BodyPumpEnd) => void): boolean {
  const native = loaded()!;
  let id: number;
  try {
    id = native.pump!(fdOf(upstream)!, fdOf(client)!, bytes, nativeTimeout(idleMs));
  } catch {
    return false;
  }
  const sockets = [upstream, client];
  const timeouts = sockets.map((socket) => socket.timeout ?? 0);
  for (const socket of sockets) socket.setTimeout(0);
  let ended = false;
  const unguard: (() => void)[] = [];
  const end = (result: BodyPumpEnd) => {
    if (ended) return;
    ended = true;
    running.delete(id);
    for (const undo of unguard) undo();
    sockets.forEach((socket, i) => {
      if (!socket.destroyed && timeouts[i]! > 0) socket.setTimeout(timeouts[i]!);
    });
    onEnd(result);
  };
  running.set(id, (bytesIn, _out, reason, errno) => end(pumpEnd(bytesIn, reason, errno)));
  const cancel = () => {
    if (ended) return;
    const cancelled = native.cancel(id);
    end({ outcome: 'destroyed', bytes: cancelled?.[0] ?? 0 });
  };
  for (const socket of sockets) unguard.push(guardDestroy(socket, cancel));
  return true;
}

/** Until the returned undo, `cancel` runs before node closes the socket's fd (inside destroy()); see startBodyPump. */
function guardDestroy(socket: Socket, cancel: () => void): () => void {
  type Destroy = (err: Error | null, callback: (err: Error | null) => void) => void;
  const own = socket as unknown as { _destroy: Destroy };
  const hadOwn = Object.hasOwn(own, '_destroy');
  const destroy = own._destroy;
  const guarded: Destroy = function (this: Socket, err, callback) {
    cancel();
    destroy.call(this, err, callback);
  };
  own._destroy = guarded;
  return () => {
    if (own._destroy !== guarded) return;
    if (hadOwn) own._destroy = destroy;
    else delete (own as { _destroy?: Destroy })._destroy;
  };
}

/**
 * Stop node reading `socket` without taking what it holds already (a body pump's client: its request reader reads on
 * afterwards, from where it stopped): paused, its `_read` a no-op, its handle's reads stopped. Undone by resumeReading.
 */
export function holdReading(socket: Socket): void {
  socket.pause();
  (socket as unknown as { _read: () => void })._read = () => undefined;
  const handle = handleOf(socket);
  if (handle?.reading) {
    handle.reading = false;
    handle.readStop?.();
  }
}
