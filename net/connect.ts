import net from 'node:net';
import type { CloseError } from '../events/schema.js';
import { formatHostPort } from '../policy/index.js';
import { kernelConnect } from './kernel-relay.js';
import { connectTcp, socketMark } from './socket-mark.js';

/** Why upstream could not be reached or answer: the status for the client and the close event's error. */
export interface UpstreamFailure {
  status: 502 | 504;
  error: CloseError;
}

/**
 * The one mapping of an upstream socket error to a status and a close error: one of our timeouts is 504
 * `upstream-timeout`, a refusal 502 `upstream-refused`, anything else 502 `upstream-<errno>`.
 */
export function upstreamFailure(err: NodeJS.ErrnoException, timedOut: boolean): UpstreamFailure {
  if (timedOut) return { status: 504, error: 'upstream-timeout' };
  if (err.code === 'ECONNREFUSED') return { status: 502, error: 'upstream-refused' };
  if (isTlsVerificationError(err)) return { status: 502, error: 'upstream-tls' };
  return { status: 502, error: `upstream-${(err.code ?? 'error').toLowerCase()}` };
}

/** An upstream TLS failure: its certificate does not verify for the name, or the handshake failed. */
function isTlsVerificationError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || /CERT|SIGNATURE|ISSUER/.test(code);
}

export class UpstreamConnectError extends Error implements UpstreamFailure {
  constructor(
    message: string,
    readonly status: 502 | 504,
    readonly error: CloseError,
  ) {
    super(message);
  }

  /** Whatever connectUpstream() rejected with, as an UpstreamConnectError. */
  static from(err: unknown): UpstreamConnectError {
    return err instanceof UpstreamConnectError ? err : new UpstreamConnectError(String(err), 502, 'upstream-error');
  }
}

/** Open a TCP connection to an exact, already-checked address, failing after timeoutMs with 504. */
export function connectUpstream(address: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => {
      // Our timeout is the timer below; an ETIMEDOUT from the kernel is reported as the socket error it is.
      const failure = upstreamFailure(err, false);
      reject(new UpstreamConnectError(`connecting to ${formatHostPort(address, port)} failed: ${err.code ?? err.message}`, failure.status, failure.error));
    };
    let socket: net.Socket;
    try {
      // allowHalfOpen: a server's FIN ends only its direction; the client may still send (see splice.ts).
      socket = connectTcp({ host: address, port, noDelay: true, allowHalfOpen: true });
    } catch (err) {
      // A marked socket the kernel would not make (EPERM): mapped as the native path maps it (upstream-eperm).
      return failed(err as NodeJS.ErrnoException);
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamConnectError(`connecting to ${formatHostPort(address, port)} timed out after ${timeoutMs} ms`, 504, 'upstream-timeout'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      failed(err);
    });
  });
}

/**
 * connectUpstream for a tunnel whose upstream is opened by the kernel relay's addon (kernelUpstreamUsable): resolves
 * with the upstream's id once connected, rejects with the same statuses, close errors and messages as connectUpstream.
 */
export function connectUpstreamInKernel(address: string, port: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const target = formatHostPort(address, port);
    const fail = (code: string) => {
      const failure = upstreamFailure(Object.assign(new Error(code), { code }), false);
      reject(new UpstreamConnectError(`connecting to ${target} failed: ${code}`, failure.status, failure.error));
    };
    let id: number;
    try {
      id = kernelConnect(address, port, timeoutMs, socketMark(), (outcome) => {
        if (outcome.connected) return resolve(id);
        if (outcome.timedOut) return reject(new UpstreamConnectError(`connecting to ${target} timed out after ${timeoutMs} ms`, 504, 'upstream-timeout'));
        fail(outcome.code);
      });
    } catch (err) {
      fail((err as NodeJS.ErrnoException).code ?? 'error');
    }
  });
}
