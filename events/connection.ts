import type { EventLog } from './event-log.js';
import type { CloseError, CloseEvent, CloseFields, RequestKind } from './schema.js';

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
    if (this.closeEvent) return this.closeEvent;
    // Member by member in the order of the event's JSON (the decision's fields, then the end): no spread of the
    // fields and of a conditional object per optional member.
    const f = this.fields;
    const fields = { id: f.id, kind: f.kind, client: f.client, host: f.host, port: f.port } as CloseFields;
    if (f.ip !== undefined) fields.ip = f.ip;
    fields.bytes_in = end.bytesIn ?? 0;
    fields.bytes_out = end.bytesOut ?? 0;
    fields.duration_ms = Date.now() - this.started;
    if (end.status !== undefined) fields.status = end.status;
    if (end.error) fields.error = end.error;
    this.closeEvent = this.events.close(fields);
    return this.closeEvent;
  }
}
