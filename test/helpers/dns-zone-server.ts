import type { AddressInfo } from 'node:net';
import dns2 from 'dns2';

const { Packet } = dns2;

export interface ZoneRecord {
  type: 'A' | 'AAAA' | 'CNAME' | 'TXT' | 'MX';
  /** Address, CNAME target, TXT strings, or MX exchange. */
  value: string | string[];
  ttl?: number;
}

export interface ReceivedQuestion {
  name: string;
  type: string;
  transport: 'udp' | 'tcp';
}

export interface ZoneServer {
  /** "127.0.0.1:PORT" (UDP and TCP on the same port). */
  address: string;
  port: number;
  /** Every question that arrived, in order. */
  questions: ReceivedQuestion[];
  /** Names asked for (lowercase), for "never arrived here" assertions. */
  askedNames(): string[];
  close(): Promise<void>;
}

const TYPE_NAMES = new Map<number, string>(Object.entries(Packet.TYPE).map(([name, code]) => [code as number, name]));

/**
 * An authoritative server for `.test` names on loopback (dns2, UDP and TCP), recording every question.
 * Names are looked up exactly, then as `*.<parent>` wildcards. Like a recursive resolver, it follows
 * CNAMEs inside its zone for A/AAAA questions. Unknown names: NXDOMAIN with an SOA (negative TTL 5 s).
 */
export async function startZoneServer(zone: Record<string, ZoneRecord[]>): Promise<ZoneServer> {
  const questions: ReceivedQuestion[] = [];
  const lookup = (name: string): ZoneRecord[] | undefined => {
    const key = name.toLowerCase();
    if (zone[key]) return zone[key];
    const labels = key.split('.');
    for (let i = 1; i < labels.length; i++) {
      const wildcard = zone[`*.${labels.slice(i).join('.')}`];
      if (wildcard) return wildcard;
    }
    return undefined;
  };
  const toResource = (name: string, record: ZoneRecord): any => {
    const base = { name, class: Packet.CLASS.IN, ttl: record.ttl ?? 60 };
    switch (record.type) {
      case 'A':
        return { ...base, type: Packet.TYPE.A, address: record.value };
      case 'AAAA':
        return { ...base, type: Packet.TYPE.AAAA, address: record.value };
      case 'CNAME':
        return { ...base, type: Packet.TYPE.CNAME, domain: record.value };
      case 'TXT':
        return { ...base, type: Packet.TYPE.TXT, data: record.value };
      case 'MX':
        return { ...base, type: Packet.TYPE.MX, exchange: record.value, priority: 10 };
    }
  };
  const handle = (transport: 'udp' | 'tcp') => (request: any, send: (response: any) => void) => {
    const question = request.questions[0];
    if (!question) return;
    const typeName = TYPE_NAMES.get(question.type) ?? `TYPE${question.type}`;
    questions.push({ name: String(question.name).toLowerCase(), type: typeName, transport });
    const response = Packet.createResponseFromRequest(request);
    response.header.ra = 1;
    response.header.aa = 1;
    let name: string = question.name;
    let records = lookup(name);
    if (!records) {
      response.header.rcode = 3; // NXDOMAIN
    }
    for (let depth = 0; records && depth < 8; depth++) {
      const cname = records.find((r) => r.type === 'CNAME');
      const matching = records.filter((r) => r.type === typeName);
      response.answers.push(...matching.map((r) => toResource(name, r)));
      if (!cname || typeName === 'CNAME') break;
      response.answers.push(toResource(name, cname));
      name = String(cname.value);
      records = lookup(name);
    }
    if (response.answers.length === 0) {
      response.authorities.push(<any>{
        name: 'test',
        type: Packet.TYPE.SOA,
        class: Packet.CLASS.IN,
        ttl: 5,
        primary: 'ns.test',
        admin: 'hostmaster.test',
        serial: 1,
        refresh: 60,
        retry: 60,
        expiration: 600,
        minimum: 5,
      });
    }
    send(response);
  };
  // UDP and TCP share one port; the kernel picks it for UDP, and a TCP socket may already hold it
  // (an outgoing connection's local port): then both are closed and another port is tried.
  let udp: ReturnType<typeof dns2.createUDPServer>;
  let tcp: ReturnType<typeof dns2.createTCPServer>;
  let port: number;
  for (let attempt = 0; ; attempt++) {
    udp = dns2.createUDPServer(handle('udp') as any);
    tcp = dns2.createTCPServer(handle('tcp') as any);
    await udp.listen(0, '127.0.0.1');
    port = (udp.address() as AddressInfo).port;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      break;
    } catch (err) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      if (attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  return {
    address: `127.0.0.1:${port}`,
    port,
    questions,
    askedNames: () => questions.map((q) => q.name),
    close: async () => {
      await Promise.all([new Promise<void>((resolve) => udp.close(() => resolve())), new Promise<void>((resolve) => tcp.close(() => resolve()))]);
    },
  };
}
