import { randomUUID } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { EVENT_SCHEMA_VERSION, type CiContext, type CloseEvent, type CloseFields, type DecisionEvent, type DecisionFields, type EgressEvent } from './schema.js';
import { EventsFile } from './events-file.js';
import { StdoutLines } from './stdout-lines.js';
import { conformEvent } from './validate.js';

/** Room for an event's line: most are a few hundred bytes; a longer one gets a buffer of its own. */
const SCRATCH_BYTES = 16 * 1024;

export type EventListener = (event: EgressEvent) => void;

/**
 * Writes decision and close events as pino JSON lines (stdout, and a file if asked) and hands each event
 * to subscribers (the collector client, metrics). Operational logs go through `log` on the same streams.
 */
export class EventLog {
  readonly log: Logger;
  private readonly listeners = new Set<EventListener>();

  constructor(options: { eventsFile?: string; level?: string; ci?: CiContext; stdout?: boolean }) {
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
    this.ci = options.ci;
  }

  private readonly ci: CiContext | undefined;
  private readonly file: EventsFile | undefined;
  private readonly stdout: StdoutLines | undefined;
  /** Where an event's line is encoded, once, for stdout and the events file (which both copy it). */
  private scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
  /** The `time` of the last event, and the millisecond it is for: events of the same millisecond share the string. */
  private lastIso = '';
  private lastMs = -1;

  private isoNow(): string {
    const ms = Date.now();
    if (ms !== this.lastMs) {
      this.lastMs = ms;
      this.lastIso = new Date(ms).toISOString();
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
   * 'now', flushDecisions(), process exit). The DNS server does so for its answers: see DnsResponder.emit.
   */
  decision(fields: DecisionFields, durable: 'now' | 'end-of-turn' = 'now'): DecisionEvent {
    const event: DecisionEvent = { schema: EVENT_SCHEMA_VERSION, event: 'decision', id: randomUUID(), time: this.isoNow(), ...fields };
    if (this.ci) event.ci = this.ci;
    this.write(conformEvent(event), fields.decision === 'allowed' ? 'info' : 'warn');
    // A decision is in the file before the caller acts on it: before a byte of what it allows moves (a reused
    // keep-alive upstream socket writes the request head on the next tick, before the end-of-turn write), and
    // before a refused client reads its 403 (and a job's next step reads the file). Close events, which decide
    // nothing, ride the end-of-turn write.
    if (durable === 'now') this.file?.flushSync();
    return event;
  }

  /** Write the decisions (and whatever else) queued for the events file now, not at the end of the turn. */
  flushDecisions(): void {
    this.file?.flushSync();
  }

  close(fields: CloseFields): CloseEvent {
    const event: CloseEvent = { schema: EVENT_SCHEMA_VERSION, event: 'close', time: this.isoNow(), ...fields };
    this.write(conformEvent(event), 'info');
    return event;
  }

  private write(event: EgressEvent, level: 'info' | 'warn'): void {
    if ((this.stdout || this.file) && this.log.isLevelEnabled(level)) {
      // The line pino would write for log[level](event) with this logger's options (level label first, the event's
      // own fields, no mixin, no msg), made with one JSON.stringify and handed to the same streams: pino's per-key
      // serialisation and the multistream fan-out were a tenth of the DNS server's CPU per query (docs/benchmark.md,
      // "DNS per query, third round"). events-file.test.ts checks the two stay byte-identical. One difference: a
      // lone UTF-16 surrogate is escaped here, where pino wrote it raw (U+FFFD once encoded); text decoded from the
      // network holds none.
      const line = `{"level":"${level}",${JSON.stringify(event).slice(1)}\n`;
      // Encoded once, into a buffer reused for every event: nothing of the line outlives this call (under a DNS
      // load, lines kept until the end of the turn or the next stdout write were promoted by the scavenges of
      // that turn and grew the heap: docs/benchmark.md, "DNS events without per-line garbage").
      if (line.length * 3 > this.scratch.length) this.scratch = Buffer.allocUnsafeSlow(line.length * 3);
      const length = this.scratch.write(line, 0, 'utf8');
      this.stdout?.writeBytes(this.scratch, length);
      this.file?.writeBytes(this.scratch, length);
      if (this.scratch.length > SCRATCH_BYTES) this.scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    }
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err }, 'event listener failed');
      }
    }
  }
}
