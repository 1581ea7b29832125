#!/usr/bin/env bash
# Scenario 3, connected collars: N collars (default 20,000; BENCH_COLLARS overrides) each with its
# own MQTT connection and credentials, each reporting one fix every 10 s, for 5 minutes.
# Reports: collars connected at once, refused/failed connections, fixes lost (acknowledged but not
# stored), and the server's resident memory per connection (steady RSS minus the RSS before any
# collar connected, divided by the collars), against the load generator's own memory per
# connection (rumqttc clients) as the baseline.
# Connections open evenly over the first 30 s (a fleet does not boot in one millisecond).
# Only 127.0.0.1 is used, so the collars share one address pair's ephemeral ports. Linux hands out
# even ports to connect() first and scans all of them before trying an odd one: with the default
# range (32768-60999, 14,116 even ports) every connection past the 14,116th made the load generator
# scan the whole even half in the kernel (perf: 58 % of its CPU in __inet_hash_connect), so
# connects timed out at 5 s and collars "failed" for a reason of the load generator's making. The
# range is widened to 1024-65535 for the run, when it is narrower and we may (root), and put back
# at exit. That still caps a run at about 64,000 collars; more would need more loopback addresses.
# Usage: benchmarks/collars.sh [--quick]; prints JSON lines (see lib.sh).
source "$(dirname "$0")/lib.sh"
bench_build
if [ $quick = 1 ]; then n=${BENCH_COLLARS:-1000}; duration=25; ramp=5; else n=${BENCH_COLLARS:-20000}; duration=${BENCH_DURATION:-330}; ramp=30; fi
interval=10

range=$(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr -s '\t ' ' ')
if [ -n "$range" ] && [ "$range" != "1024 65535" ] && sysctl -q -w net.ipv4.ip_local_port_range="1024 65535" 2>/dev/null; then
  log "ephemeral ports widened from $range to 1024-65535 for this run"
  bench_undo+=("sysctl -q -w net.ipv4.ip_local_port_range='$range'")
fi

# Every collar is three descriptors in the server (its socket and both ends of the loopback hop
# from the MQTT front door to rmqtt, docs/decisions/0002-mqtt-front-door.md) and one in the load
# generator, and a process may hold only as many as its hard open-file limit (`ulimit -Hn`;
# raising it needs CAP_SYS_RESOURCE). The server keeps 512 descriptors for everything else and
# caps mqtt.max_connections to fit, so a run asks for no more collars than the server can hold,
# and says so.
fd_limit=$(ulimit -Hn)
[ "$fd_limit" = unlimited ] && fd_limit=1048576
requested=$n
if [ "$n" -gt $(((fd_limit - 512) / 3)) ]; then
  n=$(((fd_limit - 512) / 3))
  log "the open-file limit is $fd_limit per process: running $n collars instead of $requested"
fi
[ "$n" -gt 0 ] || { log "an open-file limit of $fd_limit leaves no room for collars"; exit 1; }

start_server
sleep 2
rss_idle=$(rss_kib "$server")
log "provisioning $n collars"
provision fleet "$n" "$work/fleet.jsonl"
rate=$(python3 -c "print($n / $interval)")

log "$n collars, one fix each every ${interval}s, ${duration}s"
$bin/firmware-sim load --broker "127.0.0.1:$mqtt_port" --credentials "$work/fleet.jsonl" \
  --messages 100000000 --duration $duration --ramp $ramp --rate "$rate" --qos 1 --inflight 1 --tasks 8 \
  --progress-every 5 >"$work/load.json" 2>"$work/load.log" &
lg=$!
# Sample both processes' memory once a second; the steady figure is the median after the ramp.
: >"$work/rss.tsv"
t0=$(date +%s)
while kill -0 $lg 2>/dev/null; do
  printf '%s\t%s\t%s\n' $(( $(date +%s) - t0 )) "$(rss_kib "$server")" "$(rss_kib $lg 2>/dev/null || echo 0)" >>"$work/rss.tsv"
  sleep 1
done
wait $lg
sleep 1
stored=$(count_positions)
connected_max=$(grep -o '[0-9]* collars connected' "$work/load.log" | awk '{print $1}' | sort -n | tail -1)
# Why collars failed, by kind.
grep 'collar failed' "$work/load.log" | sed 's/.*err[^=]*=//; s/fleet-[0-9]*//g' | sort | uniq -c | sort -rn | head -5 >&2 || true
tail -2 "$work/load.log" >&2

python3 - "$(cat "$work/load.json")" "$stored" "$rss_idle" "$work/rss.tsv" "$n" "$ramp" "${connected_max:-0}" "$duration" "$requested" "$fd_limit" <<'EOF'
import json, sys, statistics
load, stored, rss_idle, path, n, ramp, connected, duration = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
requested, fd_limit = int(sys.argv[9]), int(sys.argv[10])
rows = [tuple(map(int, l.split())) for l in open(path) if l.strip()]
steady = [r for r in rows if ramp + 10 <= r[0] <= duration - 5] or rows
server = statistics.median(r[1] for r in steady)
gen = statistics.median(r[2] for r in steady)
peak = max(r[1] for r in rows)
per_conn = (server - rss_idle) / n
lost = load["fixes"] - stored
print(json.dumps({"name": "collars_connected", "value": connected, "unit": "collars",
    "collars": n, "collars_requested": requested, "open_file_limit": fd_limit, "failed_collars": load["failed_collars"], "seconds": round(load["seconds"]),
    "fixes_per_second": round(load["fixes_per_second"]), "puback_ms_p50": load["latency_ms_p50"], "puback_ms_p99": load["latency_ms_p99"]}))
print(json.dumps({"name": "collars_failed_connections", "value": load["failed_collars"], "unit": "collars"}))
print(json.dumps({"name": "collars_fixes_lost", "value": lost, "unit": "fixes",
    "fixes_acknowledged": load["fixes"], "fixes_stored": stored}))
print(json.dumps({"name": "collars_server_rss_per_connection", "value": round(per_conn, 1), "unit": "KiB",
    "baseline_name": "load_generator_rss_per_connection", "baseline_value": round(gen / n, 1),
    "ratio": round(per_conn / (gen / n), 3) if gen else None,
    "server_rss_idle_mib": round(rss_idle / 1024), "server_rss_steady_mib": round(server / 1024), "server_rss_peak_mib": round(peak / 1024)}))
if load["failed_collars"] or lost or connected != n:
    sys.exit(f"{load['failed_collars']} collars failed, {lost} fixes lost, {connected} of {n} connected")
EOF
