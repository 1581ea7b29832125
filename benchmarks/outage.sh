#!/usr/bin/env bash
# Scenario 6 of issue 8, database outage: a fleet publishes at half load (QoS 1, one message in
# flight per collar) while the private PostgreSQL is stopped for a while and started again.
# Measures the server's memory during the outage against its memory just before it, the time
# to drain the backlog (from the restart until the spool is empty; also until every acknowledged
# fix is in `positions`, which can only be checked after the load ended), the
# fixes lost (acknowledged but not stored; expected 0) and the load rate achieved.
#
# How memory is bounded (there is no single configured byte limit, see gateway/src/ingest):
# every stage has a bounded channel (ingest.queue_capacity messages before decoding, 2 ×
# ingest.batch_size decoded messages and 2 batches per writer shard), a QoS 1 publish holds its
# connection until it is committed or spooled, and while the database is away batches go to an
# fsynced file in ingest.spool_dir, not to memory. So the server holds at most about
#   min(collars × in-flight, queue_capacity + writers × (2 + 2 + 1) × batch_size)
# messages at any time, outage or not; this run has 1000 collars × 1 in flight, so the bound on
# queued messages is 1000 (well under the 10,000 + 2 × 5 × 1000 of the default capacities).
# Memory should therefore stay flat while the spool grows on disk.
#
# Prints one JSON line per result on stdout (see lib.sh); logs go to stderr. Numbers are
# reported, never asserted (except that the scenario itself ran: the server stayed up).
#
# Usage: benchmarks/outage.sh [--quick]
#   BENCH_HALF_RATE (default 7000 fixes/s), BENCH_OUTAGE_COLLARS (default 1000),
#   BENCH_DRAIN_LIMIT (default 600 s), BENCH_OUTAGE_KEEP (a directory for samples and logs).
source "$(dirname "$0")/lib.sh"

rate=${BENCH_HALF_RATE:-7000}
collars=${BENCH_OUTAGE_COLLARS:-1000}
if [ "$quick" = 1 ]; then
  duration=30; outage_at=8; outage_len=10
else
  duration=150; outage_at=30; outage_len=60
fi
# Longest wait for the backlog after the load ended, before giving up and reporting what is there.
drain_limit=${BENCH_DRAIN_LIMIT:-600}

bench_build
start_server
log "server pid $server, mqtt $mqtt_port, postgres $pg_port"
provision outage "$collars" "$work/fleet.jsonl"
spool="$PETTRACKER_INGEST_SPOOL_DIR"
# BENCH_OUTAGE_KEEP=DIR keeps the per-second samples and the logs (the work dir is removed on exit).
keep_files() {
  [ -n "${BENCH_OUTAGE_KEEP:-}" ] || return 0
  mkdir -p "$BENCH_OUTAGE_KEEP"
  cp "$work"/samples.tsv "$work"/load.json "$work"/load.log "$work"/server.log "$BENCH_OUTAGE_KEEP"/ 2>/dev/null || true
}
trap 'keep_files; bench_cleanup' EXIT

spool_files() { find "$spool" -maxdepth 1 -name 'batch-*.json' 2>/dev/null | wc -l; }
spool_kib() { du -sk "$spool" 2>/dev/null | cut -f1; }
# Empty while the database is down (the count cannot be taken then).
count_or_empty() { timeout 5 "$pg_bindir/psql" -X -q -At -h 127.0.0.1 -p "$pg_port" -U pettracker \
  -d pettracker -c "SELECT count(*) FROM positions" 2>/dev/null || true; }

# One line a second: unix time, server RSS (KiB), spool files, spool KiB, positions (or empty).
samples="$work/samples.tsv"
# The count only every fifth second: it costs the database a scan of positions.
sampler() {
  local i=0 count
  while kill -0 "$server" 2>/dev/null; do
    count=""; [ $((i % 5)) = 0 ] && count=$(count_or_empty)
    printf '%s\t%s\t%s\t%s\t%s\n' "$(now)" "$(rss_kib "$server")" "$(spool_files)" "$(spool_kib)" \
      "$count" >>"$samples"
    i=$((i + 1)); sleep 1
  done
}
rss_idle=$(rss_kib "$server")
sampler &
bench_pids+=($!)

log "load: $collars collars, $rate fixes/s for ${duration}s; outage at ${outage_at}s for ${outage_len}s"
t_load=$(now)
$bin/firmware-sim load --broker "127.0.0.1:$mqtt_port" --credentials "$work/fleet.jsonl" \
  --rate "$rate" --duration "$duration" --messages 100000000 --qos 1 --inflight 1 \
  >"$work/load.json" 2>"$work/load.log" &
load_pid=$!
bench_pids+=($load_pid)

sleep "$outage_at"
t_stop=$(now)
log "stopping PostgreSQL"
pg_stop_cluster
t_stopped=$(now)
sleep "$(python3 -c "print(max(0, $outage_len - ($t_stopped - $t_stop)))")"
log "starting PostgreSQL"
pg_start_cluster
t_restart=$(now)
log "PostgreSQL accepts connections again ($(python3 -c "print(round($t_restart - $t_stop, 1))") s after the stop began)"

load_rc=0
wait "$load_pid" || load_rc=$?
t_load_end=$(now)
if [ "$load_rc" != 0 ] || [ ! -s "$work/load.json" ]; then
  log "firmware-sim load failed (exit $load_rc):"; tail -20 "$work/load.log" >&2
  exit 1
fi
acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fixes"])' "$work/load.json")
log "load done: $acked fixes acknowledged; waiting for the backlog"

# Drained: the spool is empty and every acknowledged fix is in `positions`. A fix whose PUBACK
# timed out may still be stored, so more rows than acknowledgements is possible (and reported).
# The spool is checked first: it is a directory listing, while count(*) is work for the database
# that is busy replaying. Gives up when nothing moved for 30 s (fixes lost) or after drain_limit.
stored=0; t_drained=""; last=""; t_last=$(now)
deadline=$(python3 -c "print($t_load_end + $drain_limit)")
while :; do
  if [ "$(spool_files)" = 0 ]; then
    stored=$(count_or_empty)
    if [ -n "$stored" ] && [ "$stored" -ge "$acked" ]; then t_drained=$(now); break; fi
    if [ "$stored" != "$last" ]; then last=$stored; t_last=$(now); fi
    if python3 -c "import sys; sys.exit(0 if $(now) - $t_last > 30 else 1)"; then
      log "the spool is empty but positions stays at ${stored:-?} of $acked acknowledged fixes"
      break
    fi
  fi
  if python3 -c "import sys; sys.exit(0 if $(now) > $deadline else 1)"; then
    log "not drained after ${drain_limit}s: spool files $(spool_files)"
    stored=$(count_or_empty)
    break
  fi
  sleep 0.25
done
sleep 1  # one more sample after the drain
kill -0 "$server" 2>/dev/null || { log "the server died:"; tail -30 "$work/server.log" >&2; exit 1; }

refused=$(grep -c "publish not taken" "$work/server.log" || true)
python3 - "$samples" "$work/load.json" "$rss_idle" "$t_load" "$t_stop" "$t_restart" "$t_load_end" \
  "${t_drained:-}" "$acked" "$stored" "$rate" "$collars" "$outage_len" "$refused" >"$work/results.tsv" <<'EOF'
import json, sys
(samples, load_path, rss_idle, t_load, t_stop, t_restart, t_load_end, t_drained, acked, stored,
 rate, collars, outage_len, refused) = sys.argv[1:]
t_load, t_stop, t_restart, t_load_end = map(float, (t_load, t_stop, t_restart, t_load_end))
rows = []
for line in open(samples):
    t, rss, files, kib, count = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    rows.append((float(t), int(rss or 0), int(files or 0), int(kib or 0), count))
load = json.load(open(load_path))
mib = lambda kib: kib / 1024
# Baseline: the server under the same load just before the outage (the last 10 s before the stop).
before = [r[1] for r in rows if t_stop - 10 <= r[0] < t_stop] or [r[1] for r in rows if r[0] < t_stop]
end = float(t_drained) if t_drained else rows[-1][0]
during = [r for r in rows if t_stop <= r[0] <= end]
rss_before = mib(sum(before) / len(before))
peak = max(during, key=lambda r: r[1])
spool_peak = max(during, key=lambda r: r[3])
acked, stored = int(acked), int(stored or 0)
spool_empty = next((r[0] for r in rows if r[0] >= t_restart and r[2] == 0), end)
common = {"collars": int(collars), "outage_seconds": int(outage_len)}
out = [
    ("outage_peak_rss", mib(peak[1]), "MiB", dict(common,
        baseline_name="outage_rss_before", baseline_value=round(rss_before, 1),
        ratio=round(mib(peak[1]) / rss_before, 3), rss_idle_mib=round(mib(int(rss_idle)), 1),
        peak_at_seconds_after_stop=round(peak[0] - t_stop, 1),
        spool_peak_mib=round(mib(spool_peak[3]), 1), spool_peak_batches=spool_peak[2])),
    # Drained: the first sample after the restart with an empty spool; from then on new batches
    # go straight to the database. Every acknowledged fix being stored can only be checked once
    # the load has ended, so that time (until_all_stored) is bounded below by the load's end.
    ("outage_drain_seconds", (spool_empty - t_restart), "s", dict(common,
        resolution_seconds=1, until_all_stored_seconds=round(end - t_restart, 1),
        drained=bool(t_drained), after_load_end_seconds=round(end - t_load_end, 1),
        load_end_after_restart_seconds=round(t_load_end - t_restart, 1))),
    ("outage_fixes_lost", max(0, acked - stored), "fixes", dict(common,
        fixes_acknowledged=acked, fixes_stored=stored,
        stored_not_acknowledged=max(0, stored - acked), failed_collars=load["failed_collars"],
        publishes_refused=int(refused))),
    ("outage_load_rate", load["fixes_per_second"], "fixes/s", dict(common,
        target=float(rate), seconds=round(load["seconds"], 1),
        latency_ms_p50=load["latency_ms_p50"], latency_ms_p99=load["latency_ms_p99"],
        latency_ms_max=load["latency_ms_max"], failed_collars=load["failed_collars"])),
]
for name, value, unit, extra in out:
    print(f"{name}\t{value}\t{unit}\t{json.dumps(extra)}")
EOF
# One tab-separated line per result (JSON has no raw tabs), then `emit` as every scenario does.
while IFS=$'\t' read -r name value unit extra; do
  emit "$name" "$value" "$unit" "$extra"
done <"$work/results.tsv"
