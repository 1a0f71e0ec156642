import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import pino, { type Logger } from 'pino';
import { listen } from '../net/listen.js';
import { hostQuery, SearchError } from './host-search.js';
import { decodeCursor, type EventStore, type JobQuery, type RetentionResult, type SearchQuery } from './stores/event-store.js';
import { openStore } from './stores/open-store.js';
import { IngestError, readBatch, type IngestLimits } from './ingest.js';
import { INGEST_PATH } from '../events/delivery/ingest-url.js';
import { contentSecurityPolicy, renderJobsPage, renderNotFoundPage } from './page.js';
import { sendJobEvents } from './events-answer.js';
import type { JobView } from './job-view.js';
import { ViewThread } from './view-thread.js';

export interface CollectorOptions {
  listen: { host: string; port: number };
  /** SQLite file path, or a postgres:// URL. */
  db: string;
  /** Bearer token required to POST events. */
  token?: string;
  log?: Logger;
  limits?: Partial<IngestLimits>;
  /** Most events a job's API answers and pages hold. */
  maxJobEvents?: number;
  /** Delete events older than this many days (at start, then every `retentionIntervalMs`); unset: keep everything. */
  retentionDays?: number;
  retentionIntervalMs?: number;
  /** Jobs of at least this many rows have their page, summary and policy unpacked and rendered off the event loop (view-thread.ts). */
  viewThreadFrom?: number;
}

export interface Collector {
  port: number;
  store: EventStore;
  /** Run retention now (after the run under way, if any); undefined without retentionDays. */
  retention(): Promise<RetentionResult | undefined>;
  close(): Promise<void>;
}

/** Jobs per page of the web page's job list. */
export const PAGE_JOBS = 100;

const DEFAULT_LIMITS: IngestLimits = { maxBodyBytes: 8 * 1024 * 1024, maxDecodedBytes: 32 * 1024 * 1024, maxEvents: 10_000 };

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Why a request's work stopped: its connection closed before the answer was sent. */
class ClientGone extends Error {
  constructor() {
    super('the client closed the connection before the answer was sent');
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  sendJsonText(res, status, JSON.stringify(value), headers);
}

/** JSON already serialized (a view the view thread rendered). */
function sendJsonText(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(body);
}

function sendText(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers });
  res.end(body);
}

/** A whole-number query parameter, at most `max`. */
function count(params: URLSearchParams, name: string, fallback: number, max: number): number {
  const text = params.get(name);
  if (text === null || text === '') return fallback;
  if (!/^\d+$/.test(text)) throw new HttpError(400, `${name}: "${text}" is not a whole number`);
  return Math.min(Number(text), max);
}

/** The `cursor` parameter (the `next` of an earlier page), when given. */
function cursorParam(params: URLSearchParams): string | undefined {
  const cursor = params.get('cursor');
  if (!cursor) return undefined;
  const position = decodeCursor(cursor);
  if (!position || !Number.isSafeInteger(position.last) || !Number.isSafeInteger(position.jobId)) {
    throw new HttpError(400, `cursor: "${cursor}" is not a cursor this collector gave`);
  }
  return cursor;
}

/** GET /api/v1/jobs?limit=N&cursor=C|offset=N&repository=R: without limit, every job (the first API's answer). */
function jobQuery(params: URLSearchParams, defaultLimit?: number): JobQuery {
  const query: JobQuery = {};
  const limit = params.get('limit');
  if (limit !== null && limit !== '') query.limit = Math.max(1, count(params, 'limit', 0, 1000));
  else if (defaultLimit !== undefined) query.limit = defaultLimit;
  const cursor = cursorParam(params);
  if (cursor) query.cursor = cursor;
  else if (params.get('offset')) query.offset = count(params, 'offset', 0, Number.MAX_SAFE_INTEGER);
  const repository = params.get('repository');
  if (repository) query.repository = repository;
  return query;
}

function raise(err: Error): never {
  throw err;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed job id in the path');
  }
}

/**
 * The collector: an HTTP API that ingests NDJSON event batches from proxies, stores each event once,
 * and serves jobs, their events, summaries, suggested policies and a web page.
 */
export async function startCollector(options: CollectorOptions): Promise<Collector> {
  const log = options.log ?? pino({ level: 'silent' });
  const limits: IngestLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const maxJobEvents = options.maxJobEvents ?? 200_000;
  const tokenDigest = options.token ? digest(options.token) : undefined;
  const store = await openStore(options.db);
  const views = new ViewThread({ log, ...(options.viewThreadFrom !== undefined && { from: options.viewThreadFrom }) });

  function authorized(req: IncomingMessage): boolean {
    if (!tokenDigest) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), tokenDigest);
  }

  async function ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!authorized(req)) {
      req.resume();
      sendJson(res, 401, { error: 'missing or wrong bearer token' }, { 'www-authenticate': 'Bearer realm="egress-guard"' });
      return;
    }
    let batch;
    try {
      batch = await readBatch(req, limits);
    } catch (err) {
      if (!(err instanceof IngestError)) throw err;
      log.warn({ status: err.status, error: err.message, client: req.socket.remoteAddress }, 'collector: batch rejected');
      // After refusing an oversized body unread, close the connection rather than read the rest.
      sendJson(res, err.status, { error: err.message, ...(err.rejected.length > 0 && { rejected: err.rejected }) }, err.status === 413 ? { connection: 'close' } : {});
      return;
    }
    const { events, rejected } = batch;
    const result = await store.insert(events);
    if (rejected.length > 0) log.warn({ rejected: rejected.length, first: rejected[0], client: req.socket.remoteAddress }, 'collector: invalid lines in a batch not stored');
    log.info({ events: events.length, ...result }, 'collector: batch stored');
    sendJson(res, 200, { accepted: events.length, ...result, rejected });
  }

  /** GET /api/v1/search?host=PATTERN&since=ISO&until=ISO&decision=...&limit=N&cursor=C|offset=N (collector/host-search.ts). */
  async function search(params: URLSearchParams) {
    let query;
    try {
      query = hostQuery(params.get('host') ?? '');
    } catch (err) {
      if (err instanceof SearchError) throw new HttpError(400, err.message);
      throw err;
    }
    const time = (name: string) => {
      const text = params.get(name);
      if (text === null || text === '') return undefined;
      const date = new Date(text);
      if (Number.isNaN(date.getTime())) throw new HttpError(400, `${name}: "${text}" is not an ISO 8601 time`);
      return date.toISOString();
    };
    const decision = params.get('decision') || undefined;
    if (decision !== undefined && !['allowed', 'blocked', 'would-block'].includes(decision))
      throw new HttpError(400, `decision: "${decision}" is not allowed, blocked or would-block`);
    const page: SearchQuery = { limit: count(params, 'limit', 50, 500) };
    const cursor = cursorParam(params);
    if (cursor) page.cursor = cursor;
    else page.offset = count(params, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const since = time('since');
    const until = time('until');
    const filter = { likes: query.likes, matches: query.matches, ...(since && { since }), ...(until && { until }), ...(decision && { decision }) };
    const { jobs, total, more, next } = await store.searchJobs(filter, page);
    return {
      host: query.pattern,
      ...(since && { since }),
      ...(until && { until }),
      ...(decision && { decision }),
      ...(total !== undefined && { total }),
      more,
      ...(page.offset !== undefined && { offset: page.offset }),
      next,
      jobs,
    };
  }

  /** A job's events; `gone` (the client went away) stops the read at its next turn, and what would follow it. */
  async function jobEvents(job: string, gone: AbortSignal) {
    const events = await store.jobEvents(job, maxJobEvents, gone);
    gone.throwIfAborted();
    return events;
  }

  /** A job's page, summary or policy (null: no events), from its rows, rendered off the loop for a large job. */
  async function jobView(view: JobView, gone: AbortSignal): Promise<string | null> {
    const text = await views.render(view, { limit: maxJobEvents, read: (onPage, signal) => store.jobRows(view.job, maxJobEvents, onPage, signal) }, gone);
    gone.throwIfAborted();
    return text;
  }

  async function route(req: IncomingMessage, res: ServerResponse, gone: AbortSignal): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://collector');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (path === INGEST_PATH) {
      if (method !== 'POST') throw new HttpError(405, 'POST NDJSON events here');
      return ingest(req, res);
    }
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, `${method} is not supported here`);
    if (path === '/healthz') return sendText(res, 200, 'text/plain', 'ok\n');
    if (path === '/api/v1/jobs') {
      const query = jobQuery(url.searchParams);
      const page = await store.jobs(query);
      return sendJson(res, 200, query.limit === undefined ? { jobs: page.jobs } : page);
    }
    if (path === '/api/v1/search') return sendJson(res, 200, await search(url.searchParams));
    const api = /^\/api\/v1\/jobs\/([^/]+)\/(events|summary|policy)$/.exec(path);
    if (api) {
      const job = decodeSegment(api[1]!);
      const missing = () => new HttpError(404, `no events for job "${job}"`);
      if (api[2] === 'events') {
        const events = await jobEvents(job, gone);
        if (events.length === 0) throw missing();
        return sendJobEvents(res, job, events, url.searchParams.get('format') === 'ndjson' ? 'ndjson' : 'json', gone);
      }
      if (api[2] === 'summary') return sendJsonText(res, 200, (await jobView({ kind: 'summary', job }, gone)) ?? raise(missing()));
      const collapse = Number(url.searchParams.get('collapse') ?? 0);
      const yaml = (await jobView({ kind: 'policy', job, collapse: Number.isInteger(collapse) ? collapse : 0 }, gone)) ?? raise(missing());
      return sendText(res, 200, 'application/yaml', yaml, { 'content-disposition': 'inline; filename="egress-policy.yml"' });
    }
    const nonce = randomBytes(16).toString('base64');
    const pageHeaders = { 'content-security-policy': contentSecurityPolicy(nonce), 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' };
    if (path === '/') {
      const query = jobQuery(url.searchParams, PAGE_JOBS);
      return sendText(res, 200, 'text/html', renderJobsPage(await store.jobs(query), query, nonce), pageHeaders);
    }
    const page = /^\/jobs\/([^/]+)$/.exec(path);
    if (page) {
      const job = decodeSegment(page[1]!);
      const html = await jobView({ kind: 'page', job, nonce }, gone);
      if (html === null) return sendText(res, 404, 'text/html', renderNotFoundPage(`No events for job "${job}".`, nonce), pageHeaders);
      return sendText(res, 200, 'text/html', html, pageHeaders);
    }
    throw new HttpError(404, `no such path: ${path}`);
  }

  // The requests being answered, until their connection's 'close': close() stops them (see there).
  const answering = new Set<AbortController>();
  const server = http.createServer((req, res) => {
    // Aborted when the connection closes before the answer is sent (the client went away, or close() below): a job's
    // read goes on in turns (stores/in-turns.ts), 80 of them for 200,000 events, then its view is rendered (~1 s,
    // view-thread.ts) for nobody, and every client that reloads and leaves kept another whole job in memory meanwhile.
    const gone = new AbortController();
    answering.add(gone);
    res.once('close', () => {
      answering.delete(gone);
      if (!res.writableFinished) gone.abort(new ClientGone());
    });
    route(req, res, gone.signal).catch((err: unknown) => {
      if (gone.signal.aborted && err === gone.signal.reason) {
        log.debug({ url: req.url }, 'collector: client went away; request stopped');
        return;
      }
      if (err instanceof HttpError) {
        if (!res.headersSent) sendJson(res, err.status, { error: err.message });
        return;
      }
      log.error({ err }, 'collector: request failed');
      if (!res.headersSent) sendJson(res, 503, { error: 'the collector could not complete the request; retry later' });
      else res.destroy();
    });
  });
  server.requestTimeout = 60_000;
  server.headersTimeout = 20_000;

  let port: number;
  try {
    ({ port } = await listen(server, options.listen, 'listen'));
  } catch (err) {
    await store.close();
    throw err;
  }
  log.info({ listen: `${options.listen.host}:${port}`, db: options.db.replace(/\/\/[^@/]*@/, '//<credentials>@') }, 'collector: listening');

  // Retention: one run at a time, at start and then periodically; ingest and reads go on meanwhile (stores/*.ts).
  let retaining: Promise<RetentionResult | undefined> = Promise.resolve(undefined);
  const retentionDays = options.retentionDays;
  const retention = () => {
    if (retentionDays === undefined) return Promise.resolve(undefined);
    retaining = retaining.then(async () => {
      const cutoff = new Date(Date.now() - retentionDays * 86_400_000);
      try {
        const result = await store.retain(cutoff);
        log.info({ cutoff: cutoff.toISOString(), ...result }, 'collector: retention');
        return result;
      } catch (err) {
        log.error({ err }, 'collector: retention failed; retried at the next run');
        return undefined;
      }
    });
    return retaining;
  };
  void retention();
  const timer = retentionDays === undefined ? undefined : setInterval(() => void retention(), options.retentionIntervalMs ?? 3_600_000);
  timer?.unref();

  let closing: Promise<void> | undefined;
  return {
    port,
    store,
    retention,
    close() {
      closing ??= (async () => {
        if (timer) clearInterval(timer);
        await retaining;
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
          // A closed connection's 'close' (which stops its request) comes after the server's, so after the view thread
          // and the store below had closed under a request still reading or sending a view: it went on, failed and
          // logged an error. Stopped here instead, at its next turn, as if its client had gone.
          for (const gone of answering) gone.abort(new ClientGone());
        });
        await views.close();
        await store.close();
      })();
      return closing;
    },
  };
}
