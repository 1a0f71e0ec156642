import net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { EventLog } from '../events/event-log.js';
import { NO_HOST } from '../events/validate.js';
import { decideName, formatHostPort, refusal, type Decision, type Policy } from '../policy/index.js';
import { nameKey, type AddressBook } from '../decision/address-book.js';
import { AnswerCache, cacheKey, cacheLimits, renderAnswer, toCachedAnswer, type AnswerCacheOptions, type CachedAnswer } from './cache.js';
import { NameDecisions } from './name-decisions.js';
import { ReportBudget } from './report-budget.js';
import { UpstreamClient, UpstreamError, type Upstream } from './upstream.js';
import {
  addressRecord,
  buildHeaderOnlyError,
  buildResponse,
  CLASS_IN,
  optRecord,
  RCODE,
  readQuery,
  truncatedResponse,
  TYPE,
  typeName,
  udpLimit,
  type DnsQuery,
  type WireQuestion,
} from './wire.js';

export interface DnsClient {
  address: string;
  port: number;
}

export interface DnsResponderOptions {
  upstreams: readonly Upstream[];
  policy: () => Policy;
  events: EventLog;
  addressBook: AddressBook;
  /** Job service names answered locally: name -> addresses (IPv4 and/or IPv6). */
  localNames?: Map<string, string[]>;
  upstreamTimeoutMs?: number;
  upstreamRounds?: number;
  cache?: AnswerCacheOptions;
  /** Malformed-packet events per minute before they are only counted (default 100); the same for dropped queries and TCP connections together. */
  malformedEventsPerMinute?: number;
}

const LOCAL_TTL_SECONDS = 60;
const LOCALHOST = new Map<number, string[]>([
  [TYPE.A, ['127.0.0.1']],
  [TYPE.AAAA, ['::1']],
]);
/** The longest message over TCP: a frame's length is 2 bytes. */
const MAX_TCP_MESSAGE = 0xffff;
/** The OPT record the responses to a query with EDNS end with (buildResponse, renderAnswer). */
const OPT_LENGTH = optRecord().length;
/** Reported DNS port in events, whatever port the server listens on (it is "the DNS of the job"). */
const DNS_PORT = 53;

/** A DNS decision event's fields as JSON, but for the client and the query type (DnsResponder.emit). */
interface DecisionJson {
  mode: Policy['mode'];
  /** From the host to the opening quote of the type. */
  host: string;
  /** From the closing quote of the type to the end of the last member (the closing brace is the line's). */
  rest: string;
}

export function clientText(client: DnsClient): string {
  return formatHostPort(client.address, client.port);
}

function addressBytes(address: string): Buffer | null {
  return ipaddr.isValid(address) ? Buffer.from(ipaddr.parse(address).toByteArray()) : null;
}

/**
 * Answers one DNS query (bytes in, bytes out): reads it strictly, decides the name against the
 * policy, answers localhost/local names itself, refuses blocked names without sending anything
 * upstream, serves allowed ones from the cache or the upstreams, and emits one decision event.
 */
export class DnsResponder {
  private readonly upstream: UpstreamClient;
  private readonly cache: AnswerCache;
  private readonly pending = new Map<string, Promise<CachedAnswer>>();
  private readonly localNames: Map<string, string[]>;
  private readonly decisions = new NameDecisions(DnsResponder.decideQuestion);
  /** Events for malformed packets and for queries dropped at capacity, each at most so many a minute (ReportBudget). */
  private readonly budgets: { malformed: ReportBudget; dropped: ReportBudget };
  /** The JSON of the decision's part of its events' fields, per decision (see emit). */
  private readonly decisionJson = new WeakMap<Decision, DecisionJson>();
  /**
   * The last client's text and its JSON (emit): made again only when the address or port changes. A client that asks
   * from one socket (a resolver's, a forwarder's) gets them made once; others pay a comparison.
   */
  private readonly client = { address: '', port: -1, text: '', json: '' };
  /** Answers served from the cache, and those that needed an upstream exchange (for /metrics). */
  readonly cacheStats = { hits: 0, misses: 0 };

  constructor(private readonly options: DnsResponderOptions) {
    this.upstream = new UpstreamClient(options.upstreams, { timeoutMs: options.upstreamTimeoutMs, rounds: options.upstreamRounds });
    this.cache = new AnswerCache(cacheLimits(options.cache));
    this.localNames = new Map([...(options.localNames ?? new Map<string, string[]>())].map(([name, addrs]) => [nameKey(name), addrs]));
    const limit = options.malformedEventsPerMinute ?? 100;
    const log = options.events.log;
    this.budgets = {
      malformed: new ReportBudget(limit, (suppressed) => log.warn({ suppressed }, 'malformed DNS packets not reported individually in the last minute')),
      dropped: new ReportBudget(limit, (suppressed) =>
        log.warn({ suppressed }, 'DNS queries and TCP connections dropped at capacity not reported individually in the last minute'),
      ),
    };
  }

  close(): void {
    this.upstream.close();
    this.budgets.malformed.flush();
    this.budgets.dropped.flush();
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  /**
   * The response to send, or null to drop the packet. Never throws (nor rejects) for any input bytes. A query
   * answered without an upstream exchange (a cache hit, a refusal, a local name, a malformed packet) is answered
   * synchronously, with no promise: that is most queries, and a promise and its microtask per query were a
   * measurable share of the CPU per answer (docs/benchmark.md, "DNS per query, third round"). `cut`: the packet is
   * the start of a larger datagram (readQuery). The packet need only be valid during the call: nothing of it is kept
   * (a query that goes upstream keeps a copy of its question).
   */
  answer(packet: Buffer, client: DnsClient, transport: 'udp' | 'tcp', cut = false): Buffer | null | Promise<Buffer | null> {
    const reading = readQuery(packet, cut);
    if (!reading.ok) {
      // A message without an id is dropped; over TCP the connection goes with it (dns/server.ts), and its event says
      // so (until 2026-12-04 `dropped`, as over UDP).
      this.reportMalformed(client, transport, reading.reason, reading.id !== undefined ? true : transport === 'tcp' ? 'connection closed' : false);
      return reading.id === undefined ? null : buildHeaderOnlyError(reading.id, reading.opcode ?? 0, reading.rcode ?? RCODE.FORMERR);
    }
    const query = reading.query;
    const response = this.respond(query, client);
    if (response instanceof Promise) return response.then((bytes) => this.fitTransport(bytes, query, transport));
    return this.fitTransport(response, query, transport);
  }

  private fitTransport(response: Buffer, query: DnsQuery, transport: 'udp' | 'tcp'): Buffer {
    if (transport === 'udp') return response.length > udpLimit(query) ? truncatedResponse(response, query) : response;
    if (response.length <= MAX_TCP_MESSAGE) return response;
    // An upstream's answer as long as a TCP message can be, without an OPT record, and ours added for a client that
    // sent one: past the frame's 2-byte length (until 2026-12-04 the write threw and the answer was lost). Ours is the
    // last record and the only additional one; without it the answer fits, as the upstream sent it.
    if (query.edns && response.length - OPT_LENGTH <= MAX_TCP_MESSAGE) {
      const fitted = Buffer.from(response.subarray(0, response.length - OPT_LENGTH));
      fitted.writeUInt16BE(0, 10);
      return fitted;
    }
    // Not reached (no answer grows past what the upstream sent but by our OPT): a bound all the same.
    this.options.events.log.warn({ name: query.question.name, bytes: response.length }, 'dns answer longer than a TCP message; answered SERVFAIL');
    return buildResponse(query, RCODE.SERVFAIL);
  }

  private respond(query: DnsQuery, client: DnsClient): Buffer | Promise<Buffer> {
    const question = query.question;
    const policy = this.options.policy();
    if (question.klass !== CLASS_IN || question.type === TYPE.AXFR || question.type === TYPE.IXFR) {
      // Refused in audit mode too (not sent upstream: a resolver answers only class IN, and a zone transfer is no
      // lookup a job needs), with its event: until 2026-12-03 a log line only, so `dig CH TXT version.bind` or an AXFR
      // of a zone (reconnaissance) left no trace in the job's report.
      const notIn = question.klass !== CLASS_IN;
      this.emit(policy, client, question, {
        outcome: 'blocked',
        permitted: false,
        reason: 'unsupported-query',
        rule: null,
        host: question.name,
        message: notIn ? `${question.name}: class ${question.klass} is not IN (answered REFUSED)` : `${question.name}: zone transfers are not answered (NOTIMP)`,
      });
      return buildResponse(query, notIn ? RCODE.REFUSED : RCODE.NOTIMP);
    }
    const local = this.localAnswer(query);
    if (local) {
      this.emit(policy, client, question, {
        outcome: 'allowed',
        permitted: true,
        reason: 'local-name',
        rule: local.rule,
        host: question.name,
        message: `${question.name} is answered locally (${local.rule})`,
      });
      return local.response;
    }
    const decision = this.decisions.get(policy, question);
    this.emit(policy, client, question, decision);
    if (!decision.permitted && policy.mode === 'block') return buildResponse(query, RCODE.NXDOMAIN);
    return this.resolve(query, client);
  }

  private static decideQuestion(policy: Policy, question: WireQuestion): Decision {
    if (question.plain) return decideName(policy, question.name);
    // Label bytes outside letters/digits/-/_ (dots inside a label, binary): no text form the policy
    // could match safely, so never allowed.
    return refusal(policy, {
      reason: 'invalid-host',
      host: question.name,
      message: `${question.name} is not a host name (labels may hold only letters, digits, '-' and '_')`,
    });
  }

  private localAnswer(query: DnsQuery): { response: Buffer; rule: string } | null {
    const name = query.question.name;
    let addresses: string[] | undefined;
    let rule: string;
    if (name === 'localhost' || name.endsWith('.localhost')) {
      addresses = [...LOCALHOST.values()].flat();
      rule = 'localhost';
    } else {
      addresses = this.localNames.get(name);
      rule = 'local-names';
    }
    if (!addresses) return null;
    const type = query.question.type;
    const records = addresses
      .filter((a) => (type === TYPE.A && net.isIPv4(a)) || (type === TYPE.AAAA && net.isIPv6(a)))
      .flatMap((a) => {
        const bytes = addressBytes(a);
        return bytes ? [addressRecord(type, bytes, LOCAL_TTL_SECONDS)] : [];
      });
    // Other types, or no address of the asked family: NOERROR with no answer (NODATA).
    return { response: buildResponse(query, RCODE.NOERROR, records), rule };
  }

  private resolve(query: DnsQuery, client: DnsClient): Buffer | Promise<Buffer> {
    const question = query.question;
    const key = cacheKey(question);
    const entry = this.cache.get(key);
    if (entry) {
      this.cacheStats.hits++;
      return this.render(entry, query);
    }
    this.cacheStats.misses++;
    // The query outlives this call (the upstream exchange, the answer rendered when it comes), and its packet may be
    // lent (the batched UDP path's receive buffer, which the next batch overwrites): the question's bytes are copied.
    question.raw = Buffer.from(question.raw);
    let pending = this.pending.get(key);
    if (!pending) {
      // Concurrent identical questions share one upstream exchange.
      pending = this.fetch(question, query.cd, key).finally(() => this.pending.delete(key));
      this.pending.set(key, pending);
    }
    return pending.then(
      (fetched) => this.render(fetched, query),
      (err: unknown) => {
        const failures = err instanceof UpstreamError ? err.failures : [(err as Error).message];
        this.options.events.log.warn({ client: clientText(client), name: question.name, qtype: typeName(question.type), failures }, 'dns upstreams failed; answered SERVFAIL');
        return buildResponse(query, RCODE.SERVFAIL);
      },
    );
  }

  private render(entry: CachedAnswer, query: DnsQuery): Buffer {
    const now = Date.now();
    this.recordAddresses(query.question.name, entry, now);
    return renderAnswer(entry, query, now);
  }

  private async fetch(question: WireQuestion, cd: number, key: string): Promise<CachedAnswer> {
    // The question is about to leave the machine: the query name is bytes the client chose (a name can carry data
    // out, the way DNS tunnels do), so the decision that let it go is written to the events file first, as for
    // every decision that moves a client's bytes. An answer from the cache, the refusal of a blocked name, a local
    // name move nothing past egress-guard: their decisions ride the end-of-turn write (see emit).
    this.options.events.flushDecisions();
    const answer = await this.upstream.query(question, cd);
    const entry = toCachedAnswer(answer.response, answer.message, question, this.cache.limits, Date.now());
    if (entry.rcode === RCODE.NOERROR || entry.rcode === RCODE.NXDOMAIN) this.cache.set(key, entry);
    return entry;
  }

  /** Share what was resolved with the proxy; an A answer keeps the name's IPv6 addresses and vice versa. */
  private recordAddresses(name: string, entry: CachedAnswer, now: number): void {
    if (entry.addresses.length === 0) return;
    // Once a second per cache entry, not per answer: recording stores the same addresses with the same expiry (the
    // entry's), and its map updates were a few µs of every cached answer. Once a second still keeps a name that is
    // asked all the time recent in the book's LRU order, and gives a name recorded since (by the proxy, by the other
    // family's answer) the entry's addresses back within a second.
    if (entry.sharedAt !== undefined && now - entry.sharedAt < 1000) return;
    entry.sharedAt = now;
    const family = net.isIPv4(entry.addresses[0]!) ? 4 : 6;
    const otherFamily = (this.options.addressBook.addressesOf(name) ?? []).filter((a) => net.isIP(a) !== family);
    const remainingMs = Math.max(1000, entry.ttlSeconds * 1000 - (now - entry.storedAt));
    this.options.addressBook.record(name, [...entry.addresses, ...otherFamily], remainingMs);
  }

  /**
   * The query's one decision event, written to the events file at the end of this event-loop turn rather than
   * synchronously (a write(2) per query was a quarter of the CPU per answer). Safe because a DNS answer moves no
   * payload: the connection a client makes next is decided by the proxy, which acts on its decision only after the
   * write that carries it and, before it in order, the DNS lines queued so far (group commit); a query forwarded
   * upstream is written before it is sent (fetch); the file is also written at the end of every turn and at process
   * exit (EventsFile).
   */
  private emit(policy: Policy, client: DnsClient, question: WireQuestion, decision: Decision): void {
    const last = this.client;
    if (client.address !== last.address || client.port !== last.port) {
      last.address = client.address;
      last.port = client.port;
      last.text = clientText(client);
      last.json = JSON.stringify(last.text);
    }
    const fields = {
      kind: 'dns',
      client: last.text,
      host: decision.host,
      port: DNS_PORT,
      qtype: typeName(question.type),
      decision: decision.outcome,
      reason: decision.reason,
      rule: decision.rule,
      message: decision.message,
      mode: policy.mode,
    } as const;
    // The fields' JSON without its braces, JSON.stringify(fields) made for less: JSON.stringify's cost is per key, and all but the client
    // and the type are the decision's (NameDecisions hands out the same one for a name asked again) and the mode, so
    // their JSON is made once per decision. The type's name is letters and digits (typeName): nothing to escape.
    let parts = this.decisionJson.get(decision);
    if (parts === undefined || parts.mode !== policy.mode) {
      parts = {
        mode: policy.mode,
        host: `,"host":${JSON.stringify(fields.host)},"port":${DNS_PORT},"qtype":"`,
        rest: `","decision":${JSON.stringify(fields.decision)},"reason":${JSON.stringify(fields.reason)},"rule":${JSON.stringify(fields.rule)},"message":${JSON.stringify(fields.message)},"mode":${JSON.stringify(fields.mode)}`,
      };
      this.decisionJson.set(decision, parts);
    }
    this.options.events.emitDecision(fields, 'end-of-turn', `"kind":"dns","client":${this.client.json}${parts.host}${fields.qtype}${parts.rest}`);
  }

  /**
   * A query the server drops unanswered because `waiting` queries are at an upstream already (its max-in-flight):
   * the client's resolver retries or fails, so the job's report must say why, in audit mode too (egress-guard's own
   * limit, not the policy's). One event per query, up to a rate (ReportBudget); until 2026-12-03 no trace at all.
   * `cut` as for answer(): a packet that is the start of a larger datagram is malformed here too (until review45 it
   * was read as whole, and a question in its first bytes named).
   */
  reportDropped(packet: Buffer, client: DnsClient, waiting: number, cut = false): void {
    if (!this.budgets.dropped.take()) return;
    const reading = readQuery(packet, cut);
    const message = `dropped unanswered: ${waiting} queries are waiting for an upstream answer already (egress-guard's limit)`;
    if (!reading.ok) {
      this.reportMalformed(client, 'udp', reading.reason, false);
      return;
    }
    const question = reading.query.question;
    this.emit(this.options.policy(), client, question, {
      outcome: 'blocked',
      permitted: false,
      reason: 'at-capacity',
      rule: null,
      host: question.name,
      message: `${question.name}: ${message}`,
    });
  }

  /**
   * A TCP connection node closed as it came because `open` connections are open already (the server's
   * maxConnections; net.Server 'drop'): its client's resolver retries or fails, so the report must say why, as for a
   * UDP query dropped at capacity, and under the same budget. No byte was read: no name. Until 2026-12-04 no trace.
   */
  reportConnectionDropped(client: DnsClient, open: number): void {
    if (!this.budgets.dropped.take()) return;
    this.emitNameless(client, 'at-capacity', `DNS over TCP connection closed unread: ${open} connections are open already (egress-guard's limit)`);
  }

  /** One event per malformed packet, up to a rate; past it they are counted and summarised. */
  reportMalformed(client: DnsClient, transport: string, reason: string, answered: boolean | 'connection closed'): void {
    if (!this.budgets.malformed.take()) return;
    const outcome = answered === 'connection closed' ? answered : answered ? 'answered FORMERR/NOTIMP' : 'dropped';
    this.emitNameless(client, 'malformed-request', `malformed DNS packet over ${transport} (${reason}); ${outcome}`);
  }

  /** A refusal before any question was read: blocked in audit mode too (there is nothing to forward). */
  private emitNameless(client: DnsClient, reason: 'at-capacity' | 'malformed-request', message: string): void {
    this.options.events.decision(
      {
        kind: 'dns',
        client: clientText(client),
        // No readable question, so no name: the placeholder every event without a host carries.
        host: NO_HOST,
        port: DNS_PORT,
        decision: 'blocked',
        reason,
        rule: null,
        message,
        mode: this.options.policy().mode,
      },
      'end-of-turn',
    );
  }
}
