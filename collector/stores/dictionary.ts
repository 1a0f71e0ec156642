/**
 * The in-memory side of the string dictionary (table eg_strings: hosts, jobs, repositories, each stored once and
 * referred to by an integer id). Ids never change once given, so a cached pair stays true; the cache is emptied
 * when it grows past `max` entries rather than tracking use.
 */
export class Dictionary {
  private readonly byText = new Map<string, number>();
  private readonly byId = new Map<number, string>();

  constructor(private readonly max = 500_000) {}

  remember(id: number, text: string): void {
    if (this.byText.size >= this.max) {
      this.byText.clear();
      this.byId.clear();
    }
    this.byText.set(text, id);
    this.byId.set(id, text);
  }

  id(text: string): number | undefined {
    return this.byText.get(text);
  }

  text(id: number): string | undefined {
    return this.byId.get(id);
  }

  unknownTexts(texts: readonly string[]): string[] {
    return [...new Set(texts)].filter((t) => !this.byText.has(t)).sort();
  }

  unknownIds(ids: readonly number[]): number[] {
    return [...new Set(ids)].filter((id) => !this.byId.has(id));
  }

  /** Ids of texts that are all known (after the store has added the unknown ones). */
  idMap(texts: readonly string[]): Map<string, number> {
    return new Map(texts.map((t) => [t, this.byText.get(t)!]));
  }

  textMap(ids: readonly number[]): Map<number, string> {
    return new Map(ids.flatMap((id) => (this.byId.has(id) ? [[id, this.byId.get(id)!] as const] : [])));
  }
}
