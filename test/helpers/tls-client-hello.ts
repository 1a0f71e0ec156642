import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { connect } from 'node:tls';

/** The ClientHello record node's TLS client sends for `servername`. */
export async function clientHelloFor(servername: string): Promise<Buffer> {
  const sink = net.createServer();
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  const first = new Promise<Buffer>((resolve) =>
    sink.once('connection', (s) =>
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
      }),
    ),
  );
  const tls = connect({ port: (sink.address() as AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
  tls.on('error', () => undefined);
  const hello = await first;
  tls.destroy();
  sink.close();
  return hello;
}

/** The same handshake message in two TLS records, the first cut after `cut` bytes of it. */
export function splitClientHello(record: Buffer, cut: number): Buffer {
  const message = record.subarray(5);
  const frame = (part: Buffer) => Buffer.concat([Buffer.from([0x16, record[1]!, record[2]!, part.length >> 8, part.length & 0xff]), part]);
  return Buffer.concat([frame(message.subarray(0, cut)), frame(message.subarray(cut))]);
}
