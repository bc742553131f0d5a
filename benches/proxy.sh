#!/usr/bin/env bash
# Fault proxy benchmark: wrk against nginx directly, through `rattle proxy` (no toxics), and
# through haproxy in TCP mode, in the same run on the same machine; then a 100 ms latency
# toxic's p50/p99. Needs nginx, haproxy, wrk, curl (Debian: nginx-light haproxy wrk curl) and a
# release build (`cargo build --release`). Everything listens on 127.0.0.1; everything started
# is killed on exit, by pid.
#
# Nothing is pinned: wrk (-t1), nginx (one worker) and the proxy share the two cores, as they
# would on one host; both proxies run two threads (haproxy's nbthread defaults to the CPUs, rattle's
# runtime to one worker per CPU). Besides throughput, each proxy's own CPU time per request is
# read from /proc (utime + stime), the figure that does not depend on how the scheduler shares
# the cores. ROUNDS rounds (default 3), tools interleaved; medians.
#
#   benches/proxy.sh [SECONDS] [CONNECTIONS]     (env: ROUNDS=3, RATTLE=target/release/rattle)
set -euo pipefail

DUR=${1:-10}
CONNS=${2:-32}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATTLE=${RATTLE:-$ROOT/target/release/rattle}
for bin in nginx haproxy wrk curl "$RATTLE"; do
  command -v "$bin" >/dev/null || { echo "missing: $bin" >&2; exit 2; }
done

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NGINX=$(free_port); RAT=$(free_port); HAP=$(free_port); API=$(free_port)
BASE=$(free_port); BASE_API=$(free_port)
# Another rattle binary (e.g. a build of an earlier commit) to measure beside this one.
RATTLE_BASE=${RATTLE_BASE:-}

cat >"$DIR/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log stderr error;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX;
    location / { return 200 "ok\n"; }
  }
}
CONF
nginx -c "$DIR/nginx.conf" -p "$DIR" &
PIDS+=($!)

cat >"$DIR/haproxy.cfg" <<CONF
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  server s1 127.0.0.1:$NGINX
CONF
haproxy -f "$DIR/haproxy.cfg" -db &
HAP_PID=$!
PIDS+=($HAP_PID)

echo "[{\"name\":\"bench\",\"listen\":\"127.0.0.1:$RAT\",\"upstream\":\"127.0.0.1:$NGINX\"}]" >"$DIR/proxies.json"
"$RATTLE" proxy --api "127.0.0.1:$API" --config "$DIR/proxies.json" >/dev/null &
RAT_PID=$!
PIDS+=($RAT_PID)
TARGETS="direct:$NGINX:0 rattle:$RAT:$RAT_PID haproxy:$HAP:$HAP_PID"
if [ -n "$RATTLE_BASE" ]; then
  echo "[{\"name\":\"bench\",\"listen\":\"127.0.0.1:$BASE\",\"upstream\":\"127.0.0.1:$NGINX\"}]" >"$DIR/base.json"
  "$RATTLE_BASE" proxy --api "127.0.0.1:$BASE_API" --config "$DIR/base.json" >/dev/null &
  PIDS+=($!)
  TARGETS="$TARGETS rattle-base:$BASE:$!"
fi

for port in $NGINX $HAP $RAT $API ${RATTLE_BASE:+$BASE}; do
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.05
  done
done

# wrk → "requests/s p50_ms p99_ms requests"
run_wrk() {
  local out
  out=$(wrk -t1 -c"$2" -d"$3"s --latency "http://127.0.0.1:$1/")
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    / 50%/ { p50=ms($2) }
    / 99%/ { p99=ms($2) }
    /requests in/ { n=$1 }
    END { printf "%s %.3f %.3f %d\n", rps, p50, p99, n }' <<<"$out"
}

# CPU time (user + system) of a process so far, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "# $(date -u +%FT%TZ) on $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# throughput: wrk -t1 -c$CONNS -d${DUR}s; added latency: wrk -t1 -c1 -d5s; $ROUNDS rounds, medians"
echo "# $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3), nothing pinned"
RES=$DIR/results
: >"$RES"
HZ=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    IFS=: read -r name port pid <<<"$t"
    c0=0; [ "$pid" = 0 ] || c0=$(ticks "$pid")
    read -r rps _ _ n <<<"$(run_wrk "$port" "$CONNS" "$DUR")"
    c1=0; [ "$pid" = 0 ] || c1=$(ticks "$pid")
    read -r _ p50 _ _ <<<"$(run_wrk "$port" 1 5)"
    cpu=$(awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz/n*1e6}')
    echo "round $round $name: $rps req/s; proxy CPU $cpu us/request; c=1 p50 $p50 ms"
    echo "$name $rps $p50 $cpu" >>"$RES"
  done
done
python3 - "$RES" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(cpu)))
med = lambda n, i: statistics.median(r[i] for r in rows[n])
d, dp = med("direct", 0), med("direct", 1)
print()
print("| path | requests/s | vs direct | p50 at c=1, ms | added p50, ms | proxy CPU µs/request |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
print(f"| direct | {d:,.0f} | 1.00 | {dp:.3f} | | |")
for n in ("rattle-base", "rattle", "haproxy"):
    if n not in rows:
        continue
    print(f"| {n if n != 'rattle-base' else 'rattle (RATTLE_BASE)'} | {med(n, 0):,.0f} | {med(n, 0) / d:.2f} | {med(n, 1):.3f} | {med(n, 1) - dp:.3f} | {med(n, 2):.2f} |")
PY

curl -fsS -X POST "http://127.0.0.1:$API/proxies/bench/toxics" \
  -d '{"type":"latency","stream":"downstream","attributes":{"latency":100}}' >/dev/null
read -r rps p50 p99 _ <<<"$(run_wrk "$RAT" 4 "$DUR")"
echo "latency toxic 100 ms (c=4): p50 $p50 ms, p99 $p99 ms ($rps req/s)"
