#!/usr/bin/env bash
# Runs the tests of what the GitHub Action runs on Node 24, the node GitHub's runners run it on (action.yml:
# `using: node24`): the action's own code, `egress-guard env` and `run`, the proxy, the DNS server and the native
# addons it loads, prebuilt ones included. dist/ is what `npm run build` compiled (plain JavaScript, so the same files
# run on either node). Part of `npm test`, after the suite on the node npm runs with (20 on the test host).
#
# Node 24 is the one scripts/node24.sh provides (the npm package node-linux-ARCH, fetched once into
# $EGRESS_NODE_CACHE/24, default /tmp/egress-guard-node/24). Without it this fails: it never skips. The action's
# end-to-end test (test/e2e/github-action.test.ts, in the main suite) runs main and post with the same node.
#
# Usage: scripts/test-node24.sh [TEST_FILE...]   (default: the subset below, about 60 s here)
# Then, with no TEST_FILE given, the collector's tests on node 24, with better-sqlite3 built for it (below).
set -euo pipefail
cd "$(dirname "$0")/.."

major=24
cache="${EGRESS_NODE_CACHE:-/tmp/egress-guard-node}"
node24=$(scripts/node24.sh) || { echo "test-node24: FAILED: no Node $major (above); the Node $major tests did not run" >&2; exit 1; }
dir=$(dirname "$(dirname "$node24")")
version=$("$node24" --version)

[ -f dist/egress-guard.js ] || { echo "test-node24: dist/ is not built (npm run build)" >&2; exit 1; }

if [ $# -gt 0 ]; then
  files=("$@")
else
  files=(
    dist/test/unit/action-*.test.js
    dist/test/unit/connect-head.test.js
    dist/test/unit/dns-wire-plain.test.js
    dist/test/unit/dns-address-lookup.test.js
    dist/test/unit/net-socket-mark.test.js
    dist/test/integration/env-command.test.js
    dist/test/integration/explicit-forwarding.test.js
    dist/test/integration/explicit-blocking.test.js
    dist/test/integration/relay-upstream-exchange.test.js
    dist/test/integration/transparent-http.test.js
    dist/test/integration/listen-one-family.test.js
    dist/test/integration/sidecar-wiring.test.js
    dist/test/integration/dns-server.test.js
    dist/test/integration/dns-udp-batch.test.js
  )
fi

echo "test-node24: node $version ($dir/bin/node), ${#files[@]} test files"
# npm's own node-gyp (npm sets npm_config_node_gyp for its scripts), taken before PATH puts node 24's npm first.
node_gyp="${npm_config_node_gyp:-$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}"
export PATH="$dir/bin:$PATH"
# The committed prebuilt addons (action-dist/prebuilds) load on node 24 and export what the manifest records.
node scripts/prebuild-manifest.mjs check
node --test --test-concurrency=1 --test-timeout=120000 "${files[@]}"
[ $# -gt 0 ] && exit 0

# The collector on node 24 (its users run it on their own node): better-sqlite3 is a V8 addon, which npm ci built for
# the node that ran it. The same package's sources are built once for node 24 (its headers ship in node-linux-ARCH) into
# $cache/24-better-sqlite3-VERSION (about 75 s here), and the collector's tests run from a copy of dist/ beside a
# node_modules whose better-sqlite3 is that build (every other package a link to the real one).
sqlite_version=$(node -p "require('./node_modules/better-sqlite3/package.json').version")
addon="$cache/$major-better-sqlite3-$sqlite_version"
# A cached build that node 24 cannot load (one built against other headers) is built again.
if ! node -e 'process.dlopen({ exports: {} }, process.argv[1])' "$addon/build/Release/better_sqlite3.node" 2>/dev/null; then
  rm -rf "$addon"
  [ -f "$node_gyp" ] || { echo "test-node24: FAILED: npm's node-gyp not found ($node_gyp)" >&2; exit 1; }
  tmp=$(mktemp -d "$cache/.sqlite-$major.XXXXXX")
  cp -r node_modules/better-sqlite3/. "$tmp/"
  rm -rf "$tmp/build"
  # node-gyp takes npm_config_* variables over its own flags: under `npm test` on a machine whose npm config names a
  # nodedir (this one's: /usr, node 20's headers), --nodedir alone built the addon for node 20, which node 24 refuses.
  if ! (cd "$tmp" && npm_config_nodedir="$dir" node "$node_gyp" rebuild --nodedir="$dir" -j 2 >"$tmp.log" 2>&1); then
    tail -20 "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    echo "test-node24: FAILED: better-sqlite3 $sqlite_version could not be built for node $version" >&2
    exit 1
  fi
  rm -f "$tmp.log"
  mv -T "$tmp" "$addon" 2>/dev/null || rm -rf "$tmp"
fi
tree=$(mktemp -d /tmp/egress-guard-node24-tree.XXXXXX)
trap 'rm -rf "$tree"' EXIT
cp -r dist "$tree/dist"
ln -s "$PWD/test" "$tree/test"
ln -s "$PWD/package.json" "$tree/package.json"
mkdir "$tree/node_modules"
for module in node_modules/* node_modules/.bin; do [ "$module" = node_modules/better-sqlite3 ] || ln -s "$PWD/$module" "$tree/$module"; done
cp -r "$addon" "$tree/node_modules/better-sqlite3"
collector=(dist/test/unit/collector-api.test.js dist/test/unit/collector-view-thread.test.js dist/test/integration/collector-command.test.js dist/test/integration/collector-keeps-every-event.test.js)
echo "test-node24: the collector's tests (better-sqlite3 $sqlite_version built for node $version), ${#collector[@]} test files"
(cd "$tree" && node -e "new (require('better-sqlite3'))(':memory:').close()" && node --test --test-concurrency=1 --test-timeout=120000 "${collector[@]}")
