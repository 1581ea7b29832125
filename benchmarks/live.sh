#!/usr/bin/env bash
# Live latency (issue 8, scenario 4): from just before a collar's MQTT publish (QoS 1) to the
# WebSocket `position` message for that fix arriving at a subscribed owner, median and p99, idle
# and while a fleet of 1000 collars publishes at half of the maximum ingest rate
# (BENCH_HALF_RATE fixes/s, default 7000: half of ingest_single_fix_qos1 in results.json).
# Baseline, measured in the same run on the same messages: publish to PUBACK (the server acks
# after the batch commit), so machine noise shows in both. Numbers are reported, not asserted;
# a fix that never reaches the feed (5 s) or a failed background collar fails the run.
#
# Usage: benchmarks/live.sh [--quick]   (JSON lines on stdout, progress on stderr)
source "$(dirname "$0")/lib.sh"

half_rate=${BENCH_HALF_RATE:-7000}
fleet=1000
interval_ms=100
if [ $quick = 1 ]; then samples=50; load_secs=20; else samples=300; load_secs=""; fi

bench_build
start_server
log "server on http $http_port, mqtt $mqtt_port"
provision watched 1 "$work/watched.jsonl"
provision fleet $fleet "$work/fleet.jsonl"
token=$(owner_token live@example.com)
read -r tracker secret claim < <(python3 -c '
import json, sys
c = json.loads(open(sys.argv[1]).readline())
print(c["tracker_id"], c["secret"], c["claim_code"])' "$work/watched.jsonl")
curl -fs "$API/trackers/claim" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"tracker_id\":\"$tracker\",\"claim_code\":\"$claim\"}" >/dev/null

# live_latency OUT: N fixes from the watched collar, 100 ms apart; the report goes to OUT.
live_latency() {
  FIRMWARE_SIM_TOKEN=$token FIRMWARE_SIM_SECRET=$secret \
    $bin/firmware-sim live-latency --broker "127.0.0.1:$mqtt_port" --api "$API" \
    --tracker-id "$tracker" --samples $samples --interval-ms $interval_ms >"$1" 2>>"$work/latency.log"
}

log "idle: $samples fixes"
live_latency "$work/idle.json"

# Half load: sustained for as long as the sample takes (connecting 1000 collars, then the
# sample, then a margin), unless --quick fixes it.
if [ -z "$load_secs" ]; then load_secs=$(( samples * interval_ms / 1000 + 20 )); fi
log "half load: $fleet collars at $half_rate fixes/s for ${load_secs}s"
$bin/firmware-sim load --broker "127.0.0.1:$mqtt_port" --credentials "$work/fleet.jsonl" \
  --rate "$half_rate" --duration "$load_secs" --messages 100000000 --qos 1 --inflight 1 \
  --progress-every 1 >"$work/load.json" 2>"$work/load.log" &
load_pid=$!
bench_pids+=("$load_pid")
# Running means every collar connected and a second of sending since.
for _ in $(seq 1 300); do
  grep -q " $fleet collars connected" "$work/load.log" 2>/dev/null && break
  kill -0 "$load_pid" 2>/dev/null || { cat "$work/load.log" >&2; exit 1; }
  sleep 0.1
done
sleep 1
before=$(count_positions); t0=$(now)
live_latency "$work/half.json"
t1=$(now); after=$(count_positions)
still_running=0; kill -0 "$load_pid" 2>/dev/null && still_running=1
wait "$load_pid" || { log "background load failed"; cat "$work/load.log" >&2; exit 1; }

python3 - "$work/idle.json" "$work/half.json" "$work/load.json" "$before" "$after" "$t0" "$t1" \
  "$half_rate" "$still_running" >"$work/results.jsonl" <<'EOF'
import json, sys
idle, half, load = (json.load(open(p)) for p in sys.argv[1:4])
before, after, t0, t1, target, still = sys.argv[4:]
stored_rate = (int(after) - int(before)) / (float(t1) - float(t0))
for phase, r in (("idle", idle), ("half_load", half)):
    extra = {"samples": r["samples"], "received": r["received"], "lost": r["lost"],
             "interval_ms": r["interval_ms"], "p90_ms": r["live_ms"]["p90"],
             "max_ms": r["live_ms"]["max"]}
    if phase == "half_load":
        extra.update({"background_target_fixes_per_second": float(target),
                      "background_stored_fixes_per_second_during_sample": round(stored_rate),
                      "background_fixes_per_second": round(load["fixes_per_second"]),
                      "background_puback_ms_p99": load["latency_ms_p99"],
                      "background_failed_collars": load["failed_collars"],
                      "background_covered_sample": still == "1"})
    for p in ("p50", "p99"):
        value, base = r["live_ms"][p], r["puback_ms"][p]
        if value is None:
            print(f"live_latency_{phase}_{p}: no sample arrived", file=sys.stderr)
            continue
        row = {"baseline_name": f"puback_{phase}_{p}", "baseline_value": base,
               "ratio": round(value / base, 3) if base else None}
        row.update(extra)
        print(f"live_latency_{phase}_{p}\t{value}\tms\t{json.dumps(row)}")
EOF
while IFS=$'\t' read -r name value unit extra; do
  emit "$name" "$value" "$unit" "$extra"
done <"$work/results.jsonl"

failed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failed_collars"])' "$work/load.json")
lost=$(python3 -c 'import json,sys; print(sum(json.load(open(p))["lost"] for p in sys.argv[1:]))' "$work/idle.json" "$work/half.json")
[ "$still_running" = 1 ] || log "warning: the background load ended before the sample did"
if [ "$failed" != 0 ] || [ "$lost" != 0 ]; then
  log "FAILED: $lost fixes lost on the live feed, $failed background collars failed"
  exit 1
fi
