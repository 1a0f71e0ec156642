/** How long one budget lasts. */
const WINDOW_MS = 60_000;

/**
 * At most `limit` events a minute for one kind of report whose rate a sender sets (malformed packets, queries dropped
 * at capacity): past it each is only counted, and the count goes to `summarise` when the next report comes after the
 * minute (or at flush(), when the server closes), so that a flood cannot turn the events file into its amplifier.
 */
export class ReportBudget {
  private start = 0;
  private reported = 0;
  private suppressed = 0;

  constructor(
    private readonly limit: number,
    private readonly summarise: (suppressed: number) => void,
  ) {}

  /** Summarise what this minute suppressed so far (the server closes: no later report would). */
  flush(): void {
    if (this.suppressed > 0) this.summarise(this.suppressed);
    this.suppressed = 0;
  }

  /** Whether this report gets its event (true) or is only counted (false). */
  take(now = Date.now()): boolean {
    if (now - this.start > WINDOW_MS) {
      if (this.suppressed > 0) this.summarise(this.suppressed);
      this.start = now;
      this.reported = 0;
      this.suppressed = 0;
    }
    if (this.reported >= this.limit) {
      this.suppressed++;
      return false;
    }
    this.reported++;
    return true;
  }
}
