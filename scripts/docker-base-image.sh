#!/usr/bin/env bash
# A real Docker engine and a registry-free Node base image for CI (no image can be pulled on these machines).
#
#   scripts/docker-base-image.sh start   install docker.io/docker-compose/debootstrap if missing, start a private dockerd
#   scripts/docker-base-image.sh base    build local/debian:bookworm (debootstrap + docker import) and the Node base image
#   scripts/docker-base-image.sh stop    remove the base images, stop the dockerd this script started, remove its state
#   scripts/docker-base-image.sh env     print the export that points docker/docker-compose at that dockerd
#
# The dockerd is private: its own socket, data root, exec root and pid file under $EGRESS_DOCKER_WORK, no default
# bridge (docker0) and no change to the host's ip_forward/FORWARD policy. `stop` stops only the dockerd whose pid it
# recorded, removes the iptables chains that dockerd created (by name, only those absent before it started) and deletes
# the state folder. Every step is idempotent and prints a `[timing]` line.
#
# The Node base image adds the HOST's node binary and npm to the debootstrapped Debian, plus the node headers so that
# native addons (better-sqlite3) compile without downloading headers. It does NOT contain the host's CA bundle: image
# builds get it as a build secret for the build stage only (see test/container/run.sh).
set -euo pipefail

WORK=${EGRESS_DOCKER_WORK:-/var/tmp/egress-guard-docker}
NODE_BASE_TAG=${NODE_BASE_TAG:-local/node:20-bookworm-slim}
DEBIAN_TAG=${DEBIAN_TAG:-local/debian:bookworm}
DOCKER=${DOCKER:-/usr/bin/docker}  # Debian's CLI, matching Debian's daemon
SOCK="$WORK/docker.sock"
export DEBIAN_FRONTEND=noninteractive

T0=$(date +%s.%N)
step() { local n; n=$(date +%s.%N); printf '[timing] %-30s %6.1f s\n' "$1" "$(echo "$n - $T0" | bc)"; T0=$n; }

use_private_daemon() {
  # An explicitly configured daemon (DOCKER_HOST) that answers is used as is and never stopped by this script.
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix://$SOCK" ]; then return 1; fi
  export DOCKER_HOST="unix://$SOCK"
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v bc >/dev/null || missing+=(bc)
  command -v iptables >/dev/null || missing+=(iptables)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

docker_chains() { # chains named DOCKER* in filter and nat, one "table chain" a line
  local table
  for table in filter nat; do
    iptables -t "$table" -S 2>/dev/null | awk -v t="$table" '$1 == "-N" && $2 ~ /^DOCKER/ { print t, $2 }'
  done
}

cmd_start() {
  install_packages
  step "packages"
  if ! use_private_daemon; then
    $DOCKER info >/dev/null || { echo "DOCKER_HOST=$DOCKER_HOST does not answer" >&2; exit 1; }
    echo "using the daemon at $DOCKER_HOST (not started here, will not be stopped here)"
    return 0
  fi
  mkdir -p "$WORK"
  if [ -f "$WORK/dockerd.pid" ] && kill -0 "$(cat "$WORK/dockerd.pid")" 2>/dev/null && $DOCKER info >/dev/null 2>&1; then
    echo "dockerd $(cat "$WORK/dockerd.pid") already running at $DOCKER_HOST"
    return 0
  fi
  docker_chains >"$WORK/chains-before"
  dockerd --host "$DOCKER_HOST" --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    --bridge none --ip-forward=false >"$WORK/dockerd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do
    $DOCKER info >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/dockerd.log" >&2; exit 1; }
    sleep 0.25
  done
  $DOCKER info --format 'engine {{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}}/v{{.CgroupVersion}}'
  echo "dockerd $pid at $DOCKER_HOST"
  step "dockerd start"
}

cmd_base() {
  use_private_daemon || true
  if ! $DOCKER image inspect "$DEBIAN_TAG" >/dev/null 2>&1; then
    local rootfs="$WORK/rootfs" mirror
    rm -rf "$rootfs"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
    # One retry: a mirror hiccup should not fail the run.
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { echo "debootstrap failed, retrying once" >&2; rm -rf "$rootfs"; sleep 10
           debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; } \
      || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs/etc/apt/sources.list" "$rootfs"/var/cache/apt/*.bin
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    else cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"; fi
    step "debootstrap"
    tar --numeric-owner -C "$rootfs" -c . | $DOCKER import --change 'CMD ["bash"]' - "$DEBIAN_TAG" >/dev/null
    rm -rf "$rootfs"
    step "docker import"
  else
    echo "$DEBIAN_TAG present"
  fi
  if ! $DOCKER image inspect "$NODE_BASE_TAG" >/dev/null 2>&1; then
    local ctx="$WORK/nodebase" node include
    rm -rf "$ctx"; mkdir -p "$ctx"
    node=$(command -v node)
    cp "$node" "$ctx/node"
    cp -a "$(npm root -g)/npm" "$ctx/npm"
    # Headers of this very node binary, where its package installed them (nodesource: /usr/include/node).
    include="$(dirname "$(dirname "$(readlink -f "$node")")")/include/node"
    mkdir -p "$ctx/include"
    if [ -f "$include/node.h" ]; then cp -a "$include" "$ctx/include/node"; fi
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_TAG
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY include /usr/local/include
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
CMD ["node"]
EOF
    $DOCKER build -q -t "$NODE_BASE_TAG" "$ctx" >/dev/null
    rm -rf "$ctx"
    printf 'node base image %s: node %s\n' "$NODE_BASE_TAG" "$($DOCKER run --rm --network none "$NODE_BASE_TAG" node --version)"
    step "node base image"
  else
    echo "$NODE_BASE_TAG present"
  fi
}

remove_docker_chains() {
  # Only chains that this dockerd created (absent from chains-before), and the rules that jump to them.
  local table chain
  docker_chains | grep -vxF -f "$WORK/chains-before" 2>/dev/null | while read -r table chain; do
    iptables -t "$table" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && $2 !~ /^DOCKER/ && / -j / { for (i = 1; i <= NF; i++) if ($i == "-j" && $(i+1) == c) { print; break } }' \
      | while read -r rule; do eval "iptables -t $table ${rule/-A /-D }" || true; done
  done
  docker_chains | grep -vxF -f "$WORK/chains-before" 2>/dev/null | while read -r table chain; do iptables -t "$table" -F "$chain" || true; done
  docker_chains | grep -vxF -f "$WORK/chains-before" 2>/dev/null | while read -r table chain; do iptables -t "$table" -X "$chain" || true; done
}

cmd_stop() {
  set +e
  if ! use_private_daemon; then
    $DOCKER rmi -f "$NODE_BASE_TAG" "$DEBIAN_TAG" >/dev/null 2>&1
    echo "daemon at $DOCKER_HOST left running (not started here)"
    return 0
  fi
  local pid
  pid=$(cat "$WORK/dockerd.pid" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    $DOCKER rmi -f "$NODE_BASE_TAG" "$DEBIAN_TAG" >/dev/null 2>&1
    kill -TERM "$pid"
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; sleep 0.5; fi
    echo "dockerd $pid stopped"
  fi
  [ -f "$WORK/chains-before" ] && remove_docker_chains
  # Whatever the daemon left mounted under its own folders, then the folders themselves.
  awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$WORK"
  step "dockerd stop + cleanup"
}

case "${1:-}" in
  start) cmd_start ;;
  base) cmd_base ;;
  stop) cmd_stop ;;
  env) use_private_daemon && echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 start|base|stop|env" >&2; exit 2 ;;
esac
