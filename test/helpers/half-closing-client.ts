/**
 * python3: connect (optionally through CONNECT), send the payload, shut down the sending side, print
 * everything received until the other side's FIN. Exit 3 on a connection error.
 */
export const HALF_CLOSING_CLIENT = `
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode('latin1').decode('unicode_escape').encode('latin1')
connect_to = sys.argv[4] if len(sys.argv) > 4 else None
try:
    s = socket.create_connection((host, port), timeout=10)
    if connect_to:
        s.sendall(('CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n' % (connect_to, connect_to)).encode())
        head = b''
        while b'\\r\\n\\r\\n' not in head:
            chunk = s.recv(1)
            if not chunk:
                break
            head += chunk
        sys.stdout.write(head.split(b'\\r\\n')[0].decode() + '\\n')
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    sys.stdout.write(data.decode('latin1'))
except OSError as e:
    sys.stderr.write('connection error: %s\\n' % e)
    sys.exit(3)
`;

/**
 * The argv of `python3` running it: the payload's `\r\n` escapes are turned into bytes by the script, so a
 * payload can hold a request head, or a whole CONNECT head and the tunnel's first bytes in one segment.
 */
export function halfClosingClientArgs(host: string, port: number, payload: string, connectTo?: string): string[] {
  return ['-c', HALF_CLOSING_CLIENT, host, String(port), payload, ...(connectTo ? [connectTo] : [])];
}
