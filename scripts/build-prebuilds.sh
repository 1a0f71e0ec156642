#!/usr/bin/env bash
# Prebuilds every target of native/binding.gyp for linux x64 and arm64 into action-dist/prebuilds/linux-ARCH/,
# for the GitHub Action, which runs on runners with no compiler and no `npm install`. arm64 is cross-compiled
# (apt-get install gcc-aarch64-linux-gnu). Node's headers come from `npm config get nodedir` (no download).
# Then writes action-dist/prebuilds/manifest.json: the hashes of the sources the prebuilds came from and each
# addon's exports, which scripts/check-action-bundle.mjs verifies. Run through `npm run build:prebuilds`
# (npm puts its node-gyp on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
out=action-dist/prebuilds
nodedir=${NODEDIR:-$(npm config get nodedir)}
[ -n "$nodedir" ] && [ "$nodedir" != undefined ] || { echo "build-prebuilds: set NODEDIR to a directory with include/node/node_api.h" >&2; exit 1; }
# Built in a fixed scratch copy, never in native/build (the developer's own build).
work=/tmp/egress-guard-prebuild
rm -rf "$work" "$out"/linux-*
for arch in x64 arm64; do
  rm -rf "$work" && mkdir -p "$work" && cp native/binding.gyp native/*.c "$work"/
  cp native/*.h "$work"/ 2>/dev/null || true
  if [ "$arch" = arm64 ]; then
    # The addons are C: gcc links them too (no aarch64 g++ needed).
    export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-gcc AR=aarch64-linux-gnu-ar
    command -v "$CC" >/dev/null || { echo "build-prebuilds: $CC is missing (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 1; }
  else
    unset CC CXX LINK AR
  fi
  (cd "$work" && node-gyp rebuild --arch="$arch" --nodedir="$nodedir" -j 2 >/dev/null)
  mkdir -p "$out/linux-$arch"
  cp "$work"/build/Release/*.node "$out/linux-$arch/"
  echo "build-prebuilds: linux-$arch: $(cd "$out/linux-$arch" && ls)"
done
rm -rf "$work"
node scripts/prebuild-manifest.mjs write
