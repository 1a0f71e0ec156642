#!/bin/bash
# Container entrypoint: apply the redirect rules in this (shared) network namespace while still root, then run
# egress-guard as the dedicated user (uid $EGRESS_UID), whose own traffic the rules exempt by owner match.
#
# EGRESS_RULES (entrypoint only, not an egress-guard setting):
#   auto (default)  apply when the command is `run`, EGRESS_TRANSPARENT_LISTEN is set and the container has NET_ADMIN;
#                   without NET_ADMIN, warn and run as an explicit proxy only
#   required        fail (exit 1) unless the rules could be applied
#   off             never touch iptables
# In block mode a failed `rules apply` stops the container (fail closed) instead of running unenforced.
set -euo pipefail

EGRESS_UID=${EGRESS_UID:-10101}
EGRESS_RULES=${EGRESS_RULES:-auto}
EG=(node /opt/egress-guard/dist/egress-guard.js)
[ $# -gt 0 ] || set -- run

say() { printf '{"level":"%s","component":"entrypoint","msg":"%s"}\n' "$1" "$2" >&2; }

has_cap() { # has_cap BIT: the capability is in the effective set (NET_ADMIN 12, NET_RAW 13)
  local eff
  eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
  (( (16#$eff >> $1) & 1 ))
}
has_net_admin() { has_cap 12; }

# The capability egress-guard keeps to mark its sockets: CAP_NET_RAW is enough since Linux 5.17, else CAP_NET_ADMIN.
mark_capability() {
  local release major minor
  release=$(uname -r)
  major=${release%%.*}
  minor=${release#*.}
  minor=${minor%%[!0-9]*}
  if (( major > 5 || (major == 5 && minor >= 17) )) && has_cap 13; then echo net_raw
  elif has_cap 12; then echo net_admin
  fi
}

# EGRESS_SOCKET_MARK (auto by default): the rules exempt egress-guard's uid only on sockets that carry this mark,
# random per start, so a root job in the runner's container that takes uid $EGRESS_UID (CAP_SETUID) is not
# exempt. off: uid alone (as a Kubernetes sidecar without capabilities must run; its runner must not be root).
choose_socket_mark() {
  local requested=${EGRESS_SOCKET_MARK:-auto}
  MARK_CAP=""
  if [ "$requested" = off ]; then
    unset EGRESS_SOCKET_MARK
    say warn "EGRESS_SOCKET_MARK=off: uid $EGRESS_UID alone is exempt; a root job that can change its uid can pass the rules"
    return 0
  fi
  MARK_CAP=$(mark_capability)
  if [ -z "$MARK_CAP" ]; then
    [ "$requested" = auto ] || { say error "EGRESS_SOCKET_MARK is set but the container has neither NET_RAW (Linux 5.17+) nor NET_ADMIN to mark sockets"; exit 1; }
    unset EGRESS_SOCKET_MARK
    say warn "no capability to mark sockets: uid $EGRESS_UID alone is exempt; a root job that can change its uid can pass the rules"
    return 0
  fi
  if [ "$requested" = auto ]; then
    local mark=0
    while [ "$mark" = 0 ]; do mark=$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); done
    export EGRESS_SOCKET_MARK=$mark
  fi
}

# The mode egress-guard will run in, from flags, environment and policy file alike (decide prints it);
# "block" when it cannot tell (a bad policy), so nothing here ever fails open.
effective_mode() {
  local mode
  mode=$(env -u EGRESS_SOCKET_MARK "${EG[@]}" decide "$@" localhost 2>/dev/null | sed -n 's/.*"mode":"\([a-z]*\)".*/\1/p')
  [ "$mode" = audit ] && echo audit || echo block
}

port_of() { # "127.0.0.1:3129 [::1]:3129" -> 3129 (the port of the first address)
  local first=${1%% *}
  first=${first%%,*}
  printf '%s' "${first##*:}"
}

apply_rules() {
  local transparent=${EGRESS_TRANSPARENT_LISTEN:-off}
  [ "$EGRESS_RULES" != off ] || return 0
  if [ "$transparent" = off ]; then
    [ "$EGRESS_RULES" != required ] || { say error "EGRESS_RULES=required but EGRESS_TRANSPARENT_LISTEN is off"; exit 1; }
    return 0
  fi
  if ! has_net_admin; then
    [ "$EGRESS_RULES" != required ] || { say error "EGRESS_RULES=required but the container lacks NET_ADMIN (add cap_add: [NET_ADMIN])"; exit 1; }
    say warn "no NET_ADMIN: redirect rules not applied; only clients using the proxy variables are filtered"
    return 0
  fi
  local args=(rules apply --uid "$EGRESS_UID" --mode "$MODE" --transparent-port "$(port_of "$transparent")")
  local dns=${EGRESS_DNS_LISTEN:-127.0.0.1:53 [::1]:53}
  [ "$dns" = off ] || args+=(--dns-port "$(port_of "$dns")")
  if [ "$dns" != off ] && [ -z "${EGRESS_DNS_UPSTREAM:-}" ] && grep -q '^nameserver 127\.0\.0\.11' /etc/resolv.conf 2>/dev/null; then
    # Docker's embedded DNS forwards as root; the rules would send those queries back to egress-guard (a loop).
    say error "set EGRESS_DNS_UPSTREAM to a real resolver: with redirect rules, Docker's 127.0.0.11 cannot be egress-guard's upstream"
    exit 1
  fi
  choose_socket_mark
  if "${EG[@]}" "${args[@]}"; then
    RULES_APPLIED=1
    say info "redirect rules applied (traffic of uid $EGRESS_UID${EGRESS_SOCKET_MARK:+ with its socket mark} exempt)"
  elif [ "$EGRESS_RULES" = required ] || [ "$MODE" = block ]; then
    say error "redirect rules could not be applied; refusing to run unenforced in block mode"
    exit 1
  else
    say warn "redirect rules could not be applied; audit mode continues as an explicit proxy only"
  fi
}

if [ "$(id -u)" != 0 ]; then
  # Started as a non-root user (docker run --user): no rules, just the command.
  exec "${EG[@]}" "$@"
fi

# What the rules refuse (block) or only report (audit) goes to an NFLOG group; ulogd, started here as root (it
# holds the netlink socket), writes it as JSON lines that egress-guard, unprivileged, turns into events.
start_netfilter_log() {
  [ "$RULES_APPLIED" = 1 ] && [ -z "${EGRESS_NETFILTER_LOG:-}" ] || return 0
  if ! command -v ulogd >/dev/null; then
    say warn "ulogd is not installed: UDP, ICMP and answers to outside hosts that the rules refuse are not events"
    return 0
  fi
  local dir=/var/lib/egress-guard/netlog
  mkdir -p "$dir"
  # A fresh file: ulogd appends, and a restarted container must not report the last run's packets again.
  : >"$dir/nflog.json"
  "${EG[@]}" rules log-config --json-file "$dir/nflog.json" --log-file "$dir/ulogd.log" >"$dir/ulogd.conf"
  if ulogd -d -c "$dir/ulogd.conf"; then
    export EGRESS_NETFILTER_LOG="$dir/nflog.json"
  else
    say warn "ulogd did not start: UDP, ICMP and answers to outside hosts that the rules refuse are not events"
  fi
}

RULES_APPLIED=0
MARK_CAP=""
if [ "$1" = run ]; then
  MODE=$(effective_mode "${@:2}")
  apply_rules
  start_netfilter_log
fi
# Writable state (spool, SQLite) belongs to the egress-guard user.
for dir in ${EGRESS_SPOOL_DIR:-} /var/lib/egress-guard; do
  [ -z "$dir" ] || { mkdir -p "$dir" && chown "$EGRESS_UID:$EGRESS_UID" "$dir"; } || true
done
# Without rules there is nothing to be exempt from: no mark (and "auto" is not a number egress-guard reads).
[ "$RULES_APPLIED" = 1 ] || { unset EGRESS_SOCKET_MARK; MARK_CAP=""; }
# NET_BIND_SERVICE for port 53, and the capability to mark sockets when the rules expect a mark.
CAPS=-all,+net_bind_service${MARK_CAP:+,+$MARK_CAP}
DROP=(setpriv --reuid="$EGRESS_UID" --regid="$EGRESS_UID" --clear-groups --inh-caps="$CAPS" --ambient-caps="$CAPS" --no-new-privs -- "${EG[@]}" "$@")
if [ "$RULES_APPLIED" = 1 ] && [ "$MODE" = audit ]; then
  # Audit mode never breaks a job: when egress-guard stops, however it stops (even SIGKILL), this root shell
  # takes the redirect rules away again. Block mode execs instead, so the rules outlive it: fail closed.
  "${DROP[@]}" &
  child=$!
  stopping=0
  trap 'stopping=1; kill -TERM "$child" 2>/dev/null' TERM INT
  status=0
  wait "$child" || status=$?
  # A trapped signal ends `wait` early: wait again until the child itself has exited.
  while kill -0 "$child" 2>/dev/null; do status=0; wait "$child" || status=$?; done
  "${EG[@]}" rules remove >&2 || true
  if [ "$stopping" = 1 ]; then exit "$status"; fi
  # It died on its own. Keep the container (and with it the network namespace a `network_mode: service:`
  # runner shares) up, unfiltered, until the container is stopped; the healthcheck now reports unhealthy.
  say error "egress-guard exited ($status) in audit mode: redirect rules removed, the job's traffic now passes unfiltered"
  trap 'exit "$status"' TERM INT
  while :; do sleep 3600 & wait $! || true; done
fi
exec "${DROP[@]}"
