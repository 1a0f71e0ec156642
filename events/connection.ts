import type { EventLog } from './event-log.js';
import type { CloseError, CloseEvent, RequestKind } from './schema.js';

/** What the close event repeats of its decision. */
export interface ConnectionFields {
  /** The decision event's id. */
  id: string;
  kind: RequestKind;
  client: string;
  host: string;
  port: number;
  /** The address connected to; absent when nothing was connected (a failed lookup). */
  ip?: string;
}

/** How a connection ended. */
export interface ConnectionEnd {
  /** Bytes from upstream to the client, and from the client to upstream. */
  bytesIn?: number;
  bytesOut?: number;
  /** HTTP status given to the client, when there is one. */
  status?: number;
  error?: CloseError;
}

/**
 * One forwarded request or tunnel, from its decision to its close event (in the spirit of smokescreen's
 * conntrack). authorize() opens it with what the close event repeats; whichever path ends the request
 * calls close() and the one close event is written. A second close() writes nothing, so no path has to
 * know whether another already reported the end.
 */
export class Connection {
  private closeEvent: CloseEvent | undefined;

  constructor(
    private readonly events: EventLog,
    readonly fields: ConnectionFields,
    /** When the request arrived (duration_ms counts from here). */
    readonly started: number = Date.now(),
  ) {}

  get closed(): boolean {
    return this.closeEvent !== undefined;
  }

  close(end: ConnectionEnd = {}): CloseEvent {
    this.closeEvent ??= this.events.close({
      ...this.fields,
      bytes_in: end.bytesIn ?? 0,
      bytes_out: end.bytesOut ?? 0,
      duration_ms: Date.now() - this.started,
      ...(end.status !== undefined && { status: end.status }),
      ...(end.error && { error: end.error }),
    });
    return this.closeEvent;
  }
}
