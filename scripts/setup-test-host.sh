#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root): real clients (curl, dig, git),
# iptables/iproute2 for redirect rules and network namespaces, nftables for the route lookup of the rules for
# containers, PostgreSQL and Chromium for the collector tests, Docker engine + compose + debootstrap for the
# container tests, dnsperf and dnsmasq for the DNS bench smoke test. Then `npm ci` (which also compiles TypeScript).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

PACKAGES=(curl dnsutils git iptables nftables iproute2 procps util-linux passwd sudo postgresql chromium docker.io docker-compose debootstrap bc dnsmasq-base ulogd2 ulogd2-json podman catatonit gettext-base dnsperf)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# retry N CMD...: a registry that fails once (a mirror hiccup) should not fail the run.
retry() {
  local n=$1 i; shift
  for ((i = 1; ; i++)); do
    "$@" && return 0
    [ "$i" -lt "$n" ] || return 1
    echo "setup: '$*' failed (attempt $i of $n), retrying in $((i * 10)) s" >&2
    sleep $((i * 10))
  done
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  retry 3 apt-get update -qq
  retry 3 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian postgresql package may start a cluster on install; the tests start their own throwaway clusters.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  retry 2 npm ci --no-audit --no-fund
fi
echo "setup: done"
