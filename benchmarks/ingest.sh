#!/usr/bin/env bash
# Ingest benchmark: MQTT publish (QoS 1) over loopback to committed row, against two baselines
# measured in the same run on the same private PostgreSQL:
#   - raw write capacity: the same rows written by one direct client with COPY (the fastest way in);
#   - naive ingest: one INSERT statement per fix, autocommit (what many small projects do).
# Everything runs on 127.0.0.1: a private PostgreSQL started by pettracker, `pettracker serve`,
# and `firmware-sim load`. Prints a JSON line per scenario and, with --write, updates
# BENCHMARKS.md's generated section and benchmarks/results.json.
#
# Usage: benchmarks/ingest.sh [--quick] [--write]
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0; write=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --write) write=1 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

# Many collars with one message in flight each is what a fleet looks like (a collar reports every
# few seconds); the broker processes one publish per connection at a time (PUBACK waits for the
# commit), so the number of connections, not the in-flight window, sets the parallelism.
single_collars=1000; batch_collars=200
if [ $quick = 1 ]; then single_msgs=20; batch_msgs=20; naive_rows=5000; else single_msgs=300; batch_msgs=300; naive_rows=50000; fi

# Each collar is a socket in firmware-sim and one in pettracker.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p pettracker -p firmware-sim
bin=target/release
work=$(mktemp -d /tmp/pettracker-bench.XXXXXX)
chmod 755 "$work"
export PETTRACKER_DATABASE_DATA_DIR="$work/postgres"
export PETTRACKER_INGEST_SPOOL_DIR="$work/spool"
export PETTRACKER_LOG="${PETTRACKER_LOG:-warn}"
unset DATABASE_URL PETTRACKER_DATABASE_URL

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); mqtt_port=$(free_port)

server=""
cleanup() {
  [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  # Stop the private cluster pettracker left running only if it outlived the server.
  pgdata="$work/postgres/pgdata"
  if [ -f "$pgdata/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
    else /usr/lib/postgresql/*/bin/pg_ctl -D "$pgdata" -m fast stop >/dev/null 2>&1 || true; fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Serve first: it creates and migrates the private cluster and keeps it running, so each
# provisioning command below adopts it instead of starting its own.
$bin/pettracker serve --http-addr "127.0.0.1:$http_port" --mqtt-addr "127.0.0.1:$mqtt_port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done

# Two fleets, so the runs' device times (unique per tracker) cannot collide.
$bin/pettracker tracker provision single --count $single_collars --json >"$work/single.jsonl"
$bin/pettracker tracker provision batch --count $batch_collars --json >"$work/batch.jsonl"
pgdata="$work/postgres/pgdata"
pg_port=$(sed -n 4p "$pgdata/postmaster.pid")
export PGPASSWORD; PGPASSWORD=$(cat "$work/postgres/password")
psql_() { /usr/lib/postgresql/*/bin/psql -X -q -h 127.0.0.1 -p "$pg_port" -U pettracker -d pettracker -v ON_ERROR_STOP=1 "$@"; }
count() { psql_ -At -c "SELECT count(*) FROM positions"; }
now() { date +%s.%N; }

results=()
record() { results+=("$1"); echo "$1"; }

# --- pettracker: MQTT QoS 1 publish -> committed row ---------------------------------------------
mqtt_run() { # name messages fixes_per_message credentials collars
  local before after t0 t1 out
  before=$(count)
  t0=$(now)
  out=$($bin/firmware-sim load --broker "127.0.0.1:$mqtt_port" --credentials "$4" \
        --messages "$2" --fixes-per-message "$3" --qos 1 2>"$work/load.log")
  t1=$(now)
  after=$(count)
  python3 - "$1" "$out" "$before" "$after" "$t0" "$t1" "$5" "$2" "$3" <<'EOF'
import json, sys
name, out, before, after, t0, t1, collars, msgs, per = sys.argv[1:]
load = json.loads(out)
stored = int(after) - int(before)
sent = int(collars) * int(msgs) * int(per)
print(json.dumps({"name": name, "value": round(load["fixes_per_second"]), "unit": "fixes/s",
                  "fixes_sent": sent, "fixes_stored": stored, "failed_collars": load["failed_collars"],
                  "seconds": load["seconds"]}))
if stored != sent:
    sys.exit(f"{name}: {sent} fixes sent, {stored} stored")
EOF
}
record "$(mqtt_run ingest_single_fix_qos1 $single_msgs 1 "$work/single.jsonl" $single_collars)"
record "$(mqtt_run ingest_batch10_qos1 $batch_msgs 10 "$work/batch.jsonl" $batch_collars)"

# --- baselines, same database, same row shape ---------------------------------------------------
collars=100
rows=$(( single_collars * single_msgs ))
csv="$work/rows.csv"
python3 - "$rows" "$collars" >"$csv" <<'EOF'
import sys, datetime
rows, collars = int(sys.argv[1]), int(sys.argv[2])
base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
for i in range(rows):
    t = (base + datetime.timedelta(seconds=i // collars)).isoformat()
    print(f"copy-{i % collars},{t},{t},52.52,13.405,34,5,1.2,270,9,80,{i}")
EOF
cols="tracker_id, device_time, received_at, lat, lon, altitude, accuracy, speed, heading, satellites, battery, seq"
t0=$(now); psql_ -c "\\copy positions ($cols) FROM '$csv' WITH (FORMAT csv)"; t1=$(now)
record "$(python3 -c "import json; print(json.dumps({'name':'raw_copy_baseline','value':round($rows/($t1-$t0)),'unit':'rows/s','rows':$rows}))")"

naive="$work/naive.sql"
python3 - "$naive_rows" "$collars" >"$naive" <<'EOF'
import sys, datetime
rows, collars = int(sys.argv[1]), int(sys.argv[2])
base = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
for i in range(rows):
    t = (base + datetime.timedelta(seconds=i // collars)).isoformat()
    print(f"INSERT INTO positions (tracker_id, device_time, received_at, lat, lon, battery, seq) "
          f"VALUES ('copy-{i % collars}', '{t}', now(), 52.52, 13.405, 80, {i});")
EOF
t0=$(now); psql_ -f "$naive" >/dev/null; t1=$(now)
record "$(python3 -c "import json; print(json.dumps({'name':'naive_insert_baseline','value':round($naive_rows/($t1-$t0)),'unit':'rows/s','rows':$naive_rows}))")"

summary=$(printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
r = {x["name"]: x for x in map(json.loads, sys.stdin)}
copy, naive = r["raw_copy_baseline"]["value"], r["naive_insert_baseline"]["value"]
out = []
for name in ("ingest_single_fix_qos1", "ingest_batch10_qos1"):
    e = dict(r[name]); out.append(dict(e, baseline_name="raw_copy_baseline", baseline_value=copy, ratio=round(e["value"]/copy, 3)))
    out.append({"name": name + "_vs_naive", "value": e["value"], "unit": "fixes/s",
                "baseline_name": "naive_insert_baseline", "baseline_value": naive, "ratio": round(e["value"]/naive, 2)})
out += [r["raw_copy_baseline"], r["naive_insert_baseline"]]
print(json.dumps(out, indent=2))
')
echo "$summary"

if [ $write = 1 ]; then
  mkdir -p benchmarks
  echo "$summary" >benchmarks/results.json
  python3 - "$summary" "$*" <<'EOF'
import json, sys, subprocess, re, platform, os
rows = json.loads(sys.argv[1])
cores = os.cpu_count()
mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
pg = subprocess.run("ls /usr/lib/postgresql", shell=True, capture_output=True, text=True).stdout.split()
lines = ["<!-- generated by benchmarks/ingest.sh --write: do not edit by hand -->",
         f"Machine: {cores} cores, {mem} GiB, {platform.platform()}; {rustc}; PostgreSQL {' '.join(pg)} (private cluster, default settings).",
         f"Command: `benchmarks/ingest.sh {sys.argv[2]}`".replace(" `", " `").rstrip(),
         "", "| scenario | value | unit | baseline | baseline value | ratio |", "|---|---:|---|---|---:|---:|"]
for r in rows:
    lines.append(f"| {r['name']} | {r['value']} | {r['unit']} | {r.get('baseline_name','')} | {r.get('baseline_value','')} | {r.get('ratio','')} |")
block = "\n".join(lines)
text = open("BENCHMARKS.md").read()
text = re.sub(r"<!-- ingest:begin -->.*<!-- ingest:end -->", "<!-- ingest:begin -->\n" + block.replace("\\", "\\\\") + "\n<!-- ingest:end -->", text, flags=re.S)
open("BENCHMARKS.md", "w").write(text)
EOF
fi
