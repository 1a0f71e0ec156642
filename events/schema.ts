import type { Mode, Outcome, Reason } from '../policy/index.js';

/**
 * Decision event schema, version 1. Documented in docs/events.md; bump EVENT_SCHEMA_VERSION on any
 * change that removes or renames a field or changes its meaning (adding an optional field does not).
 */
export const EVENT_SCHEMA_VERSION = 1;

/**
 * What the client asked for: an absolute-URI HTTP request, a CONNECT tunnel, a redirected connection, a DNS
 * query; or traffic the redirect rules reported because it goes around egress-guard (netlog/): a UDP datagram
 * (QUIC, DNS to another port...), ICMP, TCP that is not redirected (the job answering an outside host), any
 * other IP protocol.
 */
export type RequestKind = 'http' | 'connect' | 'transparent' | 'dns' | 'udp' | 'icmp' | 'tcp' | 'ip';

export const REQUEST_KINDS: readonly RequestKind[] = ['http', 'connect', 'transparent', 'dns', 'udp', 'icmp', 'tcp', 'ip'];

export interface CiContext {
  repository?: string;
  run_id?: string;
  job?: string;
  job_id?: string;
}

/** Fields every event carries. */
interface EventBase {
  schema: typeof EVENT_SCHEMA_VERSION;
  /** Identifies the decision; its close event carries the same id. */
  id: string;
  time: string;
  kind: RequestKind;
  /** Client address and port, e.g. "127.0.0.1:53122". */
  client: string;
  host: string;
  port: number;
  /** The address connected to (or that a raw-IP request named). */
  ip?: string;
}

/**
 * Every decision-event `reason` (policy/decision.ts Reason), in the order docs/events.md explains them; a unit test keeps
 * the doc's table in step with this list, and the compiler this list with the type.
 */
export const DECISION_REASONS = [
  'allowed-endpoint',
  'trusted-range',
  'allowed-ip',
  'dns-any',
  'local-name',
  'not-allowed-endpoint',
  'raw-ip',
  'denied-address',
  'sni-mismatch',
  'encrypted-client-hello',
  'invalid-host',
  'ambiguous-host',
  'malformed-request',
  'at-capacity',
  'not-redirected',
  'unsupported-query',
  'upstream-unresolvable',
  'not-proxied',
  'inbound-reply',
  'own-connection',
  'established-before-rules',
  'denied-endpoint',
  'path-not-allowed',
  'method-not-allowed',
  'invalid-path',
  'inspection-required',
] as const satisfies readonly Reason[];

/** A Reason missing from DECISION_REASONS makes this `false`, and the line below it a compile error. */
type AllReasonsListed = [Exclude<Reason, (typeof DECISION_REASONS)[number]>] extends [never] ? true : false;
const allReasonsListed: AllReasonsListed = true;
void allReasonsListed;

/** Emitted once per decision, before any byte is forwarded. */
export interface DecisionEvent extends EventBase {
  event: 'decision';
  sni?: string;
  /** DNS only: query type (A, AAAA, TXT, ...). */
  qtype?: string;
  /** HTTP only: method and path when they were seen (plain HTTP, or inspected TLS). */
  method?: string;
  path?: string;
  decision: Outcome;
  reason: Reason;
  rule: string | null;
  message: string;
  mode: Mode;
  ci?: CiContext;
}

/** Emitted when a forwarded request or tunnel ends; `id` is that of its decision event. */
export interface CloseEvent extends EventBase {
  event: 'close';
  /** Bytes from upstream to the client, and from the client to upstream. */
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  /** HTTP status returned to the client, when there is one. */
  status?: number;
  /** Why the connection failed or ended early, when it did: one of CLOSE_ERRORS, or a socket error family. */
  error?: CloseError;
}

/**
 * Every close-event `error` value, with its meaning (docs/events.md lists the same; a unit test keeps the two
 * in step). Besides these, socket errors are reported in two families: `upstream-<errno>` in lower case when
 * connecting or forwarding a request fails (`upstream-ehostunreach`, `upstream-econnreset`, ...; see
 * net/connect.ts upstreamFailure) and `client-<ERRNO>` / `upstream-<ERRNO>` in upper case when a relayed
 * connection fails mid-way (`client-ECONNRESET`, `upstream-EPIPE`; see net/splice.ts relayError).
 */
export const CLOSE_ERRORS = {
  'upstream-dns': 'the name did not resolve, or resolved to no address (502)',
  'upstream-dns-timeout': 'resolving the name timed out (504)',
  'upstream-refused': 'upstream refused the connection (502)',
  'upstream-timeout': 'connecting to upstream, or waiting for its response, timed out (504)',
  'upstream-error': 'connecting to upstream failed with an error that has no code (502)',
  'upstream-tls': "an inspected request's upstream certificate did not verify for the decided name (or the TLS handshake failed): nothing was sent (502)",
  'client-rejected-certificate': "the client refused egress-guard's certificate on an inspected connection: it does not trust the CA (see docs/inspection.md)",
  'client-http2-only': 'the client of an inspected connection speaks HTTP/2 only; inspected hosts are served HTTP/1.1',
  'inspection-failed': 'no certificate could be made for an inspected connection: it was closed',
  'client-not-http': 'a connection to an inspected host spoke neither TLS nor HTTP: its requests cannot be decided, it was closed',
  'upstream-no-answer': 'upstream sent no response head to a WebSocket upgrade in time (502)',
  'not-upgraded': 'upstream answered a WebSocket upgrade without 101: its answer was relayed, then the connection closed',
  'idle-timeout': 'neither side sent a byte for idle-timeout',
  'half-close-timeout': 'one side had half-closed (FIN) and nothing moved for half-close-timeout',
  'client-aborted': 'the client went away before the response was complete (or before the tunnel was opened)',
  'client-bad-request': "an allowed request node's HTTP client will not write as it came (a control character in its target or a header): refused with 400, never altered",
  'handed-over':
    'a connection went on under a later decision of its own, whose events count what follows: a redirected connection first decided by DNS attribution whose late first bytes were decided (a request handed to the per-request HTTP server, a ClientHello handed to the inspector or relayed on its SNI), or a CONNECT tunnel relayed in audit mode after its ClientHello named another host (sni-mismatch) or carried ECH (encrypted-client-hello)',
  'refused-after-first-bytes': 'the late first bytes of a tunnel (a ClientHello or request after a silent start) were refused: the client was reset',
  'gate-failed': 'checking the late first bytes of a tunnel failed unexpectedly: both sides were closed',
} as const;

export type CloseErrorName = keyof typeof CLOSE_ERRORS;
export type CloseError = CloseErrorName | `upstream-${string}` | `client-${string}`;

export type EgressEvent = DecisionEvent | CloseEvent;

export type DecisionFields = Omit<DecisionEvent, 'schema' | 'event' | 'id' | 'time' | 'ci'>;
export type CloseFields = Omit<CloseEvent, 'schema' | 'event' | 'time'>;

export function ciContextFrom(env: NodeJS.ProcessEnv): CiContext | undefined {
  const ci: CiContext = {};
  if (env.GITHUB_REPOSITORY) ci.repository = env.GITHUB_REPOSITORY;
  if (env.GITHUB_RUN_ID) ci.run_id = env.GITHUB_RUN_ID;
  if (env.GITHUB_JOB) ci.job = env.GITHUB_JOB;
  if (env.EGRESS_JOB_ID) ci.job_id = env.EGRESS_JOB_ID;
  return Object.keys(ci).length > 0 ? ci : undefined;
}
