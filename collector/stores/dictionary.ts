import { LRUCache } from 'lru-cache';

/**
 * The in-memory side of the string dictionary (table eg_strings: hosts, jobs, repositories, each stored once and
 * referred to by an integer id). Ids never change once given, so a cached pair stays true; the least recently used
 * pairs go once `max` are held (a fleet's job keys keep coming; its hosts, used by every batch, stay).
 */
export class Dictionary {
  private readonly byText: LRUCache<string, number>;
  private readonly byId: LRUCache<number, string>;

  constructor(max = 500_000) {
    this.byText = new LRUCache({ max });
    this.byId = new LRUCache({ max });
  }

  remember(id: number, text: string): void {
    this.byText.set(text, id);
    this.byId.set(id, text);
  }

  id(text: string): number | undefined {
    return this.byText.get(text);
  }

  text(id: number): string | undefined {
    return this.byId.get(id);
  }

  /** The texts not held, once each, sorted (the order the store inserts them in: no deadlock between collectors). */
  unknownTexts(texts: readonly string[]): string[] {
    return [...new Set(texts)].filter((t) => !this.byText.has(t)).sort();
  }

  unknownIds(ids: readonly number[]): number[] {
    return [...new Set(ids)].filter((id) => !this.byId.has(id));
  }

  /**
   * Ids of texts, each known or in `fresh` (what the store just added or read: kept apart so that a batch with more
   * strings than the cache holds still finds them all).
   */
  idMap(texts: readonly string[], fresh: ReadonlyMap<string, number> = new Map()): Map<string, number> {
    return new Map(texts.map((t) => [t, fresh.get(t) ?? this.byText.get(t)!]));
  }

  textMap(ids: readonly number[], fresh: ReadonlyMap<number, string> = new Map()): Map<number, string> {
    const out = new Map<number, string>();
    for (const id of ids) {
      const text = fresh.get(id) ?? this.byId.get(id);
      if (text !== undefined) out.set(id, text);
    }
    return out;
  }
}
