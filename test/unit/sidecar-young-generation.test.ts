import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const moduleUrl = new URL('../../sidecar/young-generation.js', import.meta.url).href;

/**
 * A fresh node process that sets the mode, then allocates objects of which a tenth survive a while (as a proxy's
 * connection state does), and prints the young generation's size: V8 grows it only under such a load, and only
 * in a process whose heap it has not configured otherwise.
 */
async function youngGenerationAfterLoad(mode: 'fixed' | 'grow'): Promise<number> {
  const script = `
    import v8 from 'node:v8';
    const { useYoungGeneration } = await import(${JSON.stringify(moduleUrl)});
    useYoungGeneration(${JSON.stringify(mode)});
    let kept = [];
    for (let i = 0; i < 2e6; i++) {
      const o = { i, text: 'x' + i, list: [i] };
      if (i % 10 === 0) kept.push(o);
      if (kept.length > 20000) kept = [];
    }
    process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000, cwd: fileURLToPath(new URL('.', import.meta.url)) });
  return Number(stdout);
}

describe('young-generation setting', () => {
  it('fixed keeps the semi-spaces at their starting 1 MiB under a load that makes V8 grow them; grow lets them grow', async () => {
    const fixed = await youngGenerationAfterLoad('fixed');
    const grown = await youngGenerationAfterLoad('grow');
    assert.ok(fixed > 0 && fixed <= 2 * 1024 * 1024, `fixed: new space ${fixed} bytes`);
    assert.ok(grown >= 8 * 1024 * 1024, `grow: new space ${grown} bytes (the load no longer makes V8 grow it?)`);
  });
});
