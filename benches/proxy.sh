#!/usr/bin/env bash
# Fault proxy benchmark: wrk against nginx directly, through `rattle proxy` (no toxics), and
# through haproxy in TCP mode, in the same run on the same machine; then a 100 ms latency
# toxic's p50/p99. Needs nginx, haproxy, wrk, curl (Debian: nginx-light haproxy wrk curl) and a
# release build (`cargo build --release`). Everything listens on 127.0.0.1; everything started
# is killed on exit, by pid.
#
#   benches/proxy.sh [SECONDS] [CONNECTIONS]
set -euo pipefail

DUR=${1:-10}
CONNS=${2:-32}
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
PIDS+=($!)

echo "[{\"name\":\"bench\",\"listen\":\"127.0.0.1:$RAT\",\"upstream\":\"127.0.0.1:$NGINX\"}]" >"$DIR/proxies.json"
"$RATTLE" proxy --api "127.0.0.1:$API" --config "$DIR/proxies.json" >/dev/null &
PIDS+=($!)

for port in $NGINX $HAP $RAT $API; do
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.05
  done
done

# wrk → "requests/s p50_ms p99_ms"
run_wrk() {
  local out
  out=$(wrk -t1 -c"$2" -d"$3"s --latency "http://127.0.0.1:$1/")
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    / 50%/ { p50=ms($2) }
    / 99%/ { p99=ms($2) }
    END { printf "%s %.3f %.3f\n", rps, p50, p99 }' <<<"$out"
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# throughput: wrk -t1 -c$CONNS -d${DUR}s; added latency: wrk -t1 -c1 -d5s"
declare -A RPS P50
for round in 1 2; do
  for t in direct:$NGINX rattle:$RAT haproxy:$HAP; do
    name=${t%%:*}; port=${t##*:}
    read -r rps _ _ <<<"$(run_wrk "$port" "$CONNS" "$DUR")"
    read -r _ p50 _ <<<"$(run_wrk "$port" 1 5)"
    echo "round $round $name: $rps req/s; c=1 p50 $p50 ms"
    RPS[$name]=$(awk -v a="${RPS[$name]:-0}" -v b="$rps" 'BEGIN{print a+b}')
    P50[$name]=$(awk -v a="${P50[$name]:-0}" -v b="$p50" 'BEGIN{print a+b}')
  done
done
awk -v d="${RPS[direct]}" -v r="${RPS[rattle]}" -v h="${RPS[haproxy]}" \
    -v pd="${P50[direct]}" -v pr="${P50[rattle]}" -v ph="${P50[haproxy]}" 'BEGIN {
  printf "ratio of direct throughput: rattle %.2fx, haproxy %.2fx\n", r/d, h/d
  printf "added p50 latency at c=1: rattle %.3f ms, haproxy %.3f ms\n", (pr-pd)/2, (ph-pd)/2
}'

curl -fsS -X POST "http://127.0.0.1:$API/proxies/bench/toxics" \
  -d '{"type":"latency","stream":"downstream","attributes":{"latency":100}}' >/dev/null
read -r rps p50 p99 <<<"$(run_wrk "$RAT" 4 "$DUR")"
echo "latency toxic 100 ms (c=4): p50 $p50 ms, p99 $p99 ms ($rps req/s)"
