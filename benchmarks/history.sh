#!/usr/bin/env bash
# Scenario 5, history queries through the HTTP API on a large positions table filled by
# `pettracker seed` (the ingest write path, the simulator's movement model): an owner with 10
# trackers among a fleet of others, 30 days each, one fix every 30 s. Full: 10 + 570 trackers,
# 50.1 million rows; quick: 10 + 40 trackers, 2 days. Times, over one kept-alive connection,
# against GET /healthz on the same connection (the floor: HTTP, no auth, no query):
#   history_latest_10_trackers  GET /trackers: the owner's 10 trackers with their latest fix
#   history_24h                 GET /trackers/{id}/positions, the last 24 hours (2,880 fixes)
#   history_bucket_5m_30d       GET /trackers/{id}/positions?bucket=5m over 30 days, every page
#                               (8,640 buckets: two pages of at most 5,000)
#   history_summary_30d         GET /trackers/{id}/summary, 30 days
# Usage: benchmarks/history.sh [--quick]; prints JSON lines (see lib.sh).
source "$(dirname "$0")/lib.sh"
bench_build
if [ $quick = 1 ]; then fleet=40; days=2; runs=50; else fleet=570; days=30; runs=300; fi
# HISTORY_FLEET and HISTORY_DAYS override the fleet's size and its days (a smaller table with the
# same 30 days per tracker times the summary and the 30-day ranges at a fraction of the seeding).
fleet=${HISTORY_FLEET:-$fleet}; days=${HISTORY_DAYS:-$days}

# The API's per-credential limit (50 requests/s, bursts of 200) would answer most of the 300
# back-to-back requests with 429: this measures the queries, so it is raised out of the way (the
# limiter still runs on every request).
export PETTRACKER_HTTP_RATE_LIMIT_PER_SECOND=1000000 PETTRACKER_HTTP_RATE_LIMIT_BURST=1000000
start_server
token=$(owner_token bench@example.com)
t0=$(now)
log "seeding 10 owned trackers and $fleet others, $days days at one fix every 30 s"
$bin/pettracker seed --trackers 10 --days $days --interval 30 --prefix mine --owner bench@example.com >&2
$bin/pettracker seed --trackers $fleet --days $days --interval 30 --prefix fleet >&2
psql_ -c "VACUUM ANALYZE positions, positions_5m" >&2
t1=$(now)
rows=$(count_positions)
log "$rows rows in $(python3 -c "print(round($t1 - $t0))") s"

python3 - "$http_port" "$token" "$runs" "$rows" "$days" <<'EOF'
import http.client, json, sys, time, datetime, statistics, urllib.parse
port, token, runs, rows, days = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
conn = http.client.HTTPConnection("127.0.0.1", port)
now = datetime.datetime.now(datetime.timezone.utc)
def iso(t): return urllib.parse.quote(t.isoformat())
day_ago, month_ago = now - datetime.timedelta(hours=24), now - datetime.timedelta(days=30)
t = "/api/v1/trackers/mine-0001"
scenarios = {
    "healthz": "/healthz",
    "history_latest_10_trackers": "/api/v1/trackers",
    "history_24h": f"{t}/positions?from={iso(day_ago)}&to={iso(now)}&limit=5000",
    "history_bucket_5m_30d": f"{t}/positions?from={iso(month_ago)}&to={iso(now)}&bucket=5m&limit=5000",
    "history_summary_30d": f"{t}/summary?from={iso(month_ago)}&to={iso(now)}",
}
# A request's time is from sending it to the last byte of the answer, summed over its pages: the
# server and the transfer. Parsing the JSON is the client's cost, so it is timed apart and
# reported beside (client_json_parse_ms_p50).
def get(path):
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
    r = conn.getresponse(); raw = r.read()
    t1 = time.perf_counter()
    if r.status != 200: sys.exit(f"{path}: {r.status} {raw[:200]}")
    body = json.loads(raw)
    return body, t1 - t0, time.perf_counter() - t1
results = {}
for name, path in scenarios.items():
    times, parse = [], []
    for i in range(runs + 5):
        body, spent, parsing = get(path)
        returned = 0
        # Follow the cursor: the request is the whole range, however many pages it takes.
        while True:
            if isinstance(body, dict):
                returned += len(body.get("positions", body.get("days", body.get("trackers", []))))
            else:
                returned += len(body)
            cur = body.get("next_cursor") if isinstance(body, dict) else None
            if not cur: break
            body, more, more_parsing = get(path + "&cursor=" + urllib.parse.quote(cur))
            spent += more; parsing += more_parsing
        if i >= 5: times.append(spent * 1000); parse.append(parsing * 1000)
    times.sort()
    results[name] = (statistics.median(times), times[max(int(len(times) * 0.99) - 1, 0)], returned,
                     statistics.median(parse))
base = results["healthz"][0]
for name, (p50, p99, returned, parse_ms) in results.items():
    for q, v in (("p50", p50), ("p99", p99)):
        e = {"name": f"{name}_{q}", "value": round(v, 2), "unit": "ms", "rows_in_table": rows, "requests": runs,
             "client_json_parse_ms_p50": round(parse_ms, 2)}
        if name != "healthz":
            e.update(returned=returned, baseline_name="healthz_p50", baseline_value=round(base, 3), ratio=round(v / base, 1))
        print(json.dumps(e))
EOF

# The plans of bucketed history (src/trackers/history.rs) in SQL on the same table, 30 days, first page
# (at most 5,001 rows): DISTINCT ON reads and sorts every fix of the range; the loose index scan
# probes the primary key twice per bucket; the API reads widths that are multiples of 5 minutes
# from positions_5m, the last fix of every 5 minutes kept at ingest (timed here without the two
# partial intervals at the range's ends, which cost one probe each).
sql_ms() { # query -> median ms of 20 runs
  { echo '\timing on'; for _ in $(seq 1 20); do echo "$1;"; done; } | psql_ -o /dev/null 2>&1 \
    | python3 -c 'import sys, statistics; t = [float(l.split()[1]) for l in sys.stdin if l.startswith("Time:")]; print(round(statistics.median(t), 2))'
}
range="p.tracker_id = 'mine-0001' AND p.device_time >= now() - interval '30 days' AND p.device_time < now()"
for w in 5m 1h; do
  case $w in 5m) iv="interval '5 minutes'" ;; 1h) iv="interval '1 hour'" ;; esac
  distinct="SELECT * FROM (SELECT DISTINCT ON (b) p.*, date_bin($iv, p.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b FROM positions p WHERE $range ORDER BY b, p.device_time DESC) x ORDER BY b LIMIT 5001"
  loose="WITH RECURSIVE b(start, n) AS (SELECT date_bin($iv, f.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00'), 1::bigint FROM (SELECT p.device_time FROM positions p WHERE $range ORDER BY p.device_time LIMIT 1) f UNION ALL SELECT date_bin($iv, nxt.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00'), b.n + 1 FROM b CROSS JOIN LATERAL (SELECT p.device_time FROM positions p WHERE p.tracker_id = 'mine-0001' AND p.device_time >= b.start + $iv AND p.device_time < now() ORDER BY p.device_time LIMIT 1) nxt WHERE b.n < 5001) SELECT x.* FROM b CROSS JOIN LATERAL (SELECT p.* FROM positions p WHERE $range AND p.device_time >= b.start AND p.device_time < b.start + $iv ORDER BY p.device_time DESC LIMIT 1) x ORDER BY b.start LIMIT 5001"
  intervals="SELECT * FROM (SELECT DISTINCT ON (b) p.*, date_bin($iv, p.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b FROM positions_5m p WHERE p.tracker_id = 'mine-0001' AND p.bucket >= now() - interval '30 days' AND p.bucket < now() - interval '5 minutes' ORDER BY b, p.device_time DESC) x ORDER BY b LIMIT 5001"
  d_ms=$(sql_ms "$distinct"); l_ms=$(sql_ms "$loose"); i_ms=$(sql_ms "$intervals")
  emit "history_bucket_sql_${w}_loose_index_scan" "$l_ms" ms \
    "{\"baseline_name\": \"history_bucket_sql_${w}_distinct_on\", \"baseline_value\": $d_ms, \"ratio\": $(python3 -c "print(round($l_ms / $d_ms, 3))"), \"note\": \"median of 20 in psql, 30 days, first page\"}"
  emit "history_bucket_sql_${w}_kept_intervals" "$i_ms" ms \
    "{\"baseline_name\": \"history_bucket_sql_${w}_loose_index_scan\", \"baseline_value\": $l_ms, \"ratio\": $(python3 -c "print(round($i_ms / $l_ms, 3))"), \"note\": \"median of 20 in psql, 30 days, first page, from positions_5m\"}"
done
