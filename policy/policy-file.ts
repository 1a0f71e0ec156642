import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Scalar } from 'yaml';
import type { Origin } from './cidr.js';
import { splitListString, type SourcedEntry } from './policy-lists.js';
import { PolicyError } from './policy.js';

/** A setting read from a policy/config file: its value and the line it is on. */
export interface FileSetting {
  value: string | SourcedEntry[];
  origin: Origin;
}

function lineOf(counter: LineCounter, offset: number): number {
  return counter.linePos(offset).line;
}

/**
 * A scalar written over several lines (a `>`/`|` block pasted from a harden-runner config, or a plain
 * multi-line scalar) is split from the raw text of the file, not from the value YAML folded, so each entry
 * keeps its own line and a `# comment` ends only its line.
 */
function multiLineEntries(source: string, counter: LineCounter, node: Scalar, file: string): SourcedEntry[] | undefined {
  const [start, end] = node.range ?? [0, 0];
  const raw = source.slice(start, end);
  const block = node.type === 'BLOCK_FOLDED' || node.type === 'BLOCK_LITERAL';
  if (!block && !raw.includes('\n')) return undefined;
  const line = lineOf(counter, start);
  if (!block) return splitListString(raw, { file, line });
  const body = raw.slice(raw.indexOf('\n') + 1);
  return splitListString(body, { file, line: line + 1 });
}

/**
 * Parse a YAML policy/config file into settings with line numbers. Pure: the caller reads the file.
 * Values are strings, or lists of entries for list settings (a YAML list or one string of entries).
 */
export function parsePolicyFile(source: string, file: string): Map<string, FileSetting> {
  const counter = new LineCounter();
  const doc = parseDocument(source, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    throw new PolicyError(file, lineOf(counter, err.pos[0]), '', `YAML syntax error: ${err.message.split('\n')[0]}`);
  }
  const settings = new Map<string, FileSetting>();
  if (doc.contents === null) return settings;
  if (!isMap(doc.contents)) throw new PolicyError(file, 1, '', 'a policy file is a YAML mapping of settings');
  for (const pair of doc.contents.items) {
    const keyNode = pair.key as Node;
    const key = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
    const line = lineOf(counter, keyNode?.range?.[0] ?? 0);
    const value = pair.value as Node | null;
    const origin = { file, line };
    if (value === null || (isScalar(value) && value.value === null)) {
      settings.set(key, { value: [], origin });
    } else if (isSeq(value)) {
      const entries: SourcedEntry[] = [];
      for (const item of value.items as Node[]) {
        const itemLine = lineOf(counter, item.range?.[0] ?? 0);
        if (!isScalar(item) || typeof item.value === 'object') {
          throw new PolicyError(file, itemLine, String(item), `entries of ${key} must be strings`);
        }
        // A loop, not push(...): one item may list any number of entries (past ~120,000 a spread overflows the stack).
        for (const entry of splitListString(String(item.value), { file, line: itemLine })) entries.push(entry);
      }
      settings.set(key, { value: entries, origin });
    } else if (isScalar(value)) {
      const entries = typeof value.value === 'string' ? multiLineEntries(source, counter, value, file) : undefined;
      settings.set(key, { value: entries ?? String(value.value), origin: { file, line: lineOf(counter, value.range?.[0] ?? 0) } });
    } else {
      throw new PolicyError(file, line, key, `${key} must be a string or a list`);
    }
  }
  return settings;
}
