#!/usr/bin/env bash
# benches/memory.sh: rattle load's memory over a long open-model run against nginx.
#
# Samples VmRSS of the rattle process every STEP seconds and prints VmHWM (peak) at the end, so
# a flat line shows that nothing is kept per request. Defaults: 10000 requests/s for 600 s.
#
# Usage: benches/memory.sh    (env: RATE=10000 SECS=600 STEP=30 CONNS=50)
source "$(dirname "$0")/lib.sh"

RATE=${RATE:-10000}
SECS=${SECS:-600}
STEP=${STEP:-30}
CONNS=${CONNS:-50}

need_tools
build_rattle
pick_cores
start_nginx

/usr/bin/time -f '%M' -o "$WORK/maxrss" taskset -c "$CLIENT_CPU" "$RATTLE" load "$URL" \
    -c "$CONNS" -d "${SECS}s" --rate "$RATE/s" --json --no-progress >"$WORK/out" 2>"$WORK/err" &
TIME_PID=$!
PIDS+=("$TIME_PID")
sleep 0.5
PID=$(pgrep -P "$TIME_PID" | head -1)
echo "## Memory: rattle load --rate $RATE/s for $SECS s (pid $PID)"
echo "| t (s) | VmRSS (KiB) |"
echo "| ---: | ---: |"
t=0
HWM=
while kill -0 "$PID" 2>/dev/null; do
    sleep "$STEP"
    t=$((t + STEP))
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
    [ -n "$hwm" ] && HWM=$hwm
    [ -n "$rss" ] && echo "| $t | $rss |"
done
wait "$TIME_PID" || true
echo
echo "peak: VmHWM at the last sample ${HWM:-?} KiB; maximum RSS by /usr/bin/time $(cat "$WORK/maxrss" | tail -1) KiB"
python3 - "$WORK/out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o = r["open"]
print(f"requests {r['requests']}, achieved {o['achieved_rate']:.1f}/s, failed {r['failed']}, "
      f"p99 {r['latency_ms']['p99']:.3f} ms")
PY
