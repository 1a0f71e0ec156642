import assert from 'node:assert/strict';
import { chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { installApp } from '../../action/install-app.js';
import { actionLayout, type ActionLayout } from '../../action/layout.js';
import { privileged } from '../../action/privileged.js';

const NOBODY = { name: 'nobody', uid: 65534, gid: 65534 };

/** The action's layout with its state directory under `dir` (the real one is /var/lib/egress-guard). */
function layoutIn(dir: string): ActionLayout {
  const real = actionLayout({ RUNNER_TEMP: path.join(dir, 'temp') });
  const stateDir = path.join(dir, 'state');
  const moved = (file: string) => path.join(stateDir, path.relative(real.stateDir, file));
  return {
    ...real,
    stateDir,
    appDir: moved(real.appDir),
    sidecarStateDir: moved(real.sidecarStateDir),
    node: moved(real.node),
    entry: moved(real.entry),
    teardown: moved(real.teardown),
    eventsFile: moved(real.eventsFile),
    policyFile: moved(real.policyFile),
    savedResolvConf: moved(real.savedResolvConf),
    spoolDir: moved(real.spoolDir),
    netlogDir: moved(real.netlogDir),
  };
}

test(
  'upgrade from the layout where the egress-guard user owned the state directory: what that user left there (symlinks) never makes root chown or overwrite their targets',
  { skip: process.getuid?.() !== 0 ? 'needs root (install -o)' : false },
  async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'eg-install-app-'));
    try {
      const layout = layoutIn(dir);
      const bundle = path.join(dir, 'bundle');
      mkdirSync(bundle);
      writeFileSync(path.join(bundle, 'egress-guard.js'), '// bundle\n');
      // Root's things a compromised egress-guard would like to own, and a file root would copy back to /etc.
      const targets = ['etc-a', 'etc-b'].map((name) => path.join(dir, name));
      for (const target of targets) mkdirSync(target, { mode: 0o755 });
      // The earlier layout: the state directory is the egress-guard user's, who put symlinks where root installs.
      mkdirSync(layout.stateDir);
      chownSync(layout.stateDir, NOBODY.uid, NOBODY.gid);
      symlinkSync(targets[0]!, layout.sidecarStateDir);
      symlinkSync(targets[1]!, layout.spoolDir);
      writeFileSync(layout.savedResolvConf, 'nameserver 203.0.113.53\n');
      chownSync(layout.savedResolvConf, NOBODY.uid, NOBODY.gid);

      await installApp(privileged(true), layout, bundle, NOBODY);

      for (const target of targets) assert.equal(statSync(target).uid, 0, `root chowned ${target} to the egress-guard user through a symlink it left`);
      assert.equal(lstatSync(layout.stateDir).uid, 0);
      for (const own of [layout.sidecarStateDir, layout.spoolDir]) {
        const stat = lstatSync(own);
        assert.ok(stat.isDirectory() && stat.uid === NOBODY.uid, `${own} is a directory of the egress-guard user's`);
      }
      // A saved resolv.conf root did not make (the egress-guard user's) is not put back on /etc/resolv.conf by teardown.
      assert.equal(lstatSync(layout.savedResolvConf, { throwIfNoEntry: false }), undefined, 'a resolv.conf.saved of the egress-guard user survived');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
