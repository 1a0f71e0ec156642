import { decide, decideOnAddresses, literalAddress, type Decision, type DecisionRequest, type Policy } from '../policy/index.js';
import { Connection } from '../events/connection.js';
import type { EventLog } from '../events/event-log.js';
import type { CloseError, DecisionEvent, DecisionFields, RequestKind } from '../events/schema.js';
import { ResolveError, type Resolver } from './resolver.js';

export interface AuthorizeContext {
  policy: () => Policy;
  resolver: Resolver;
  events: EventLog;
}

export interface AuthorizeRequest {
  kind: RequestKind;
  client: string;
  /** Host as the client wrote it (CONNECT authority, absolute-URI host, SNI, Host header). */
  host: string;
  port: number;
  sni?: string;
  method?: string;
  path?: string;
  /** Methods the request asks the server to take instead (DecisionRequest.methodOverrides). */
  methodOverrides?: readonly string[];
  /** Why a body that may name such a method could not be read (DecisionRequest.unreadBody). */
  unreadBody?: string;
  /**
   * Transparent connections: the original destination. Raw-IP decisions use it, and a named
   * decision must agree with it (see proxy/transparent).
   */
  addresses?: string[];
  /** When the request arrived, if before this call (a redirected connection's peek): its close event counts from there. */
  started?: number;
  /** The caller can inspect this connection's requests (TLS inspection): see DecisionRequest.inspectable. */
  inspectable?: boolean;
}

/**
 * What to do with a request. `forward` and `fail` carry the request's connection record: the path that ends
 * the request closes it, and that writes the one close event. A rejected request has no close event.
 */
export type Authorization =
  | { action: 'forward'; decision: Decision; event: DecisionEvent; address: string; port: number; connection: Connection }
  | { action: 'reject'; decision: Decision; event: DecisionEvent }
  | { action: 'fail'; decision: Decision; event: DecisionEvent; status: 502 | 504; error: CloseError; message: string; connection: Connection };

export type Forward = Extract<Authorization, { action: 'forward' }>;

/** A request target without its query string (what `split('?')[0]` gave, without the array). */
function withoutQuery(path: string): string {
  const q = path.indexOf('?');
  return q === -1 ? path : path.slice(0, q);
}

/**
 * Emit the one decision event of a request (what was asked, what was decided, why, by whom). Its line rides the
 * events file's end-of-turn write, one write(2) for every decision of the turn: the caller must not act on it (move a
 * byte it allows, answer or close a refused client) before `events.decisionsWritten()` settles, as authorize() and
 * every other caller do (see decisionWritten).
 */
export function emitDecision(events: EventLog, policy: Policy, request: AuthorizeRequest, decision: Decision): DecisionEvent {
  // Built member by member in the order the event's JSON has them (no spread of a conditional object per field).
  const fields: DecisionFields = { kind: request.kind, client: request.client, host: decision.host, port: request.port } as DecisionFields;
  if (request.sni !== undefined) fields.sni = request.sni;
  if (decision.ip !== undefined) fields.ip = decision.ip;
  if (request.method !== undefined) fields.method = request.method;
  // The query string may carry a token: logged only when the policy says so (log-query).
  if (request.path !== undefined) fields.path = policy.logQuery ? request.path : withoutQuery(request.path);
  fields.decision = decision.outcome;
  fields.reason = decision.reason;
  fields.rule = decision.rule;
  fields.message = decision.message;
  fields.mode = policy.mode;
  return events.decision(fields, 'end-of-turn');
}

/**
 * A request no policy is asked about, refused in either mode because there is nothing to forward: an explicit-proxy
 * request without an absolute `http://` URI, a CONNECT whose target is not host:port, a request the HTTP parser cannot
 * read or that lacks what HTTP/1.1 requires (Host). Its one decision event says `malformed-request`, naming the host
 * the request names where it names one (`request.host`; on a redirected connection its destination, `ip`), so that
 * audit mode reports it too; the caller answers it once the event is written.
 */
export function refuseMalformed(ctx: AuthorizeContext, request: AuthorizeRequest, message: string, ip?: string): Promise<Extract<Authorization, { action: 'reject' }>> {
  return refuseUndecided(ctx, request, 'malformed-request', message, ip);
}

/**
 * A connection refused before any decision because egress-guard holds `max-tunnels` open connections already: refused
 * in audit mode too (it is the proxy's own limit, not the policy's), with its event (`at-capacity`) so that the job's
 * report says why the connection failed.
 */
export function refuseAtCapacity(ctx: AuthorizeContext, request: AuthorizeRequest, message: string, ip?: string): Promise<Extract<Authorization, { action: 'reject' }>> {
  return refuseUndecided(ctx, request, 'at-capacity', message, ip);
}

/**
 * A connection to the transparent listener that no redirect rule sent there (no original destination, or one that is
 * the listener itself): there is nothing to decide or relay it to, so it is refused in audit mode too, with its event
 * (`not-redirected`, `host` and `ip` the listener's address) so that a job that names the transparent listener as its
 * proxy, or connects to it by mistake, finds out why in its report.
 */
export function refuseNotRedirected(ctx: AuthorizeContext, request: AuthorizeRequest, message: string, ip: string): Promise<Extract<Authorization, { action: 'reject' }>> {
  return refuseUndecided(ctx, request, 'not-redirected', message, ip);
}

function refuseUndecided(
  ctx: AuthorizeContext,
  request: AuthorizeRequest,
  reason: 'malformed-request' | 'at-capacity' | 'not-redirected',
  message: string,
  ip: string | undefined,
): Promise<Extract<Authorization, { action: 'reject' }>> {
  const decision: Decision = { outcome: 'blocked', permitted: false, reason, rule: null, host: request.host, message, ...(ip !== undefined && { ip }) };
  return decisionWritten(ctx.events, { action: 'reject', decision, event: emitDecision(ctx.events, ctx.policy(), request, decision) });
}

/**
 * `outcome` once the decisions emitted so far are in the events file (the end-of-turn write): the proxy's decisions
 * of one turn share one write, and each acts only after it, so a line is on disk before a byte it allows moves past
 * egress-guard and before a refused client reads its refusal.
 */
export async function decisionWritten<T>(events: EventLog, outcome: T): Promise<T> {
  await events.decisionsWritten();
  return outcome;
}

/** A request decided to go to `address`: its decision event, and its connection record opened. */
export function forwardTo(
  events: EventLog,
  request: AuthorizeRequest,
  decision: Decision,
  event: DecisionEvent,
  address: string,
  port: number,
  started = request.started,
): Forward {
  const connection = new Connection(events, { id: event.id, kind: request.kind, client: request.client, host: decision.host, port, ip: address }, started);
  return { action: 'forward', decision, event, address, port, connection };
}

/** A request that was decided but cannot be forwarded (its name did not resolve): 502/504 and a close event. */
function failure(
  events: EventLog,
  request: AuthorizeRequest,
  started: number,
  decision: Decision,
  event: DecisionEvent,
  status: 502 | 504,
  error: CloseError,
  message: string,
): Authorization {
  const connection = new Connection(events, { id: event.id, kind: request.kind, client: request.client, host: decision.host, port: request.port }, started);
  return { action: 'fail', decision, event, status, error, message, connection };
}

/**
 * The data path every listener shares: decide on the name (before any lookup, so a blocked name is never
 * resolved in block mode), resolve, decide on the addresses, emit the one decision event, and say which
 * address to connect to (the one that was checked: no second lookup, no DNS-rebinding window).
 */
export async function authorize(ctx: AuthorizeContext, request: AuthorizeRequest): Promise<Authorization> {
  return decisionWritten(ctx.events, await authorizeNow(ctx, request));
}

/** What decide() is asked for a request: it reads method, path and inspectable only when defined (inspectable only when true). */
function askedOf(request: AuthorizeRequest): DecisionRequest {
  const { host, port, method, path, methodOverrides, unreadBody, inspectable } = request;
  return { host, port, method, path, methodOverrides, unreadBody, inspectable };
}

/** authorize() up to its decision's event, emitted but not yet written. */
async function authorizeNow(ctx: AuthorizeContext, request: AuthorizeRequest): Promise<Authorization> {
  if (request.addresses !== undefined) return authorizeOnAddresses(ctx, request as AuthorizeRequest & { addresses: string[] });
  // When the request arrived, for its close event (the caller's object is not copied to carry it).
  const started = request.started ?? Date.now();
  const policy = ctx.policy();
  const asked = askedOf(request);
  const emit = (decision: Decision) => emitDecision(ctx.events, policy, request, decision);
  const nameDecision = decide(policy, asked);
  if (nameDecision.outcome === 'blocked' || nameDecision.reason === 'invalid-host') return { action: 'reject', decision: nameDecision, event: emit(nameDecision) };
  if (nameDecision.ip !== undefined) {
    return forwardTo(ctx.events, request, nameDecision, emit(nameDecision), nameDecision.ip, request.port, started);
  }

  let addresses: readonly string[];
  try {
    addresses = await ctx.resolver.resolve(nameDecision.host);
  } catch (err) {
    const resolveError = err instanceof ResolveError ? err : new ResolveError(String(err), 'failed');
    const timeout = resolveError.kind === 'timeout';
    return failure(ctx.events, request, started, nameDecision, emit(nameDecision), timeout ? 504 : 502, timeout ? 'upstream-dns-timeout' : 'upstream-dns', resolveError.message);
  }
  return forwardOnAddresses(ctx.events, policy, request, started, nameDecision, addresses, emit);
}

/**
 * authorize() for a request whose addresses are known before the decision (a redirected connection's destination,
 * an inspected request's checked address): nothing to look up, so decided at once, without a promise of its own
 * (every request of an inspected keep-alive connection comes this way). Its event is emitted, not yet written: the
 * caller acts on the answer only once `events.decisionsWritten()` settles, as authorize() does.
 */
export function authorizeOnAddresses(ctx: AuthorizeContext, request: AuthorizeRequest & { addresses: string[] }): Authorization {
  const started = request.started ?? Date.now();
  const policy = ctx.policy();
  const emit = (decision: Decision) => emitDecision(ctx.events, policy, request, decision);
  // One decision on name and addresses together is what the two steps below come to whenever it does not refuse
  // (decide() judges the name first and returns that judgement unless it lets the name through): one call instead
  // of two. A refusal takes the two steps, which word it as before.
  const asked = askedOf(request);
  asked.addresses = request.addresses;
  const decision = decide(policy, asked);
  if (decision.outcome !== 'blocked' && decision.reason !== 'invalid-host') return forwardDecided(ctx.events, request, started, decision, request.addresses, emit);
  asked.addresses = undefined;
  const nameDecision = decide(policy, asked);
  if (nameDecision.outcome === 'blocked' || nameDecision.reason === 'invalid-host') {
    // A redirected connection already has its destination: name it in the event, though nothing connects.
    const destination = request.addresses[0];
    const rejected = nameDecision.ip === undefined && destination !== undefined ? { ...nameDecision, ip: literalAddress(destination) ?? destination } : nameDecision;
    return { action: 'reject', decision: rejected, event: emit(rejected) };
  }
  if (nameDecision.ip !== undefined) {
    return forwardTo(ctx.events, request, nameDecision, emit(nameDecision), nameDecision.ip, request.port, started);
  }
  return forwardOnAddresses(ctx.events, policy, request, started, nameDecision, request.addresses, emit);
}

/**
 * The name's decision carried on to the addresses: what decide() on name and addresses together returns, without
 * judging the name a second time (policy-decide.test.ts); refused, or forwarded to the address checked.
 */
function forwardOnAddresses(
  events: EventLog,
  policy: Policy,
  request: AuthorizeRequest,
  started: number,
  nameDecision: Decision,
  addresses: readonly string[],
  emit: (d: Decision) => DecisionEvent,
): Authorization {
  const decision = decideOnAddresses(policy, nameDecision, request.port, addresses);
  if (decision.outcome === 'blocked') return { action: 'reject', decision, event: emit(decision) };
  return forwardDecided(events, request, started, decision, addresses, emit);
}

/** A request decided on its addresses and not refused: forwarded to the address checked (audit mode: the first one). */
function forwardDecided(
  events: EventLog,
  request: AuthorizeRequest,
  started: number,
  decision: Decision,
  addresses: readonly string[],
  emit: (d: Decision) => DecisionEvent,
): Authorization {
  // Audit mode forwards would-block requests to the address the name resolved to.
  const address = decision.ip ?? addresses[0];
  if (address === undefined) {
    return failure(events, request, started, decision, emit(decision), 502, 'upstream-dns', `${decision.host} has no address`);
  }
  const withIp = decision.ip === undefined ? { ...decision, ip: address } : decision;
  return forwardTo(events, request, withIp, emit(withIp), address, request.port, started);
}
