#!/usr/bin/env bash
# The demo behind `make demo`: build berth, run the agent on examples/ with
# throwaway state directories, show what it reports, stop it.
#
# At this stage berth accepts and tracks every object but does not run
# containers yet (pods show "Pending: runtime not built yet").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

echo "==> building berth"
cargo build --quiet --bin berth
berth="$repo/target/debug/berth"

work=$(mktemp -d -t berth-demo.XXXXXX)
agent_pid=""
cleanup() {
  if [[ -n "$agent_pid" ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid"
    wait "$agent_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export BERTH_ROOT="$work/root" BERTH_RUN_ROOT="$work/run" BERTH_MANIFESTS="$repo/examples"

echo "==> starting the agent on examples/ (state in $work, log in $work/agent.log)"
"$berth" run >"$work/agent.log" 2>&1 &
agent_pid=$!

# Wait (at most 30 s) until the agent reports the initial state reconciled.
for _ in $(seq 300); do
  if state=$("$berth" status -o json 2>/dev/null | jq -r '.agent.state') && [[ "$state" == "Ready" ]]; then
    break
  fi
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    echo "the agent exited early; its log:" >&2
    cat "$work/agent.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ "${state:-}" != "Ready" ]]; then
  echo "the agent did not become ready within 30 s; its log:" >&2
  cat "$work/agent.log" >&2
  exit 1
fi

echo
echo "==> berth status"
"$berth" status
echo
echo "==> berth events --limit 10"
"$berth" events --limit 10
echo
echo "==> stopping the agent (SIGTERM; containers would keep running)"
kill -TERM "$agent_pid"
wait "$agent_pid"
agent_pid=""
"$berth" status | head -n 1
