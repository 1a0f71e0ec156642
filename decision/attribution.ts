import { canonicalHost, decide, ENCRYPTED_CLIENT_HELLO_REFUSED, findEndpoint, formatHostPort, refusal, type Decision, type Policy } from '../policy/index.js';
import type { AddressBook } from './address-book.js';
import { authorize, decisionWritten, emitDecision, forwardTo, type AuthorizeContext, type AuthorizeRequest, type Authorization } from './authorize.js';
import type { PeekResult } from '../net/sniffing/first-bytes.js';

export interface TransparentAuthorizeContext extends AuthorizeContext {
  addressBook: AddressBook;
}

export interface TransparentRequest {
  client: string;
  /** The original destination (SO_ORIGINAL_DST). */
  destination: { address: string; port: number };
  peek: PeekResult;
  /** When the connection arrived (before the peek): its close event counts from there. */
  started?: number;
  /** The listener can inspect TLS connections (hosts with method or path rules are then allowed, to be inspected). */
  inspectable?: boolean;
}

/** A destination address as events spell addresses (canonical text; IPv4-mapped read as IPv4). */
export function addressText(address: string): string {
  const canonical = canonicalHost(address);
  return canonical.type === 'ip' ? canonical.text : address;
}

function sameAddress(a: string, b: string): boolean {
  return addressText(a) === addressText(b);
}

/** Names the DNS server (or the proxy's resolver) resolved to this address, in whatever spelling it was stored. */
function namesOf(book: AddressBook, address: string): string[] {
  return [...new Set([...book.namesOf(address), ...book.namesOf(addressText(address))])];
}

/**
 * True when `address` is one `name` resolved to through egress-guard: the address book (DNS server answers,
 * proxy lookups, --resolve overrides), else the proxy's own resolver now. Only called for names the policy
 * allows, so a blocked name is never looked up.
 */
async function nameAgreesWithDestination(ctx: TransparentAuthorizeContext, name: string, address: string): Promise<boolean> {
  if (ctx.addressBook.resolvedTo(name, address) || ctx.addressBook.resolvedTo(name, addressText(address))) return true;
  if ((ctx.addressBook.addressesOf(name) ?? []).some((a) => sameAddress(a, address))) return true;
  const resolved = await ctx.resolver.resolve(name).catch(() => [] as string[]);
  return resolved.some((a) => sameAddress(a, address));
}

type Extra = { sni?: string; method?: string; path?: string; methodOverrides?: readonly string[]; unreadBody?: string };

/** What a decision event repeats of the first bytes: the SNI, or the request's method, path and what may override its method. */
function extraOf(peek: PeekResult): Extra {
  return {
    ...(peek.protocol === 'tls' && peek.sni !== undefined && { sni: peek.sni }),
    ...(peek.protocol === 'http' && peek.request && { method: peek.request.method, path: peek.request.path }),
    ...(peek.protocol === 'http' && peek.request?.methodOverrides && { methodOverrides: peek.request.methodOverrides }),
    ...(peek.protocol === 'http' && peek.request?.unreadBody !== undefined && { unreadBody: peek.request.unreadBody }),
  };
}

/** Emit a transparent decision made here (a name/destination mismatch), naming the original destination. */
function decided(ctx: TransparentAuthorizeContext, request: TransparentRequest, decision: Decision, extra: Extra): Authorization {
  const { port } = request.destination;
  const ip = decision.ip ?? addressText(request.destination.address);
  const withIp = { ...decision, ip };
  const asked: AuthorizeRequest = {
    kind: 'transparent',
    client: request.client,
    host: decision.host,
    port,
    ...extra,
    ...(request.started !== undefined && { started: request.started }),
  };
  const event = emitDecision(ctx.events, ctx.policy(), asked, withIp);
  if (decision.outcome === 'blocked') return { action: 'reject', decision: withIp, event };
  return forwardTo(ctx.events, asked, withIp, event, ip, port);
}

function mismatch(ctx: TransparentAuthorizeContext, request: TransparentRequest, name: string, claimedBy: 'sni' | 'host', extra: Extra): Authorization {
  const { port } = request.destination;
  const ip = addressText(request.destination.address);
  return decided(
    ctx,
    request,
    refusal(ctx.policy(), {
      reason: 'sni-mismatch',
      host: name,
      ip,
      message: `${claimedBy === 'sni' ? 'TLS SNI' : 'HTTP Host'} ${name} does not match the destination ${formatHostPort(ip, port)}: ${name} did not resolve to ${ip} through egress-guard`,
    }),
    extra,
  );
}

/**
 * authorize() on `host` for a redirected connection, unless its ClientHello carries an encrypted inner one (ECH) and the
 * policy refuses those: then, where the decision would let it through uninspected, an `encrypted-client-hello`
 * refusal. The inner hello names a server only the destination (a shared front, which routes on it) can read. An
 * inspected connection is not concerned (egress-guard's own TLS server ignores ECH, and it connects upstream itself),
 * nor one the policy refuses anyway (reported for its own reason).
 */
function authorizeUnlessEncrypted(
  ctx: TransparentAuthorizeContext,
  request: TransparentRequest,
  asked: AuthorizeRequest & { addresses: string[] },
  extra: Extra,
): Promise<Authorization> {
  const { peek } = request;
  const policy = ctx.policy();
  if (peek.protocol !== 'tls' || !peek.encryptedClientHello || policy.encryptedClientHello !== 'refuse') return authorize(ctx, asked);
  const { host, port, addresses, inspectable } = asked;
  const decision = decide(policy, { host, port, addresses, ...(inspectable && { inspectable }) });
  if (!decision.permitted || decision.inspect) return authorize(ctx, asked);
  const ip = addressText(request.destination.address);
  return decisionWritten(
    ctx.events,
    decided(ctx, request, refusal(policy, { reason: 'encrypted-client-hello', host: decision.host, ip, message: ENCRYPTED_CLIENT_HELLO_REFUSED }), extra),
  );
}

/**
 * Decide a redirected connection. The name is the SNI, else the HTTP Host, else (not TLS) a name the DNS
 * server resolved to the destination, else the raw address. A claimed name (SNI/Host) must agree with the
 * destination, or the connection is a `sni-mismatch` (domain fronting, forged SNI). The decision is made
 * on the original destination itself: authorize() is given it as the only address, so no lookup happens
 * and the connection goes to exactly that address.
 */
export async function authorizeTransparent(ctx: TransparentAuthorizeContext, request: TransparentRequest): Promise<Authorization> {
  const { peek, client } = request;
  const { port } = request.destination;
  const ip = addressText(request.destination.address);
  const extra = extraOf(peek);
  const inspectable = request.inspectable === true && peek.protocol === 'tls';
  const base = {
    kind: 'transparent' as const,
    client,
    port,
    addresses: [ip],
    ...extra,
    ...(request.started !== undefined && { started: request.started }),
    ...(inspectable && { inspectable }),
  };
  const claimed = peek.protocol === 'tls' ? peek.sni : peek.protocol === 'http' ? peek.request?.host : undefined;

  if (claimed !== undefined) {
    const claimedBy = peek.protocol === 'tls' ? 'sni' : 'host';
    const canonical = canonicalHost(claimed);
    if (canonical.type === 'ip') {
      if (!sameAddress(canonical.text, ip)) return decisionWritten(ctx.events, mismatch(ctx, request, canonical.text, claimedBy, extra));
      return authorizeUnlessEncrypted(ctx, request, { ...base, host: ip }, extra);
    }
    if (canonical.type === 'name') {
      const permitted = decide(ctx.policy(), {
        host: canonical.name,
        port,
        inspectable,
        ...(peek.protocol === 'http' &&
          peek.request && { method: peek.request.method, path: peek.request.path, methodOverrides: peek.request.methodOverrides, unreadBody: peek.request.unreadBody }),
      }).permitted;
      // A name the policy refuses is reported as such; agreement matters only for names it would let through.
      if (permitted && !(await nameAgreesWithDestination(ctx, canonical.name, ip))) return decisionWritten(ctx.events, mismatch(ctx, request, canonical.name, claimedBy, extra));
      return authorizeUnlessEncrypted(ctx, request, { ...base, host: canonical.name }, extra);
    }
    // Not a host name (`a..b`, `x@allowed.test`): refused in block mode. decide() refuses it in audit mode too, as a
    // request to no host it could forward, but this connection has its destination: audit mode relays it there and
    // reports would-block (until hunt3 it was refused in audit mode as well, a job broken by a Host or SNI it sent).
    const invalid = refusal(ctx.policy(), { reason: 'invalid-host', host: claimed, ip, message: canonical.why });
    return decisionWritten(ctx.events, decided(ctx, request, invalid, extra));
  }

  if (peek.protocol === 'tls' || (peek.protocol === 'other' && (peek.incomplete || peek.versionlessRequest)) || (peek.protocol === 'http' && peek.unfinishedLine)) {
    // TLS without a readable SNI (none sent, split across records, unparseable), a ClientHello / request head the
    // client never finished, or a request line without a version (HTTP/0.9's `GET /x`, which servers may still serve):
    // there is no name to check against the destination, and falling back to
    // "some allowed name resolved here" would admit any site on a shared (CDN) address. Decided as a
    // connection to a raw address: allowed-ips, or nothing.
    return authorizeUnlessEncrypted(ctx, request, { ...base, host: ip }, extra);
  }
  const name = attributedName(ctx.policy(), namesOf(ctx.addressBook, ip), port);
  return authorizeUnlessEncrypted(ctx, request, { ...base, host: name ?? ip }, extra);
}

/**
 * A redirected request that could name two hosts (proxy/transparent/http.ts targetOf: two Host headers, a Host that is
 * not host[:port], an absolute-form target that is no URL or names another host than its Host), decided on its
 * destination as an `ambiguous-host` refusal; `host` is what it names first, as written. Servers differ in which of
 * the hosts they read, so no decision on one of them would hold: block mode refuses it (400), audit mode relays it to
 * its original destination as the client sent it, reported would-block, as it would have gone without egress-guard
 * (the destination is the one address it reaches either way). Until 2026-12-03 it was answered 400 in both modes,
 * with no decision and no event.
 */
export function authorizeAmbiguous(ctx: TransparentAuthorizeContext, request: TransparentRequest, named: { host: string; message: string }): Promise<Authorization> {
  const ip = addressText(request.destination.address);
  const ambiguous = refusal(ctx.policy(), { reason: 'ambiguous-host', host: named.host, ip, message: named.message });
  return decisionWritten(ctx.events, decided(ctx, request, ambiguous, extraOf(request.peek)));
}

/** The name a connection without one of its own is decided on: of `names` the DNS resolved to its address, an allowed one first. */
function attributedName(policy: Policy, names: readonly string[], port: number): string | undefined {
  return names.find((n) => findEndpoint(policy, n, port) !== undefined) ?? names[0];
}

/**
 * True when a client that stays silent at `destination` would be let through by DNS attribution on a name that needs
 * no inspection. Such a client's first bytes, when they come after the peek, are still decided before they are
 * relayed (a ClientHello on its SNI, an HTTP request by the per-request server), so its peek can be short and a
 * server that speaks first (SMTP, MySQL, FTP) is heard sooner. Not for a destination a silent client would be refused
 * at or would need inspecting on: there the SNI that a slow client sends within the full peek may be the only way in.
 * Nor where any name the DNS resolved to the address has method or path rules on this port (a CDN address shared with
 * an inspected host): a late ClientHello for it would reach a tunnel already open (handed over to the inspector from
 * there, after a second decision and an upstream connection opened for nothing), while within the full peek it goes to
 * the inspector at once (until the late hand-over was built, it was refused there in block mode and relayed uninspected
 * in audit mode). The same decision as authorizeTransparent's on the name and the address (address safety,
 * trusted-ranges included).
 * Pure: no event, no lookup.
 */
export function silentClientAllowed(ctx: TransparentAuthorizeContext, destination: { address: string; port: number }): boolean {
  const ip = addressText(destination.address);
  const { port } = destination;
  const policy = ctx.policy();
  const names = namesOf(ctx.addressBook, ip);
  if (names.some((n) => decide(policy, { host: n, port, inspectable: true }).inspect === true)) return false;
  const name = attributedName(policy, names, port);
  return name !== undefined && decide(policy, { host: name, port, addresses: [ip] }).permitted;
}

/**
 * True when the transparent listener waits for the first bytes of a client silent through the peek at `destination`
 * before it decides: where a silent client would be refused in block mode (no allowed name resolved to the address),
 * or, in either mode, could not pass because the name it would be attributed to has method or path rules
 * (`inspection-required`: a silent client cannot be inspected). Audit mode waits there too, so that a slow ClientHello
 * is inspected as in block mode rather than reported would-block. authorizeTransparent's decision without first
 * bytes, on the name and the address. Pure: no event, no lookup.
 */
export function awaitFirstBytes(ctx: TransparentAuthorizeContext, destination: { address: string; port: number }): boolean {
  const ip = addressText(destination.address);
  const policy = ctx.policy();
  const name = attributedName(policy, namesOf(ctx.addressBook, ip), destination.port);
  const silent = decide(policy, { host: name ?? ip, port: destination.port, addresses: [ip] });
  return silent.outcome === 'blocked' || silent.reason === 'inspection-required';
}
