#!/usr/bin/env bash
# Fault fidelity: what each toxic of `rattle proxy` actually does against what it was asked
# (issue #22). Starts `rattle proxy --api` on 127.0.0.1 and runs benches/fidelity.py against it:
# bandwidth 10 KB/s to 1 GB/s (1 and 50 connections, both directions, >= SECS s each), latency
# 1 ms to 10 s with and without jitter, toxicity over 1,000 connections, slicer sizes,
# limit_data's byte count, timeout and reset_peer close times, and the proxy's RSS with 1,000
# connections held in a 20 s latency toxic. With RATTLE_BASE=/path/to/an/older/rattle the same
# run is made against that build first ("before"). Everything started is killed on exit, by pid.
#
#   benches/fidelity.sh      (env: RATTLE=target/release/rattle RATTLE_BASE= SECS=5 ONLY= QUICK=)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATTLE=${RATTLE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/rattle}
RATTLE_BASE=${RATTLE_BASE:-}
SECS=${SECS:-5}
ONLY=${ONLY:-}
QUICK=${QUICK:-}
command -v python3 >/dev/null || { echo "missing: python3" >&2; exit 2; }

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# measure LABEL BINARY: one full run against one build.
measure() {
  local label=$1 bin=$2 api pid
  [ -x "$bin" ] || { echo "missing: $bin" >&2; exit 2; }
  api=$(free_port)
  "$bin" proxy --api "127.0.0.1:$api" >"$DIR/$label.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$api") 2>/dev/null && break
    sleep 0.05
  done
  echo
  echo "## $label: $bin (pid $pid)"
  python3 "$ROOT/benches/fidelity.py" --api "127.0.0.1:$api" --pid "$pid" --rattle "$bin" --secs "$SECS" \
    ${ONLY:+--only "$ONLY"} ${QUICK:+--quick} --json "$DIR/$label.json"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$RATTLE_BASE" ] || measure before "$RATTLE_BASE"
measure after "$RATTLE"

if [ -n "$RATTLE_BASE" ]; then
  echo
  echo "## before / after"
  python3 - "$DIR/before.json" "$DIR/after.json" <<'PY'
import json, sys
before = {(r["kind"], r["asked"]): r for r in json.load(open(sys.argv[1]))}
after = json.load(open(sys.argv[2]))
mark = lambda r: "n/a" if r is None or r["ok"] is None else "yes" if r["ok"] else "**no**"
print("| fault | asked | before | after | goal met before / after |")
print("| --- | --- | --- | --- | --- |")
for r in after:
    b = before.get((r["kind"], r["asked"]))
    bm = f"{b['measured']} ({b['error']})" if b else "–"
    print(f"| {r['kind']} | {r['asked']} | {bm} | {r['measured']} ({r['error']}) | {mark(b)} / {mark(r)} |")
PY
fi
