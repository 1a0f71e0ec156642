/** A CA that cannot be used: unreadable, not a CA, a key that is not its key, a state directory that cannot be written. bin maps it to exit 2. */
export class CaError extends Error {}
