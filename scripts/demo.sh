#!/usr/bin/env bash
# The demo behind `make demo` (as root, on Debian 12, no internet needed):
# build berth, build a busybox image from Debian's busybox-static and import
# it, run the agent on a copy of examples/, show the web pod answering on
# its hostPort, `berth status`, `ps`, `logs`, `exec` and `inspect`, then delete the
# manifests and watch the agent remove everything it made.
#
# All state lives in one temporary directory (printed at the start) with
# its own cgroup parent, bridge, subnet and nftables table, so the demo
# never touches a real installation; it is removed at the end.
#
# Environment (all optional):
#   BERTH_BIN    use this berth binary (berth-shim next to it) instead of building
#   DEMO_PORT    host port of the web pod (default 8080)
#   DEMO_SUBNET  pod subnet (default 10.217.0.0/24)
#   DEMO_KEEP=1  leave the agent and pods running at the end (Ctrl-C stops them)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

port=${DEMO_PORT:-8080}
subnet=${DEMO_SUBNET:-10.217.0.0/24}
if [[ -t 1 ]]; then bold=$'\e[1m' red=$'\e[31m' plain=$'\e[0m'; else bold='' red='' plain=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
# Prints a command the way one would type it, then runs it.
show() {
  local arg line=""
  for arg in "$@"; do
    [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]] || arg="'${arg//\'/\'\\\'\'}'"
    line+=" $arg"
  done
  printf '%s$%s%s\n' "$bold" "$line" "$plain"
  "$@"
}
fail() {
  printf '%sdemo failed: %s%s\n' "$red" "$*" "$plain" >&2
  if [[ -n ${work:-} && -s $work/agent.log ]]; then
    echo "--- last lines of the agent's log ($work/agent.log):" >&2
    tail -n 30 "$work/agent.log" >&2
  fi
  exit 1
}
# Polls "$@" every 0.1 s until it succeeds, for at most $1 seconds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what did not happen within ${seconds}s"
    if [[ -n ${agent_pid:-} ]] && ! kill -0 "$agent_pid" 2>/dev/null; then
      fail "the agent exited while waiting for $what"
    fi
    sleep 0.1
  done
}

[[ $(id -u) == 0 ]] || fail "run as root: containers need namespaces, mounts and cgroups (sudo make demo)"
for tool in runc jq curl busybox nft ss; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run scripts/install-deps.sh (make demo does)"
done
if [[ -n $(ss -Htln "sport = :$port") ]]; then
  fail "port $port is in use on this host; pick another with DEMO_PORT=PORT"
fi

if [[ -n ${BERTH_BIN:-} ]]; then
  berth=$BERTH_BIN
else
  step "building berth (cargo build --bins; a first build takes 6 to 10 minutes on 2 cores)"
  started=$SECONDS
  cargo build --quiet --bins || fail "cargo build failed"
  berth=$repo/target/debug/berth
  echo "built in $((SECONDS - started))s: $berth"
fi
export PATH="$(cd "$(dirname "$berth")" && pwd):$PATH"
berth=berth

work=$(mktemp -d -t berth-demo.XXXXXX)
id=$$
agent_pid=""
cgroup_parent=berth-demo-$id bridge=berthdemo$((id % 100000)) nft_table=berth_demo_$id
export BERTH_ROOT=$work/root BERTH_RUN_ROOT=$work/run BERTH_MANIFESTS=$work/manifests
export BERTH_CONFIG=$work/agent.toml

pod_running() {
  "$berth" status -o json | jq -e --arg name "$1" \
    '.objects[] | select(.kind == "Pod" and .name == $name and .phase == "Running")'
}
web_answers() { curl -fsS --max-time 2 "http://127.0.0.1:$port/"; }
no_pods_left() {
  local seconds=$1 deadline=$((SECONDS + $1))
  until "$berth" status -o json | jq -e '[.objects[] | select(.kind == "Pod")] | length == 0' >/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# The bridge, nftables table and cgroup parent the demo's config named:
# the agent keeps them for the next pod (as podman keeps its bridge).
remove_demo_network() {
  ip link del "$bridge" 2>/dev/null || true
  nft delete table ip "$nft_table" 2>/dev/null || true
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$cgroup_parent" -exec rmdir {} + 2>/dev/null || true
}

# The agent runs in a session of its own, so a Ctrl-C meant for the demo
# does not stop it before it has removed the pods.
start_agent() {
  setsid "$berth" run >>"$work/agent.log" 2>&1 &
  agent_pid=$!
}
stop_agent() {
  if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid"
    wait "$agent_pid" || return
  fi
  agent_pid=""
}

# On failure or Ctrl-C, the pods are removed the way the demo removes them
# at the end: their manifests go, and an agent (a new one if the first has
# died) removes what they owned. The rest is removed on every exit.
cleanup() {
  local status=$?
  trap - INT TERM
  if ((status != 0)) && [[ -d $BERTH_RUN_ROOT/shims ]]; then
    echo "removing everything the demo made" >&2
    find "$BERTH_MANIFESTS" -name '*.yaml' -delete
    if [[ -n $(ls -A "$BERTH_RUN_ROOT/shims") ]]; then
      # A running agent sees the deletions; a new one removes at start
      # whatever no manifest wants.
      [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null || start_agent
      no_pods_left 90 || echo "the agent did not remove every pod within 90s; see $work/agent.log" >&2
    fi
  fi
  stop_agent || true
  # Last resort: whatever still runs in the demo's cgroups was started by it.
  find /sys/fs/cgroup/ -path "*/$cgroup_parent/*" -name cgroup.procs -exec cat {} + 2>/dev/null |
    sort -u | xargs -r kill -KILL 2>/dev/null || true
  leftovers=$(grep -F " $work/" /proc/self/mountinfo | cut -d' ' -f5 | sort -r || true)
  for mount in $leftovers; do umount -l "$mount" 2>/dev/null || true; done
  remove_demo_network
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$BERTH_CONFIG" <<EOF
# Demo-only names, so a real berth installation on this host is untouched.
[runtime]
cgroup-parent = "$cgroup_parent"

[network.bridge]
network = "berth-demo-$id"
bridge = "$bridge"
subnet = "$subnet"
veth-prefix = "bd"
nft-table = "$nft_table"
EOF

step "building the image localhost/berth/busybox:1.35 from Debian's busybox-static"
mkdir -p "$BERTH_MANIFESTS"
cp -r examples/. "$BERTH_MANIFESTS/"
# The air-gapped example imports this very archive by itself.
archive=$BERTH_MANIFESTS/images/busybox.oci.tar
scripts/busybox-image.sh "$archive" localhost/berth/busybox:1.35 || fail "building the image"
show "$berth" import "$archive" || fail "berth import"
if [[ $port != 8080 ]]; then
  sed -i "s/hostPort: 8080/hostPort: $port/" "$BERTH_MANIFESTS/web/pod.yaml"
fi

step "starting the agent on a copy of examples/"
echo "state: $work (--root $BERTH_ROOT, --run-root $BERTH_RUN_ROOT), config $BERTH_CONFIG"
echo "agent log: $work/agent.log"
start_agent

wait_for 60 "the web pod running" pod_running web
wait_for 30 "the web pod answering on port $port" web_answers
step "the web pod answers on its hostPort"
show curl -fsS "http://127.0.0.1:$port/"

wait_for 30 "the hello pod running" pod_running hello
step "berth status"
show "$berth" status
step "berth ps"
show "$berth" ps
step "berth logs"
show "$berth" logs hello
show "$berth" logs config-demo
step "berth exec and berth inspect"
show "$berth" exec web -- sh -c 'echo "inside: $(hostname), pid $$, $(ls /www)"'
filter='.containers[] | {name, containerId, runtime, pid, netns, rootfs: .rootfs.fsType}'
printf "%s\$ berth inspect web | jq '%s'%s\n" "$bold" "$filter" "$plain"
"$berth" inspect web | jq "$filter"
step "berth stats and berth info"
show "$berth" stats --no-stream
show "$berth" info

if [[ ${DEMO_KEEP:-} == 1 ]]; then
  step "the agent keeps running (pid $agent_pid); press Ctrl-C to remove everything"
  wait "$agent_pid" || true
  agent_pid=""
  fail "the agent stopped"
fi

step "removing the pods: deleting their manifests"
show find "$BERTH_MANIFESTS" -name '*.yaml' -delete
no_pods_left 90 || fail "the agent did not remove every pod within 90s"
show "$berth" ps -a

step "stopping the agent"
stop_agent || fail "the agent exited with an error"
"$berth" status | head -n 1
[[ -z $(ls -A "$BERTH_RUN_ROOT/shims" 2>/dev/null) ]] || fail "containers left behind: $(ls "$BERTH_RUN_ROOT/shims")"
! grep -qF " $work/" /proc/self/mountinfo || fail "mounts left behind under $work"
[[ -z $(ip -o link show master "$bridge" 2>/dev/null) ]] || fail "veths left on $bridge: $(ip -o link show master "$bridge")"
echo "no container, mount or veth left; removing the demo's bridge $bridge, nftables table $nft_table and $work"
