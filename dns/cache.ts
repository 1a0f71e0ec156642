import { LRUCache } from 'lru-cache';
import { cnameTarget, flagsOf, optRecord, RCODE, recordAddress, responseFlags, TYPE, type DnsQuery, type WireMessage, type WireQuestion, type WireRecord } from './wire.js';

export interface AnswerCacheOptions {
  /** Entries at most (default 20,000). */
  maxEntries?: number;
  /** Bytes of cached answers at most (default 16 MiB). */
  maxBytes?: number;
  /** TTL floor, seconds (default 2): answers with a smaller TTL are still kept this long. */
  minTtlSeconds?: number;
  /** TTL ceiling for positive answers, seconds (default 3600). */
  maxTtlSeconds?: number;
  /** TTL ceiling for NXDOMAIN/NODATA, and their TTL when the upstream sent no SOA (default 300 / 30). */
  maxNegativeTtlSeconds?: number;
  negativeTtlSeconds?: number;
}

/** An upstream answer ready to be replayed: cut after the authority section, TTL fields located. */
export interface CachedAnswer {
  bytes: Buffer;
  rcode: number;
  ttlOffsets: number[];
  ttls: number[];
  /** Seconds the entry lives (after floor and ceiling). */
  ttlSeconds: number;
  /** A/AAAA addresses the question name resolves to, CNAME chain followed. */
  addresses: string[];
  storedAt: number;
  /** When the responder last shared these addresses with the address book (it does so at most once a second). */
  sharedAt?: number;
}

export function cacheKey(question: WireQuestion): string {
  return `${question.klass}/${question.type}/${question.name}`;
}

/** Addresses reached from `name` through the answer's CNAME chain (record order does not matter). */
export function chainAddresses(bytes: Buffer, answers: readonly WireRecord[], name: string): string[] {
  const names = new Set([name]);
  for (let grown = true, rounds = 0; grown && rounds < 16; rounds++) {
    grown = false;
    for (const record of answers) {
      if (record.type !== TYPE.CNAME || !names.has(record.name)) continue;
      const target = cnameTarget(bytes, record);
      if (!names.has(target)) {
        names.add(target);
        grown = true;
      }
    }
  }
  const addresses: string[] = [];
  for (const record of answers) {
    if ((record.type === TYPE.A || record.type === TYPE.AAAA) && names.has(record.name)) {
      const address = recordAddress(bytes, record);
      if (address && !addresses.includes(address)) addresses.push(address);
    }
  }
  return addresses;
}

/** Turn an upstream answer into a cache entry (additional section dropped: stubs do not need glue). */
export function toCachedAnswer(response: Buffer, message: WireMessage, question: WireQuestion, limits: Required<AnswerCacheOptions>, now: number): CachedAnswer {
  const bytes = Buffer.from(response.subarray(0, message.additionalStart));
  bytes.writeUInt16BE(0, 0);
  bytes.writeUInt16BE(0, 10);
  const records = [...message.answers, ...message.authorities];
  const rcode = flagsOf(message.flags).rcode;
  let ttl: number;
  const positive = rcode === RCODE.NOERROR && message.answers.length > 0;
  if (positive) {
    ttl = Math.min(...message.answers.map((r) => r.ttl));
  } else {
    const soa = message.authorities.find((r) => r.type === TYPE.SOA && r.rdlength >= 22);
    // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM).
    ttl = soa ? Math.min(soa.ttl, response.readUInt32BE(soa.rdataOffset + soa.rdlength - 4)) : limits.negativeTtlSeconds;
  }
  const ceiling = positive ? limits.maxTtlSeconds : limits.maxNegativeTtlSeconds;
  const ttlSeconds = Math.min(Math.max(ttl, limits.minTtlSeconds), ceiling);
  return {
    bytes,
    rcode,
    ttlOffsets: records.map((r) => r.ttlOffset),
    ttls: records.map((r) => r.ttl),
    ttlSeconds,
    addresses: question.type === TYPE.A || question.type === TYPE.AAAA ? chainAddresses(response, message.answers, question.name) : [],
    storedAt: now,
  };
}

/** Our OPT record, appended to a cached answer when the client sent one. */
const OPT_RECORD = optRecord();

/** The cached answer as a response to `query`: its id, flags, question spelling; TTLs counted down. One buffer, no concat. */
export function renderAnswer(entry: CachedAnswer, query: DnsQuery, now: number): Buffer {
  const age = Math.floor((now - entry.storedAt) / 1000);
  const opt = query.edns ? OPT_RECORD : undefined;
  const out = Buffer.allocUnsafe(entry.bytes.length + (opt?.length ?? 0));
  entry.bytes.copy(out, 0);
  out.writeUInt16BE(query.id, 0);
  out.writeUInt16BE(responseFlags(query, entry.rcode), 2);
  // Same name up to case (it is the cache key), so the same length: keep the client's 0x20 spelling.
  query.question.raw.copy(out, 12);
  for (let i = 0; i < entry.ttlOffsets.length; i++) out.writeUInt32BE(Math.max(0, entry.ttls[i]! - age), entry.ttlOffsets[i]!);
  if (opt) {
    out.writeUInt16BE(1, 10);
    opt.copy(out, entry.bytes.length);
  }
  return out;
}

export function cacheLimits(options: AnswerCacheOptions = {}): Required<AnswerCacheOptions> {
  return {
    maxEntries: options.maxEntries ?? 20_000,
    maxBytes: options.maxBytes ?? 16 * 1024 * 1024,
    minTtlSeconds: options.minTtlSeconds ?? 2,
    maxTtlSeconds: options.maxTtlSeconds ?? 3600,
    maxNegativeTtlSeconds: options.maxNegativeTtlSeconds ?? 300,
    negativeTtlSeconds: options.negativeTtlSeconds ?? 30,
  };
}

/** Answers keyed by class/type/name, bounded in entries and bytes, each expiring with its TTL. */
export class AnswerCache {
  private readonly lru: LRUCache<string, CachedAnswer>;

  constructor(readonly limits: Required<AnswerCacheOptions>) {
    this.lru = new LRUCache<string, CachedAnswer>({
      max: limits.maxEntries,
      maxSize: limits.maxBytes,
      // Bytes plus a rough allowance for the object and its arrays.
      sizeCalculation: (entry, key) => entry.bytes.length + key.length + 16 * entry.ttls.length + 200,
    });
  }

  get(key: string): CachedAnswer | undefined {
    return this.lru.get(key);
  }

  set(key: string, entry: CachedAnswer): void {
    if (entry.ttlSeconds <= 0) return;
    this.lru.set(key, entry, { ttl: entry.ttlSeconds * 1000 });
  }

  get size(): number {
    return this.lru.size;
  }
}
