/*
 * String.prototype.isWellFormed and toWellFormed (ES2024: node 20 has them, this TypeScript lib does not), for text
 * that must have a UTF-8 form: a lone UTF-16 surrogate has none (encoding writes U+FFFD in its place).
 */
type WellFormed = string & { isWellFormed(): boolean; toWellFormed(): string };

/** Whether `text` holds no lone UTF-16 surrogate. */
export function isWellFormed(text: string): boolean {
  return (text as WellFormed).isWellFormed();
}

/** `text` itself when it is well-formed, else with each lone surrogate as U+FFFD (what its UTF-8 gives back). */
export function wellFormedText(text: string): string {
  return isWellFormed(text) ? text : (text as WellFormed).toWellFormed();
}
