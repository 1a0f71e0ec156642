import type { Mode, Outcome, Reason } from '../policy/index.js';

/**
 * Decision event schema, version 1. Documented in docs/events.md; bump EVENT_SCHEMA_VERSION on any
 * change that removes or renames a field or changes its meaning (adding an optional field does not).
 */
export const EVENT_SCHEMA_VERSION = 1;

/** What the client asked for: an absolute-URI HTTP request, a CONNECT tunnel, a redirected connection, a DNS query. */
export type RequestKind = 'http' | 'connect' | 'transparent' | 'dns';

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
  /** Why the connection failed, when it did (upstream-timeout, upstream-dns, upstream-refused, client-aborted...). */
  error?: string;
}

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
