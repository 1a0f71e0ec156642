import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';

export interface PolicyWatch {
  stop(): void;
}

function digest(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return undefined;
  }
}

/**
 * Reload when the policy file's content changes (setting watch-policy), with the same rules as SIGHUP. The
 * directory is watched, not the file: editors and `kubectl` replace files rather than write them, and a mounted
 * ConfigMap swaps a `..data` symlink beside it. Changes are settled for `settleMs` (a file written in pieces
 * is read once whole), and only a new content reloads.
 */
export function watchPolicyFile(file: string, reload: () => void, log: Logger, settleMs = 300): PolicyWatch {
  let last = digest(file);
  let timer: NodeJS.Timeout | undefined;
  const check = () => {
    timer = undefined;
    const now = digest(file);
    if (now === undefined || now === last) return;
    last = now;
    log.info({ policy: file }, 'policy file changed: reloading');
    reload();
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
      // Any name in a ConfigMap's directory may be the swap (..data, ..2026_11_29...); elsewhere only the file.
      if (name !== null && name !== basename(file) && !String(name).startsWith('..')) return;
      clearTimeout(timer);
      timer = setTimeout(check, settleMs);
    });
    watcher.on('error', (err) => log.warn({ err: err.message, policy: file }, 'policy file watch failed; SIGHUP still reloads'));
  } catch (err) {
    log.warn({ err: (err as Error).message, policy: file }, 'cannot watch the policy file; SIGHUP still reloads');
  }
  return {
    stop() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}
