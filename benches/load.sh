#!/usr/bin/env bash
# benches/load.sh: rattle load against wrk and oha, in one run, on the same nginx.
#
# nginx (one process) answers 13 bytes from memory (NGINX_SERVE=file: from a static file, which
# makes nginx the bottleneck) on 127.0.0.1 pinned to one core; every client
# is pinned to the other core and runs with the same connection count and one thread (oha, whose
# default is one worker per physical core even when pinned, is run both ways). Prints, per tool,
# the median over ROUNDS of throughput (and its ratio to wrk's), p50/p99 latency and client CPU
# per request (user and sys from /usr/bin/time over requests completed); then an open-model run (target
# vs achieved rate) and a coordinated-omission run (nginx SIGSTOPped for 1 s mid-run while the
# open model sends at RATE/s: the true p99 is about 900 ms). Everything it starts it stops by pid.
#
# Usage: benches/load.sh    (env: CONNS=50 DUR=10 ROUNDS=3 RATE=5000 NGINX_SERVE=memory)
source "$(dirname "$0")/lib.sh"

CONNS=${CONNS:-50}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-5000}
# Also run oha with its default worker count (one per physical core, 2 here, even on one CPU).
OHA_DEFAULT=${OHA_DEFAULT:-1}
# Another rattle binary (e.g. a build of an earlier commit) to measure beside this one.
RATTLE_BASE=${RATTLE_BASE:-}

need_tools
build_rattle
pick_cores
start_nginx

RESULTS="$WORK/results.txt"
: >"$RESULTS"

# Runs "$@" pinned to the client core under /usr/bin/time; output in $WORK/out, CPU in $WORK/cpu.
timed() {
    /usr/bin/time -f '%U %S %M' -o "$WORK/cpu" taskset -c "$CLIENT_CPU" "$@" >"$WORK/out" 2>"$WORK/err" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || true
}

# "user sys" seconds of the last timed run.
cpu_s() { awk '{print $1, $2}' "$WORK/cpu"; }

run_wrk() {
    timed wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$URL"
    python3 - "$WORK/out" "$(cpu_s)" "$1" >>"$RESULTS" <<'PY'
import re, sys
user, sys_ = sys.argv[2].split()
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
p = {m.group(1): ms(m.group(2), m.group(3))
     for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
n = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
print("wrk", sys.argv[3], rps, p["50"], p["99"], n, user, sys_)
PY
}

# $1: round; $2: binary (default: this build); $3: label.
run_rattle() {
    timed "${2:-$RATTLE}" load "$URL" -c "$CONNS" -d "${DUR}s" --json --no-progress
    python3 - "$WORK/out" "$(cpu_s)" "$1" "${3:-rattle}" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(sys.argv[4], sys.argv[3], r["requests_per_sec"], l["p50"], l["p99"], r["requests"], *sys.argv[2].split())
PY
}

OHA_JSON=()
oha_setup() {
    command -v oha >/dev/null || return 1
    if oha --help | grep -q -- '--output-format'; then
        OHA_JSON=(--output-format json)
    else
        OHA_JSON=(--json)
    fi
}

# $1: round; $2: label; the rest: extra oha flags.
run_oha() {
    local round=$1 label=$2
    shift 2
    timed oha -z "${DUR}s" -c "$CONNS" --no-tui "${OHA_JSON[@]}" "$@" "$URL"
    python3 - "$WORK/out" "$(cpu_s)" "$round" "$label" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n = sum(r.get("statusCodeDistribution", {}).values()) + sum(r.get("errorDistribution", {}).values())
p = r["latencyPercentiles"]
print(sys.argv[4], sys.argv[3], r["summary"]["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, n, *sys.argv[2].split())
PY
}

HAVE_OHA=0
oha_setup && HAVE_OHA=1
say "closed model: $CONNS connections, ${DUR}s, $ROUNDS rounds (client on cpu $CLIENT_CPU)"
for round in $(seq 1 "$ROUNDS"); do
    run_wrk "$round"
    if [ "$HAVE_OHA" = 1 ]; then
        run_oha "$round" oha-1t --worker-threads 1
        [ "$OHA_DEFAULT" = 1 ] && run_oha "$round" oha-default
    fi
    run_rattle "$round"
    [ -n "$RATTLE_BASE" ] && run_rattle "$round" "$RATTLE_BASE" rattle-base
    say "  round $round done"
done

echo
echo "## Closed model: $CONNS connections, ${DUR} s, median of $ROUNDS rounds"
echo "nginx 1 process on cpu $SERVER_CPU serving from $NGINX_SERVE, clients on cpu $CLIENT_CPU; $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $( [ "$HAVE_OHA" = 1 ] && oha --version || echo 'oha: not installed')"
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    tool, rnd, rps, p50, p99, n, user, sys_ = line.split()
    rows.setdefault(tool, []).append(
        (float(rps), float(p50), float(p99), int(n), float(user), float(sys_)))
def med(tool, i):
    return statistics.median(r[i] for r in rows[tool])
def us(tool, *cols):
    return statistics.median(sum(r[c] for c in cols) / r[3] * 1e6 for r in rows[tool] if r[3])
names = {"oha-1t": "oha --worker-threads 1", "oha-default": "oha (default: 2 worker threads)",
         "rattle-base": "rattle (RATTLE_BASE)"}
wrk = med("wrk", 0)
def spread(tool):
    # Per round against that round's wrk (tools are interleaved, so a busy moment hits both).
    r = [a[0] / b[0] for a, b in zip(rows[tool], rows["wrk"])]
    return f"{min(r):.2f}–{max(r):.2f}"
print("| tool | requests/s | vs wrk | vs wrk, rounds | p50 ms | p99 ms | client CPU µs/request | of which user | of which sys |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for tool in ("wrk", "oha-1t", "oha-default", "rattle-base", "rattle"):
    if tool in rows:
        print(f"| {names.get(tool, tool)} | {med(tool, 0):,.0f} | {med(tool, 0) / wrk:.2f} | {spread(tool)} | {med(tool, 1):.3f} "
              f"| {med(tool, 2):.3f} | {us(tool, 4, 5):.2f} | {us(tool, 4):.2f} | {us(tool, 5):.2f} |")
PY

echo
echo "## Open model: --rate $RATE/s, $CONNS connections, ${DUR} s"
timed "$RATTLE" load "$URL" -c "$CONNS" -d "${DUR}s" --rate "$RATE/s" --json --no-progress
python3 - "$WORK/out" "$(cpu_s)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o, l = r["open"], r["latency_ms"]
print(f"rattle: target {o['target_rate']:.0f}/s, achieved {o['achieved_rate']:.1f}/s "
      f"({o['achieved_rate'] / o['target_rate'] * 100:.3f}%), sent {o['sent']}, late {o['late']}, "
      f"missed {o['missed']}, p50 {l['p50']:.3f} ms, p99 {l['p99']:.3f} ms, "
      f"CPU {sum(map(float, sys.argv[2].split())) / max(r['requests'], 1) * 1e6:.1f} µs/request")
PY

echo
echo "## Coordinated omission: --rate $RATE/s for ${DUR} s, nginx SIGSTOPped for 1 s at 4 s"
echo "(true p99: the requests due during the stall, 1 s of the run, waited from 1 s down to 0)"
stall_run() {
    # $1: label; the rest: the client command. The stall starts 4 s after the client.
    local label=$1
    shift
    taskset -c "$CLIENT_CPU" "$@" >"$WORK/out" 2>"$WORK/err" &
    local pid=$!
    PIDS+=("$pid")
    sleep 4
    kill -STOP "$NGINX_PID"
    sleep 1
    kill -CONT "$NGINX_PID"
    wait "$pid" || true
    echo "$label" >"$WORK/label"
}
stall_run rattle "$RATTLE" load "$URL" -c "$CONNS" -d "${DUR}s" --rate "$RATE/s" --json --no-progress
python3 - "$WORK/out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o, l = r["open"], r["latency_ms"]
print(f"rattle: p50 {l['p50']:.3f} ms, p99 {l['p99']:.1f} ms, p99.9 {l['p99_9']:.1f} ms, max {l['max']:.1f} ms; "
      f"sent {o['sent']}, late (> {o['late_after_ms']:.0f} ms) {o['late']}, missed {o['missed']}, "
      f"achieved {o['achieved_rate']:.1f}/s")
PY
if [ "$HAVE_OHA" = 1 ]; then
    stall_run oha oha -z "${DUR}s" -c "$CONNS" -q "$RATE" --worker-threads 1 --no-tui "${OHA_JSON[@]}" "$URL"
    python3 - "$WORK/out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["latencyPercentiles"]
n = sum(r.get("statusCodeDistribution", {}).values())
print(f"oha (no --latency-correction): p50 {p['p50'] * 1e3:.3f} ms, p99 {p['p99'] * 1e3:.1f} ms, "
      f"max {r['summary']['slowest'] * 1e3:.1f} ms, responses {n}")
PY
fi
