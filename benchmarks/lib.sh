# Shared by the benchmark scenarios (sourced, not run): a private PostgreSQL and `pettracker serve`
# on 127.0.0.1, free ports, psql, provisioning, process memory, and cleanup on exit.
#
# A scenario prints one JSON object per line on stdout for each result
# ({"name", "value", "unit"[, "baseline_name", "baseline_value", "ratio"], ...extra fields});
# everything else goes to stderr. `benchmarks/run` collects them.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# BENCH_PROFILE=debug runs the debug binaries `cargo test` already built: CI's smoke run checks
# that every scenario works, and its numbers mean nothing either way.
profile=${BENCH_PROFILE:-release}
bin=target/$profile
pg_bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Builds the binaries once per `benchmarks/run` (it sets BENCH_BUILT=1).
bench_build() {
  if [ "${BENCH_BUILT:-0}" != 1 ]; then
    log "building $profile binaries"
    if [ "$profile" = release ]; then cargo build --release -q -p pettracker -p firmware-sim >&2
    else cargo build -q -p pettracker -p firmware-sim >&2; fi
  fi
}

# Each collar is a socket in the load generator and one in the server.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/pettracker-bench.XXXXXX)
chmod 755 "$work"
export PETTRACKER_DATABASE_DATA_DIR="$work/postgres"
export PETTRACKER_INGEST_SPOOL_DIR="$work/spool"
export PETTRACKER_LOG="${PETTRACKER_LOG:-warn}"
unset DATABASE_URL PETTRACKER_DATABASE_URL
pgdata="$work/postgres/pgdata"

server=""
bench_pids=()
# Commands that undo a scenario's changes to the machine (run at exit, whatever happens).
bench_undo=()
bench_cleanup() {
  local status=$?
  # A failed scenario leaves what the server and PostgreSQL said, and the machine's state: the
  # scenario's own log ends with them (CI prints its tail).
  if [ "$status" != 0 ]; then
    for f in "$work/server.log" "$work/postgres/postgres.log" "$work/postgres/restart.log"; do
      [ -s "$f" ] && { echo "--- last lines of $f"; tail -15 "$f"; }
    done
    echo "--- disk and memory"; df -h "$work" /tmp /dev/shm 2>/dev/null | uniq; free -m | head -2
    echo "--- kernel (OOM kills)"; dmesg 2>/dev/null | tail -5
  fi >&2
  for u in "${bench_undo[@]}"; do eval "$u" || true; done
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$server" ]; then kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
  # Stop the private cluster only if it outlived the server.
  [ -f "$pgdata/postmaster.pid" ] && pg_stop_cluster >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

as_pg_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_stop_cluster() { as_pg_owner "$pg_bindir/pg_ctl" -D "$pgdata" -m fast -w stop >&2; }
# Same options pettracker starts its private cluster with (private-postgres/src/lib.rs).
pg_start_cluster() {
  as_pg_owner "$pg_bindir/pg_ctl" -D "$pgdata" -w -t 60 -l "$work/postgres/restart.log" \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300" start >&2
}

# start_server [extra `pettracker serve` flags]: sets server, http_port, mqtt_port, pg_port, API.
# Serve first: it creates and migrates the private cluster and keeps it running, so the CLI
# commands below adopt it instead of starting their own.
start_server() {
  http_port=$(free_port); mqtt_port=$(free_port)
  $bin/pettracker serve --http-addr "127.0.0.1:$http_port" --mqtt-addr "127.0.0.1:$mqtt_port" "$@" \
    >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; return 1; }
    sleep 0.2
  done
  pg_port=$(sed -n 4p "$pgdata/postmaster.pid")
  PGPASSWORD=$(cat "$work/postgres/password"); export PGPASSWORD
  API="http://127.0.0.1:$http_port/api/v1"
}

psql_() { "$pg_bindir/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U pettracker -d pettracker -v ON_ERROR_STOP=1 "$@"; }
count_positions() { psql_ -At -c "SELECT count(*) FROM positions"; }

# provision PREFIX COUNT FILE: collar credentials as JSON lines.
provision() { $bin/pettracker tracker provision "$1" --count "$2" --json >"$3"; }

# Resident memory of a process in KiB (VmRSS).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# An owner account through the API; prints an access token.
owner_token() { # email
  local body="{\"email\":\"$1\",\"password\":\"correct horse battery\"}"
  curl -fs "$API/auth/register" -H 'content-type: application/json' -d "$body" >/dev/null || true
  curl -fs "$API/auth/login" -H 'content-type: application/json' -d "$body" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# emit NAME VALUE UNIT [json-object-of-extra-fields]
emit() {
  python3 -c '
import json, sys
name, value, unit = sys.argv[1:4]
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else {}
v = float(value)
r = {"name": name, "value": round(v, 3) if v < 100 else round(v), "unit": unit}
r.update(extra)
print(json.dumps(r))' "$@"
}

# Scenario options shared by all: --quick (CI smoke, a couple of minutes for the whole suite).
quick=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
