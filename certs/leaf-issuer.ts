import { generateKeyPair, sign } from 'node:crypto';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { promisify } from 'node:util';
import { LRUCache } from 'lru-cache';
import type { CertificateAuthority } from './ca-store.js';
import { keyPairArguments, signedCertificatePem, toBeSigned, unsignedLeafCertificate, type KeyPair, type LeafKeyType } from './certificates.js';

const generateKeyPairAsync = promisify(generateKeyPair);
const signAsync = promisify(sign);

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

export interface Leaf {
  host: string;
  /** PEM of the leaf certificate (the leaf alone: clients trust the CA itself). */
  cert: string;
  /** PEM (PKCS#8) of the leaf's private key. */
  key: string;
  /** A TLS context with cert and key, built once per leaf: pass it as `secureContext` to tls.TLSSocket or from SNICallback. */
  secureContext: SecureContext;
  notBefore: Date;
  notAfter: Date;
}

export interface LeafIssuerOptions {
  /** Leaves kept (LRU); default 1000. */
  maxHosts?: number;
  /** Default 7 days (never beyond the CA's own expiry). */
  validityMs?: number;
  /** A cached leaf this close to its expiry is issued again; default 1 day. */
  renewBeforeMs?: number;
  /**
   * `shared` (default): one key, generated once, for every leaf, as mitmproxy does; it never leaves the
   * process, and a cold host then costs a signature only. `per-host`: a new key for each leaf.
   */
  leafKeys?: 'shared' | 'per-host';
  /**
   * The leaves' key: `ecdsa` (default), P-256, whose signature in each TLS handshake costs the proxy tens of µs of
   * CPU, or `rsa`, 2048 bits, about 1 ms per handshake (docs/benchmark.md, "ECDSA leaves"). The CA signs either.
   */
  keyType?: LeafKeyType;
  now?: () => number;
}

export interface LeafIssuerStats {
  /** Leaves signed. */
  issued: number;
  /** Keys generated for leaves. */
  keysGenerated: number;
  /** leafFor answered from the cache. */
  cacheHits: number;
  /** leafFor joined a generation already under way for that host. */
  joined: number;
}

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** The name a leaf is cached and issued under: lower case, no trailing dot, IPv6 without brackets; anything else is refused. */
export function leafHostName(host: string): string {
  const name = host.toLowerCase().replace(/\.$/, '');
  const address = name.replace(/^\[(.*)\]$/, '$1');
  if (isIP(address)) return address;
  if (!DNS_NAME.test(name)) throw new Error(`cannot issue a certificate for "${host}": not a host name or IP address`);
  return name;
}

/**
 * Issues the leaf certificates TLS inspection presents, one per host, signed by the CA. Keys (ECDSA P-256 or
 * RSA 2048) come from node:crypto's asynchronous generateKeyPair and signatures from its asynchronous sign (both
 * on the thread pool), node-forge's ASN.1 builds the certificate, so a cold host does not hold up other connections. Leaves are
 * cached (LRU), renewed before they expire, and concurrent requests for one host share one issuance.
 */
export class LeafIssuer {
  readonly stats: LeafIssuerStats = { issued: 0, keysGenerated: 0, cacheHits: 0, joined: 0 };
  private readonly cache: LRUCache<string, Leaf>;
  private readonly inFlight = new Map<string, Promise<Leaf>>();
  private sharedKey: Promise<KeyPair> | undefined;
  private readonly validityMs: number;
  private readonly renewBeforeMs: number;
  private readonly leafKeys: 'shared' | 'per-host';
  readonly keyType: LeafKeyType;
  private readonly now: () => number;

  constructor(
    private readonly ca: CertificateAuthority,
    options: LeafIssuerOptions = {},
  ) {
    this.cache = new LRUCache({ max: options.maxHosts ?? 1000 });
    this.validityMs = options.validityMs ?? 7 * DAY_MS;
    this.renewBeforeMs = options.renewBeforeMs ?? DAY_MS;
    this.leafKeys = options.leafKeys ?? 'shared';
    this.keyType = options.keyType ?? 'ecdsa';
    this.now = options.now ?? Date.now;
  }

  /** The leaf for a host name or IP address (SAN dNSName or iPAddress). Rejects a name that is neither. */
  leafFor(host: string): Promise<Leaf> {
    let name: string;
    try {
      name = leafHostName(host);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const cached = this.cache.get(name);
    if (cached && cached.notAfter.getTime() - this.renewBeforeMs > this.now()) {
      this.stats.cacheHits++;
      return Promise.resolve(cached);
    }
    const pending = this.inFlight.get(name);
    if (pending) {
      this.stats.joined++;
      return pending;
    }
    const issuing = this.issue(name).finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, issuing);
    return issuing;
  }

  /** The TLS context of leafFor(host): what a TLS server socket or an SNICallback takes. */
  secureContextFor(host: string): Promise<SecureContext> {
    return this.leafFor(host).then((leaf) => leaf.secureContext);
  }

  private async issue(host: string): Promise<Leaf> {
    const keys = await this.leafKey();
    const now = this.now();
    const notBefore = new Date(Math.max(now - DAY_MS, this.ca.notBefore.getTime())); // clients whose clock runs behind
    const notAfter = new Date(Math.min(now + this.validityMs, this.ca.notAfter.getTime()));
    const tbs = toBeSigned(unsignedLeafCertificate(this.ca.certificate, keys.publicKeyDer, [host], notBefore, notAfter), this.ca.key);
    const certPem = signedCertificatePem(tbs, await signAsync('sha256', tbs.der, this.ca.key));
    const key = keys.privateKeyPem;
    const leaf: Leaf = { host, cert: certPem, key, secureContext: createSecureContext({ cert: certPem, key }), notBefore, notAfter };
    this.stats.issued++;
    this.cache.set(host, leaf);
    return leaf;
  }

  private leafKey(): Promise<KeyPair> {
    if (this.leafKeys === 'per-host') return this.newKey();
    this.sharedKey ??= this.newKey().catch((err: unknown) => {
      this.sharedKey = undefined; // the next leaf tries again
      throw err;
    });
    return this.sharedKey;
  }

  private async newKey(): Promise<KeyPair> {
    this.stats.keysGenerated++;
    const [kind, options] = keyPairArguments(this.keyType);
    const pair = kind === 'ec' ? await generateKeyPairAsync(kind, options) : await generateKeyPairAsync(kind, options);
    return { privateKeyPem: pair.privateKey, publicKeyDer: pair.publicKey };
  }
}
