import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import dns2 from 'dns2';

const { Packet } = dns2;

export interface TinyDns {
  server: string;
  questions: string[];
  close: () => Promise<void>;
}

/**
 * A minimal UDP DNS server on loopback for proxy tests: answers A records from `records`, NXDOMAIN for
 * other names, or nothing at all when `silent` (to make upstream DNS time out).
 */
export function startTinyDns(records: Record<string, string>, options: { silent?: boolean } = {}): Promise<TinyDns> {
  const socket = dgram.createSocket('udp4');
  const questions: string[] = [];
  socket.on('message', (message, rinfo) => {
    let request;
    try {
      request = Packet.parse(message);
    } catch {
      return;
    }
    const question = request.questions[0];
    if (!question) return;
    questions.push(question.name);
    if (options.silent) return;
    const response = Packet.createResponseFromRequest(request);
    const address = records[question.name.toLowerCase()];
    if (!address) response.header.rcode = 3;
    else if (question.type === Packet.TYPE.A) response.answers.push(Packet.createResourceFromQuestion(question, { type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 60, address }));
    socket.send(response.toBuffer(), rinfo.port, rinfo.address);
  });
  return new Promise((resolve) => {
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address() as AddressInfo;
      resolve({ server: `127.0.0.1:${port}`, questions, close: () => new Promise((r) => socket.close(() => r())) });
    });
  });
}
