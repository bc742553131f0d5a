# benches/lib.sh: shared by the benchmark scripts (sourced, not run). Starts one nginx worker on
# 127.0.0.1 (a free port, pinned to one core), tracks every process it starts by pid, and stops
# them all on exit, however the script ends.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/rattle-bench.XXXXXX)
PIDS=()
NGINX_PID=

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        # A stopped process (the stall test) must be continued to die cleanly.
        kill -CONT "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }

# Installs what is missing: nginx, wrk and GNU time from Debian; oha with cargo (optional).
need_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    [ -x /usr/bin/time ] || missing+=(time)
    command -v python3 >/dev/null || missing+=(python3)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    export PATH="$PATH:$HOME/.cargo/bin"
    # Scripts that do not compare with oha set SKIP_OHA=1.
    if [ "${SKIP_OHA:-0}" != 1 ] && ! command -v oha >/dev/null; then
        say "installing oha (cargo install oha --locked); this takes a few minutes"
        cargo install oha --locked >"$WORK/oha-install.log" 2>&1 ||
            say "oha could not be installed (see above); continuing without it"
    fi
}

build_rattle() {
    # RATTLE=/path/to/rattle uses that binary instead (a quick look with a debug build).
    if [ -n "${RATTLE:-}" ]; then
        say "using $RATTLE"
        return 0
    fi
    say "building rattle (release)"
    (cd "$ROOT" && cargo build --release --quiet)
    RATTLE="$ROOT/target/release/rattle"
}

# Cores: nginx on SERVER_CPU, every client on CLIENT_CPU.
pick_cores() {
    local n
    n=$(nproc --all)
    SERVER_CPU=0
    CLIENT_CPU=$((n > 1 ? 1 : 0))
    [ "$n" -gt 1 ] || say "warning: one CPU only, server and client share it"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One nginx process (master_process off: the pid we hold is the one serving, so SIGSTOP stalls
# it), keep-alive without a per-connection request limit, answering every request with the same
# 13 bytes: from memory (`return 200`, the default) or, with NGINX_SERVE=file, from a static file.
# Serving the file costs nginx an open/fstat/close per request (about 14 µs of CPU per request
# on a 2-core VM), which makes nginx the bottleneck at about 70,000 requests/s and hides every
# difference between clients; from memory nginx outruns the clients, which is what a
# load-generator benchmark has to measure.
NGINX_SERVE=${NGINX_SERVE:-memory}
# Extra `listen` parameters: NGINX_LISTEN_OPTS=http2 serves h2c (HTTP/2 without TLS).
NGINX_LISTEN_OPTS=${NGINX_LISTEN_OPTS:-}
start_nginx() {
    local location
    case "$NGINX_SERVE" in
        memory) location='location / { default_type text/html; return 200 "Hello, world\n"; }' ;;
        file) location='location / { index index.html; }' ;;
        *) say "NGINX_SERVE must be memory or file, not '$NGINX_SERVE'"; return 2 ;;
    esac
    PORT=$(free_port)
    mkdir -p "$WORK/www" "$WORK/tmp"
    printf 'Hello, world\n' >"$WORK/www/index.html"
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$PORT${NGINX_LISTEN_OPTS:+ $NGINX_LISTEN_OPTS};
        root $WORK/www;
        $location
    }
}
CONF
    taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    local i
    for i in $(seq 1 50); do
        if curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1 ||
            curl -fsS --http2-prior-knowledge "http://127.0.0.1:$PORT/" >/dev/null 2>&1 ||
            python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null; then
            URL="http://127.0.0.1:$PORT/"
            say "nginx pid $NGINX_PID on $URL (cpu $SERVER_CPU, serving from $NGINX_SERVE)"
            return 0
        fi
        sleep 0.1
    done
    say "nginx did not start:"; cat "$WORK/nginx-error.log" >&2 || true
    return 1
}
