#!/usr/bin/env bash
# benches/h2.sh: `rattle load --http2` against h2load (Debian's nghttp2-client), closed model,
# in one run, on the same nginx serving h2c (HTTP/2 without TLS) from memory.
#
# nginx on one core, each client pinned to the other with one thread. Two shapes:
# - one stream per connection: `h2load -c CONNS -m 1` vs `rattle load --http2 -c CONNS`;
# - ten streams per connection: `h2load -c CONNS -m 10` vs `rattle load --http2 -c CONNS
#   --streams 10`: the same connections and the same requests in flight on each.
# Prints the median over ROUNDS of throughput per tool and rattle's ratio to h2load's (issue
# #14 asks for at least 0.9), p50/p99 and client CPU seconds.
#
# Usage: benches/h2.sh   (env: CONNS=50 DUR=10 ROUNDS=3 RATTLE=path/to/rattle)
source "$(dirname "$0")/lib.sh"

CONNS=${CONNS:-50}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}

SKIP_OHA=1 need_tools
command -v h2load >/dev/null || {
    say "installing nghttp2-client (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
}
build_rattle
pick_cores
NGINX_LISTEN_OPTS=http2 start_nginx

timed() {
    /usr/bin/time -f '%U %S' -o "$WORK/cpu" taskset -c "$CLIENT_CPU" "$@" >"$WORK/out" 2>"$WORK/err" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid" || true
}
RESULTS="$WORK/results"
: >"$RESULTS"

for round in $(seq 1 "$ROUNDS"); do
    for m in 1 10; do
        timed h2load -c "$CONNS" -m "$m" -t 1 -D "$DUR" "$URL"
        python3 - "$WORK/out" "$(tail -n 1 "$WORK/cpu")" "$m" >>"$RESULTS" <<'PY' || true
import re, sys
t = open(sys.argv[1]).read(); user, sys_ = map(float, sys.argv[2].split())
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t).group(1))
lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", t)
ms = lambda v, u: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
print("h2load", sys.argv[3], rps, ms(lat.group(5), lat.group(6)) if lat else 0, 0, user + sys_)
PY
        timed "$RATTLE" load "$URL" --http2 -c "$CONNS" --streams "$m" --threads 1 -d "${DUR}s" --json --no-progress
        python3 - "$WORK/out" "$(tail -n 1 "$WORK/cpu")" "$m" >>"$RESULTS" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1])); user, sys_ = map(float, sys.argv[2].split())
l = r["latency_ms"]
print("rattle", sys.argv[3], r["requests_per_sec"], l["p50"], l["p99"], user + sys_)
PY
    done
done
python3 - "$RESULTS" "$CONNS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
conns = int(sys.argv[2])
print(f"## HTTP/2 (h2c), closed model, {conns} connections for h2load")
print("| streams/conn (h2load -m) | tool | req/s (median) | ratio to h2load | p50 ms (h2load: mean) | p99 ms (rattle only) | CPU s |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for m in ("1", "10"):
    med = {}
    for tool in ("h2load", "rattle"):
        rs = [r for r in rows if r[0] == tool and r[1] == m]
        if not rs:
            continue
        med[tool] = statistics.median(float(r[2]) for r in rs)
        ratio = med[tool] / med["h2load"] if med.get("h2load") else float("nan")
        print(f"| {m} | {tool} | {med[tool]:.0f} | {ratio:.2f} | {statistics.median(float(r[3]) for r in rs):.2f} | "
              f"{statistics.median(float(r[4]) for r in rs):.2f} | {statistics.median(float(r[5]) for r in rs):.1f} |")
PY
