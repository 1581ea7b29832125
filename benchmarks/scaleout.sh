#!/usr/bin/env bash
# Scale-out ingest (issue 16): the sustained stored-fix rate of single-fix QoS 1 telemetry from
# the same load (collars x a few messages in flight each), in one run on one private PostgreSQL,
#   1. embedded broker: one `pettracker serve` (role all), the baseline;
#   2. Mosquitto 2 + one `pettracker serve --role ingest` taking the collars' messages through
#      the shared subscriptions `$share/<group>/trackers/+/...`;
#   3. Mosquitto 2 + two such ingest instances (own client ids, one group).
#
# Behind an external broker the collar's PUBACK comes from Mosquitto, before anything is stored,
# so PUBACKs count nothing here. The load generator runs with --await-app-ack: a message counts
# once pettracker's app-level ack `{"seq":N}` on `trackers/{id}/ack` (published after commit)
# covers it, and its in-flight window holds messages not yet app-acked. The same signal in all
# three setups (the embedded broker sends the app-level ack too), so the latency is comparable:
# publish -> commit -> ack delivered back to the collar.
#
# The rate reported is the one PostgreSQL saw: rows added to `positions` per second between two
# counts inside the run (after connecting and ramp-up, before the end), not the load generator's
# average over its whole run (which includes connecting and the final drain). CPU per stored fix
# of each process is taken over the same window. After each run every fix the load generator saw
# acknowledged must be in `positions`, and nothing more (each (tracker, seq) once): the script
# fails otherwise.
#
# Mosquitto runs with the shipped broker-config/mosquitto/mosquitto.conf and acl (password file,
# ACL patterns on the username, 100 messages in flight per client, TCP_NODELAY), on a free
# 127.0.0.1 port, persistence off (Mosquitto writes its store only at autosave and exit, so this
# changes nothing per message). BENCH_MOSQUITTO_INFLIGHT=N sets another in-flight window (0:
# Mosquitto's default of 20); BENCH_MOSQUITTO_NODELAY=0 turns Nagle's algorithm back on.
#
#   4. Mosquitto + one ingest instance + one `--role api` instance: the live relay's cost. The
#      ingest instance publishes every validated event on `pettracker/v1/live/{tracker}` in
#      runs 2-4 alike; here an API instance also subscribes, so Mosquitto delivers each event
#      once more and the API instance decodes it onto its live bus (no WebSocket is open: the
#      cost of the feed itself is benchmarks/live.sh's). Compared with run 2.
#
# The runs share one database, in that order, so the later ones write into a larger table
# (up to about two million rows more at 60 s each: small next to the differences measured here).
# On a 2-core machine the ingest instances, Mosquitto, PostgreSQL and the load generator all
# share the same two cores: a second instance adds no CPU, only another process to feed.
#
# Usage: benchmarks/scaleout.sh [--quick]; prints JSON lines (see lib.sh).
#   BENCH_DURATION (seconds per run; default 60, quick 10), BENCH_SCALEOUT_COLLARS (default 800),
#   BENCH_MOSQUITTO_INFLIGHT (default 100), BENCH_MOSQUITTO_NODELAY (default 1),
#   BENCH_SCALEOUT_KEEP (a directory to keep the logs in).
source "$(dirname "$0")/lib.sh"
bench_build
# BENCH_SCALEOUT_KEEP=DIR keeps the logs (the work dir is removed on exit).
keep_files() {
  [ -n "${BENCH_SCALEOUT_KEEP:-}" ] || return 0
  mkdir -p "$BENCH_SCALEOUT_KEEP"
  cp "$work"/*.log "$work"/postgres/*.log "$work"/mosquitto/mosquitto.log "$work"/mosquitto/mosquitto.conf "$BENCH_SCALEOUT_KEEP"/ 2>/dev/null || true
}
trap 'keep_files; bench_cleanup' EXIT
mosquitto=/usr/sbin/mosquitto
if [ ! -x $mosquitto ] || ! command -v mosquitto_passwd >/dev/null; then
  echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1
fi

collars=${BENCH_SCALEOUT_COLLARS:-800}; inflight=4
if [ "$quick" = 1 ]; then duration=10; collars=${BENCH_SCALEOUT_COLLARS:-200}; else duration=60; fi
duration=${BENCH_DURATION:-$duration}
mq_inflight=${BENCH_MOSQUITTO_INFLIGHT:-100}
mq_nodelay=${BENCH_MOSQUITTO_NODELAY:-1}
# The steady window: from `warm` seconds after the start (every collar connected, pipelines
# full) to 1 s before the load generator stops sending.
warm=$(( duration / 6 > 3 ? duration / 6 : 3 ))
[ "$duration" -gt $(( warm + 3 )) ] || { echo "BENCH_DURATION must be more than $(( warm + 3 ))" >&2; exit 2; }

# shellcheck disable=SC2119 # no extra serve flags: the defaults, as ingest.sh
start_server
log "server pid $server, mqtt $mqtt_port, postgres $pg_port"
for setup in emb one two relay; do provision "$setup" "$collars" "$work/$setup.jsonl"; done

# cpu_snapshot "PETTRACKER_PIDS" MOSQUITTO_PID LOAD_PID -> CPU seconds so far (user + system) of
# pettracker (summed), Mosquitto, PostgreSQL (the postmaster and all its children) and the load
# generator; a missing pid counts 0. One process for all: the window must not wait for
# a python per PostgreSQL backend.
cpu_snapshot() {
  python3 - "$1" "$2" "$3" "$(head -1 "$pgdata/postmaster.pid")" <<'EOF'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / hz  # ppid, utime + stime
def cpu(pids):
    return sum((stat(p) or (0, 0))[1] for p in pids if p)
postmaster = int(sys.argv[4])
pg = [postmaster] + [int(p) for p in os.listdir("/proc") if p.isdigit()
                     and (stat(p) or (0, 0))[0] == postmaster]
print(cpu(sys.argv[1].split()), cpu([sys.argv[2]]), cpu(pg), cpu([sys.argv[3]]))
EOF
}
# sleep_until T0 SECONDS: until SECONDS after the time T0 (from `now`).
sleep_until() { sleep "$(python3 -c "import time; print(max(0.0, $1 + $2 - time.time()))")"; }
telemetry_received() { # http port -> telemetry messages this pettracker took
  curl -fs "http://127.0.0.1:$1/metrics" \
    | awk '/^pettracker_messages_received_total\{topic="telemetry"\}/ {print $2; found=1} END {if (!found) print 0}'
}

# run NAME BROKER_PORT PREFIX MOSQUITTO_PID PETTRACKER_PIDS... -> one JSON line
# (PREFIX: the collars provisioned as PREFIX-1...; MOSQUITTO_PID empty without Mosquitto)
run() {
  local name=$1 port=$2 prefix=$3 mq=$4; shift 4
  local creds="$work/$prefix.jsonl"
  local pids="$*" before after lg start t_a n_a t_b n_b cpu_a cpu_b
  before=$(count_positions)
  start=$(now)
  "$bin"/firmware-sim load --broker "127.0.0.1:$port" --credentials "$creds" --messages 100000000 \
    --duration "$duration" --ramp 1 --fixes-per-message 1 --qos 1 --inflight $inflight --await-app-ack \
    >"$work/load.json" 2>"$work/load.log" &
  lg=$!
  sleep_until "$start" "$warm"
  # Count first, then CPU, at the start; CPU first, then count, at the end: neither count's own
  # scan of `positions` falls into the CPU window. The end is 1 s before the load generator
  # stops sending, so the window holds no drain.
  n_a=$(count_positions); t_a=$(now); cpu_a=$(cpu_snapshot "$pids" "$mq" $lg)
  sleep_until "$start" $(( duration - 1 ))
  cpu_b=$(cpu_snapshot "$pids" "$mq" $lg); t_b=$(now); n_b=$(count_positions)
  wait $lg || { tail -20 "$work/load.log" >&2; return 1; }
  after=$(count_positions)
  local dups
  # (tracker, seq) stored more than once: none may be (device times are unique per seq, so the
  # unique key on tracker and device time would not catch a fix stored twice under two times).
  dups=$(psql_ -At -c "SELECT count(*) FROM (SELECT 1 FROM positions WHERE tracker_id LIKE '$prefix-%'
    GROUP BY tracker_id, seq HAVING count(*) > 1) d")
  python3 - "$name" "$(cat "$work/load.json")" "$before" "$after" "$n_a" "$n_b" "$t_a" "$t_b" \
    "$cpu_a" "$cpu_b" "$mq" "$dups" "$#" <<'EOF'
import json, sys
name, out = sys.argv[1], json.loads(sys.argv[2])
before, after, n_a, n_b, t_a, t_b = map(float, sys.argv[3:9])
(s_a, m_a, p_a, l_a), (s_b, m_b, p_b, l_b) = (map(float, a.split()) for a in sys.argv[9:11])
has_mosquitto, dups, instances = sys.argv[11] != "", int(sys.argv[12]), int(sys.argv[13])
window = t_b - t_a
in_window = n_b - n_a
stored = int(after - before)
fixes = out["fixes"]
us = lambda cpu: round(cpu / max(in_window, 1) * 1e6, 1)
cpu = {"pettracker": us(s_b - s_a)}
if has_mosquitto:
    cpu["mosquitto"] = us(m_b - m_a)
cpu.update(postgres=us(p_b - p_a), load_generator=us(l_b - l_a))
busy = (s_b - s_a) + (m_b - m_a) + (p_b - p_a) + (l_b - l_a)
print(json.dumps({"name": name, "value": round(in_window / window), "unit": "fixes/s",
    "ingest_instances": instances, "collars": out["collars"], "window_s": round(window, 1),
    "acked_fixes_per_second_whole_run": round(out["fixes_per_second"]),
    "fixes_acknowledged": fixes, "fixes_stored": stored, "duplicates": dups,
    "failed_collars": out["failed_collars"], "acknowledged_by": out["acknowledged_by"],
    "app_ack_ms_p50": out["latency_ms_p50"], "app_ack_ms_p99": out["latency_ms_p99"],
    "cpu_us_per_fix": cpu, "cpu_utilisation_of_2_cores": round(busy / window / 2, 2)}))
if stored != fixes or dups or out["failed_collars"]:
    sys.exit(f"{name}: {fixes} fixes acknowledged, {stored} stored, {dups} stored twice, "
             f"{out['failed_collars']} collars failed")
EOF
}

# --- 1. the embedded broker ------------------------------------------------------------------
log "embedded broker, one pettracker (role all), ${duration}s"
emb=$(run scaleout_embedded_broker "$mqtt_port" emb "" "$server")
# Free its CPU for the next runs. Stopping serve also stops the private cluster it started;
# start that again by itself, on the same port, for the ingest instances.
kill -INT "$server"; wait "$server" || true; server=""
[ -f "$pgdata/postmaster.pid" ] || pg_start_cluster
db_url="postgres://pettracker:$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PGPASSWORD")@127.0.0.1:$pg_port/pettracker"

# --- Mosquitto, as shipped (see the header for the differences) ------------------------------
mqdir="$work/mosquitto"; mkdir -p "$mqdir"
mq_port=$(free_port)
sed -e "s|^listener 1883$|listener $mq_port 127.0.0.1|" \
    -e "s|/mosquitto/config/|$mqdir/|" \
    -e 's|^persistence true$|persistence false|' -e '/^persistence_location/d' \
    broker-config/mosquitto/mosquitto.conf >"$mqdir/mosquitto.conf"
grep -q "^listener $mq_port " "$mqdir/mosquitto.conf" || { echo "broker-config/mosquitto/mosquitto.conf changed: no 'listener 1883' line" >&2; exit 1; }
if [ "$mq_inflight" = 0 ]; then sed -i '/^max_inflight_messages/d' "$mqdir/mosquitto.conf"
else sed -i "s|^max_inflight_messages .*|max_inflight_messages $mq_inflight|" "$mqdir/mosquitto.conf"; fi
[ "$mq_nodelay" = 1 ] || sed -i '/^set_tcp_nodelay/d' "$mqdir/mosquitto.conf"
printf 'log_dest file %s/mosquitto.log\nlog_type error\nlog_type warning\n' "$mqdir" >>"$mqdir/mosquitto.conf"
cp broker-config/mosquitto/acl "$mqdir/acl"
svc_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
# Password file: the collars of runs 2 and 3 and pettracker's service user, hashed in one go.
{ printf 'pettracker.server:%s\n' "$svc_password"
  cat "$work/one.jsonl" "$work/two.jsonl" "$work/relay.jsonl" | python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        c = json.loads(line); print(c["tracker_id"] + ":" + c["secret"])'
} >"$mqdir/passwd"
mosquitto_passwd -U "$mqdir/passwd"
# Run as root, Mosquitto drops to its own user before reading the password file and ACL.
chmod 755 "$mqdir"; chmod 644 "$mqdir"/*
touch "$mqdir/mosquitto.log"; chmod 666 "$mqdir/mosquitto.log"
$mosquitto -c "$mqdir/mosquitto.conf" >>"$mqdir/mosquitto.log" 2>&1 &
mq_pid=$!; bench_pids+=("$mq_pid")
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$mq_port") 2>/dev/null && break
  kill -0 "$mq_pid" 2>/dev/null || { cat "$mqdir/mosquitto.log" >&2; exit 1; }
  sleep 0.1
done
log "mosquitto pid $mq_pid on port $mq_port, max_inflight_messages $mq_inflight (0: Mosquitto's default), set_tcp_nodelay $mq_nodelay"

# start_ingest NAME [ROLE] -> sets ingest_pid, ingest_http (the instance's HTTP port)
start_ingest() {
  local name=$1 role=${2:-ingest}
  ingest_http=$(free_port)
  env -u PETTRACKER_DATABASE_DATA_DIR \
    DATABASE_URL="$db_url" \
    PETTRACKER_EXTERNAL_BROKER_CLIENT_ID="bench-ingest-$name" \
    PETTRACKER_EXTERNAL_BROKER_GROUP=bench \
    PETTRACKER_EXTERNAL_BROKER_USERNAME=pettracker.server \
    PETTRACKER_EXTERNAL_BROKER_PASSWORD="$svc_password" \
    PETTRACKER_INGEST_SPOOL_DIR="$work/spool-$name" \
    "$bin"/pettracker serve --role "$role" --http-addr "127.0.0.1:$ingest_http" \
      --external-broker "mqtt://127.0.0.1:$mq_port" >"$work/ingest-$name.log" 2>&1 &
  ingest_pid=$!; bench_pids+=("$ingest_pid")
  # Ready = database reached and the shared subscriptions granted.
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$ingest_http/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$ingest_pid" 2>/dev/null || break
    sleep 0.2
  done
  cat "$work/ingest-$name.log" "$mqdir/mosquitto.log" >&2; return 1
}

start_ingest a; a_pid=$ingest_pid; a_http=$ingest_http
# --- 2. Mosquitto + one ingest instance -------------------------------------------------------
log "mosquitto + one ingest instance, ${duration}s"
one=$(run scaleout_mosquitto_1_ingest "$mq_port" one "$mq_pid" "$a_pid")

# --- 4. Mosquitto + one ingest instance + one API instance (the live relay) -------------------
# Before run 3: once a second ingest instance has joined the group, its persistent session keeps
# taking its share of the messages after it stops (they wait there for it), and the first
# instance's cumulative acks would cover fixes held in that session.
start_ingest api api; api_pid=$ingest_pid; api_http=$ingest_http
bus_events() { curl -fs "http://127.0.0.1:$api_http/metrics" | awk '/^pettracker_live_events_published_total / {print int($2); f=1} END {if (!f) print 0}'; }
relay0=$(bus_events)
log "mosquitto + one ingest instance + one API instance on the live relay, ${duration}s"
relay=$(run scaleout_mosquitto_1_ingest_1_api "$mq_port" relay "$mq_pid" "$a_pid" "$api_pid")
relayed=$(( $(bus_events) - relay0 ))
kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true

start_ingest b; b_pid=$ingest_pid; b_http=$ingest_http
# --- 3. Mosquitto + two ingest instances ------------------------------------------------------
a0=$(telemetry_received "$a_http")
log "mosquitto + two ingest instances, ${duration}s"
two=$(run scaleout_mosquitto_2_ingest "$mq_port" two "$mq_pid" "$a_pid" "$b_pid")
# How Mosquitto shared run 3's messages between the two.
share_a=$(( $(telemetry_received "$a_http") - a0 )); share_b=$(telemetry_received "$b_http")

for p in "$a_pid" "$b_pid"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "$a_pid" "$b_pid"; do wait "$p" 2>/dev/null || true; done

python3 - "$emb" "$one" "$two" "$share_a" "$share_b" "$mq_inflight" "$mq_nodelay" "$relay" "$relayed" <<'EOF'
import json, sys
emb, one, two = (json.loads(a) for a in sys.argv[1:4])
share_a, share_b, mq_inflight, nodelay = (int(a) for a in sys.argv[4:8])
relay, relayed = json.loads(sys.argv[8]), int(sys.argv[9])
two["messages_per_instance"] = [share_a, share_b]
relay["events_on_the_api_instances_bus"] = relayed
# What the relay's delivery to one API instance costs per fix: the CPU of pettracker (ingest +
# API instance) and Mosquitto beyond run 2's, which published the same events to nobody.
cost = lambda e: e["cpu_us_per_fix"]["pettracker"] + e["cpu_us_per_fix"]["mosquitto"]
relay["relay_delivery_cpu_us_per_fix"] = round(cost(relay) - cost(one), 1)
print(json.dumps(emb))
for e in (one, two, relay):
    e["mosquitto_max_inflight_messages"] = mq_inflight or "default (20)"
    e["mosquitto_tcp_nodelay"] = bool(nodelay)
    print(json.dumps(dict(e, baseline_name=emb["name"], baseline_value=emb["value"],
                          ratio=round(e["value"] / max(emb["value"], 1), 3))))
EOF
