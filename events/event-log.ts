import pino, { type Logger } from 'pino';
import { EVENT_SCHEMA_VERSION, type CiContext, type CloseEvent, type CloseFields, type DecisionEvent, type DecisionFields, type EgressEvent } from './schema.js';
import { randomEventId, randomLineEventId } from './event-ids.js';
import { isoTime } from './iso-time.js';
import { EventsFile } from './events-file.js';
import { StdoutLines } from './stdout-lines.js';
import { conformCiContext, conformCloseEvent, conformEvent, decisionFieldsConform } from './validate.js';

/**
 * How a decision event's line starts, up to its id, per level: the line is `{"level":…,` then the event's JSON, whose
 * first four keys are always these (see EventLog.decisionLine).
 */
const DECISION_LINE_START = {
  info: `{"level":"info","schema":${EVENT_SCHEMA_VERSION},"event":"decision","id":"`,
  warn: `{"level":"warn","schema":${EVENT_SCHEMA_VERSION},"event":"decision","id":"`,
} as const;

const NOTHING_TO_WRITE: Promise<void> = Promise.resolve();

export type EventListener = (event: EgressEvent) => void;

/**
 * Writes decision and close events as pino JSON lines (stdout, and a file if asked) and hands each event
 * to subscribers (the collector client, metrics). Operational logs go through `log` on the same streams.
 */
export class EventLog {
  readonly log: Logger;
  private readonly listeners = new Set<EventListener>();

  /**
   * `stdoutEvents: 'refused'`: stdout shows refused decisions (blocked, would-block) and the log, not allowed decisions
   * and closes (the events file has every event; while it cannot be written, stdout shows every event). Each event
   * line on stdout costs the proxy its share of a write through libuv's thread pool, and whoever reads stdout its own
   * work: 14% of the proxy's CPU per inspected keep-alive request, 23% per plain one, 6% per tunnel (docs/benchmark.md,
   * "Event lines on stdout").
   */
  constructor(options: { eventsFile?: string; level?: string; ci?: CiContext; stdout?: boolean; stdoutEvents?: 'all' | 'refused' }) {
    this.stdoutAllowed = options.stdoutEvents !== 'refused';
    const streams: pino.StreamEntry[] = [];
    // stdout is written asynchronously, off the request path, in writes of 12 KiB or every 100 ms (StdoutLines).
    // It is the log a human reads; the durable record is the events file: see EventsFile.
    if (options.stdout !== false) {
      this.stdout = new StdoutLines();
      streams.push({ level: 'trace', stream: this.stdout });
    }
    if (options.eventsFile) {
      this.file = new EventsFile(options.eventsFile);
      streams.push({ level: 'trace', stream: this.file });
      // The lines stdout left out of a write that failed (the disk filled up in this turn): on stdout now, the only
      // copy out while the file cannot be written, as every line after them is (writeLine). Left out: by stdout-events,
      // or while stdout was far behind (StdoutLines.writeDroppable).
      const stdout = this.stdout;
      if (stdout)
        this.file.onUnwritten = (lines, atExit) => {
          stdout.write(lines);
          // The file's exit hook may run after stdout's: what was staged now is written now.
          if (atExit) stdout.flushSync();
        };
    }
    this.log = pino(
      {
        level: options.level ?? 'info',
        base: undefined,
        // Events carry their own `time` (the one subscribers see); other log lines get one here.
        timestamp: false,
        mixin: (merge: object) => ('event' in merge ? {} : { time: new Date().toISOString() }),
        formatters: { level: (label) => ({ level: label }) },
      },
      pino.multistream(streams),
    );
    // Conformed once (conformEvent would cut the same text in every event), and its JSON made once.
    this.ci = options.ci && conformCiContext({ ...options.ci });
    this.ciJson = this.ci ? `,"ci":${JSON.stringify(this.ci)}` : '';
  }

  private readonly ci: CiContext | undefined;
  /** `,"ci":{…}`, how the context ends every decision event's line; empty without one. */
  private readonly ciJson: string;
  private readonly file: EventsFile | undefined;
  private readonly stdout: StdoutLines | undefined;
  /** Whether allowed decisions and closes (the `info` event lines) go to stdout too. */
  private readonly stdoutAllowed: boolean;
  /** The `time` of the last event, and the millisecond it is for: events of the same millisecond share the string. */
  private lastIso = '';
  private lastMs = -1;

  private isoNow(): string {
    const ms = Date.now();
    if (ms !== this.lastMs) {
      this.lastMs = ms;
      this.lastIso = isoTime(ms);
    }
    return this.lastIso;
  }

  /**
   * Write the events file's queued lines now (it is otherwise written at the end of each event-loop turn), and
   * start writing what stdout holds (the sidecar calls this once it listens: that line should not wait for the timer).
   */
  flush(): void {
    this.file?.flushSync();
    this.stdout?.flush();
  }

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Emit a decision event. By default (`durable: 'now'`) its line is in the events file when this returns. A caller
   * whose decision moves nothing by itself may pass 'end-of-turn': the line then rides the file's end-of-turn write
   * (setImmediate), like close events, and is written at once by the next flushSync (the next decision made with
   * 'now', flushDecisions(), process exit). The DNS server does so for its answers: see DnsResponder.emit. So does
   * the proxy, whose actions wait for decisionsWritten() (decision/authorize.ts).
   * `fieldsMembers`, when given, is JSON.stringify(fields) without its braces, made by a caller that can make it for
   * less (the DNS server).
   */
  decision(fields: DecisionFields, durable: 'now' | 'end-of-turn' = 'now', fieldsMembers?: string): DecisionEvent {
    const event: DecisionEvent = { schema: EVENT_SCHEMA_VERSION, event: 'decision', id: randomEventId(), time: this.isoNow(), ...fields };
    if (this.ci) event.ci = this.ci;
    const level = fields.decision === 'allowed' ? 'info' : 'warn';
    if (this.writesLines()) {
      const members = fieldsMembers ?? JSON.stringify(fields).slice(1, -1);
      // The line from the fields' JSON when the event needs no conforming (nearly always); else the event conformed
      // and its line made whole. Both give the same bytes for the same event (events-file.test.ts).
      if (decisionFieldsConform(fields, members)) this.writeLine(this.decisionLine(level, event.id, event.time, members), level);
      else this.writeLine(eventLine(level, conformEvent(event)), level);
    } else conformEvent(event);
    this.tell(event);
    // A decision is in the file before the caller acts on it: before a byte of what it allows moves (a reused
    // keep-alive upstream socket writes the request head on the next tick, before the end-of-turn write), and
    // before a refused client reads its 403 (and a job's next step reads the file). Close events, which decide
    // nothing, ride the end-of-turn write.
    if (durable === 'now') this.file?.flushSync();
    return event;
  }

  /**
   * decision() for a caller that has the fields' JSON and does not use the event (the DNS server, per query): the same
   * line, and the same event for subscribers, but with none subscribed (metrics and the collector client are optional)
   * no event object is made: spreading the fields into it was a tenth of the DNS server's work per cached query
   * (docs/benchmark.md, "Issue 14, seventh round: CPU per DNS query").
   */
  emitDecision(fields: DecisionFields, durable: 'now' | 'end-of-turn', fieldsMembers: string): void {
    const level = fields.decision === 'allowed' ? 'info' : 'warn';
    if (this.listeners.size > 0 || !this.writesLines() || !decisionFieldsConform(fields, fieldsMembers)) {
      this.decision(fields, durable, fieldsMembers);
      return;
    }
    // No event is made, so the id goes only into the line: a slice of a shared text, kept by nothing (randomLineEventId).
    this.writeLine(this.decisionLine(level, randomLineEventId(), this.isoNow(), fieldsMembers), level);
    if (durable === 'now') this.file?.flushSync();
  }

  /** Write the decisions (and whatever else) queued for the events file now, not at the end of the turn. */
  flushDecisions(): void {
    this.file?.flushSync();
  }

  /**
   * Settled once every decision emitted so far is in the events file: right after the end-of-turn write, which all
   * the decisions of a turn share (EventsFile.written). A caller that emitted its decision with 'end-of-turn' acts on
   * it only when this settles. Without an events file there is nothing to wait for.
   */
  decisionsWritten(): Promise<void> {
    return this.file?.written() ?? NOTHING_TO_WRITE;
  }

  /**
   * Emit a close event. Its members are set one by one in the schema's order (CloseFields' members in the order
   * Connection.close sets them), not spread from the fields, and it is conformed by conformCloseEvent, which reads only
   * a close event's members, by name, where conformEvent looks up every text field of either kind of event by key
   * (docs/benchmark.md, "Issue 14, eighth round"). A member given as undefined is left out, as JSON leaves it out.
   */
  close(fields: CloseFields): CloseEvent {
    const event: CloseEvent = {
      schema: EVENT_SCHEMA_VERSION,
      event: 'close',
      time: this.isoNow(),
      id: fields.id,
      kind: fields.kind,
      client: fields.client,
      host: fields.host,
      port: fields.port,
    } as CloseEvent;
    if (fields.ip !== undefined) event.ip = fields.ip;
    event.bytes_in = fields.bytes_in;
    event.bytes_out = fields.bytes_out;
    event.duration_ms = fields.duration_ms;
    if (fields.status !== undefined) event.status = fields.status;
    if (fields.error !== undefined) event.error = fields.error;
    conformCloseEvent(event);
    if (this.writesLines()) this.writeLine(eventLine('info', event), 'info');
    this.tell(event);
    return event;
  }

  /**
   * The line of a decision event built as decision() builds it (schema, event, id, time, then the fields, then the
   * CI context) from the JSON of its fields: JSON.stringify(event) serialises every key of the event, and its cost is
   * per key (about half of an event's CPU under the DNS load: docs/benchmark.md, "Issue 14, fifth round: the DNS
   * decision event"). The four keys in front are constant text but for the id (a UUID) and the time (an ISO string),
   * neither of which JSON escapes; the CI context's JSON is made once. Same bytes as eventLine(level, event).
   */
  private decisionLine(level: 'info' | 'warn', id: string, time: string, fieldsMembers: string): string {
    return `${DECISION_LINE_START[level]}${id}","time":"${time}",${fieldsMembers}${this.ciJson}}\n`;
  }

  /**
   * Whether event lines are written anywhere. Not a matter of the log level, which is the log lines' (pino's):
   * at warn it left allowed decisions and closes out of the events file, at error or silent every decision; which events
   * stdout shows is stdout-events'.
   */
  private writesLines(): boolean {
    return this.stdout !== undefined || this.file !== undefined;
  }

  /**
   * An event's line to stdout and the events file, each encoding it straight into its queue of bytes: nothing of the
   * line outlives this call (docs/benchmark.md, "DNS events without per-line garbage"). Encoding it twice costs less
   * than encoding it once into a buffer and copying it into both queues (Buffer.copy makes a view per call), as this
   * did before ("Issue 14, fifth round").
   */
  private writeLine(line: string, level: 'info' | 'warn'): void {
    // While the events file cannot be written (a full disk), stdout shows every event: it is then the only copy out.
    // A line left out of stdout is marked so: should the write that takes it fail, it goes to stdout then.
    let shown = level === 'warn' || this.stdoutAllowed || this.file?.failing === true;
    // Left out of stdout when it falls far behind, where the events file has the line (StdoutLines.writeDroppable);
    // then not shown, so that a failing write of the file puts it on stdout after all.
    if (shown && this.stdout) shown = this.file && !this.file.failing ? this.stdout.writeDroppable(line) : this.stdout.write(line);
    this.file?.write(line, shown);
  }

  private tell(event: EgressEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err }, 'event listener failed');
      }
    }
  }
}

/**
 * The line pino would write for log[level](event) with EventLog's options (level label first, the event's own fields,
 * no mixin, no msg), made with one JSON.stringify: pino's per-key serialisation and the multistream fan-out were a
 * tenth of the DNS server's CPU per query (docs/benchmark.md, "DNS per query, third round"). events-file.test.ts checks
 * the two stay byte-identical. One difference: a lone UTF-16 surrogate is escaped here, where pino wrote it raw (U+FFFD
 * once encoded); text decoded from the network holds none.
 */
function eventLine(level: 'info' | 'warn', event: EgressEvent): string {
  return `{"level":"${level}",${JSON.stringify(event).slice(1)}\n`;
}
