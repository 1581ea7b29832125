#!/usr/bin/env bash
# History query latency through the HTTP API on a large positions table, against a baseline
# measured in the same run: GET /healthz (the same client, connection and server, no query).
# Fills positions with TRACKERS x FIXES rows (default 50 x 200,000 = 10 million, one fix every
# 10 s, about 23 days per tracker) straight in SQL, then times, over a kept-alive connection:
#   latest          GET /trackers/{id}/latest
#   history_24h     GET /trackers/{id}/positions, 24 hours (8,640 fixes) with limit=5000 (first page)
#   bucket_5m_30d   GET /trackers/{id}/positions?bucket=5m over 30 days, limit=5000
#   summary_30d     GET /trackers/{id}/summary, 30 days
# Usage: benchmarks/history.sh [--quick] [--write]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; write=0
for a in "$@"; do
  case "$a" in --quick) quick=1 ;; --write) write=1 ;; *) echo "unknown argument: $a" >&2; exit 2 ;; esac
done
trackers=50; fixes=200000; runs=300
[ $quick = 1 ] && { trackers=10; fixes=20000; runs=50; }

cargo build --release -q -p pettracker
bin=target/release
work=$(mktemp -d /tmp/pettracker-history.XXXXXX); chmod 755 "$work"
export PETTRACKER_DATABASE_DATA_DIR="$work/postgres" PETTRACKER_INGEST_SPOOL_DIR="$work/spool"
export PETTRACKER_LOG="${PETTRACKER_LOG:-warn}"
unset DATABASE_URL PETTRACKER_DATABASE_URL
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); mqtt_port=$(free_port)
server=""
cleanup() {
  [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
$bin/pettracker serve --http-addr "127.0.0.1:$http_port" --mqtt-addr "127.0.0.1:$mqtt_port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

$bin/pettracker tracker provision hist --count $trackers --json >"$work/trackers.jsonl"
pg_port=$(sed -n 4p "$work/postgres/pgdata/postmaster.pid")
export PGPASSWORD; PGPASSWORD=$(cat "$work/postgres/password")
psql_() { /usr/lib/postgresql/*/bin/psql -X -q -h 127.0.0.1 -p "$pg_port" -U pettracker -d pettracker -v ON_ERROR_STOP=1 "$@"; }

# The owner: register through the API, own every tracker since before the history starts.
API="http://127.0.0.1:$http_port/api/v1"
curl -fs "$API/auth/register" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"correct horse battery"}' >/dev/null
token=$(curl -fs "$API/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"correct horse battery"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
t0=$(date +%s.%N)
psql_ <<SQL
UPDATE trackers SET owner_id = (SELECT id FROM users WHERE email = 'bench@example.com'),
                    claimed_at = now() - interval '400 days';
INSERT INTO positions (tracker_id, device_time, received_at, lat, lon, accuracy, battery, seq)
SELECT 'hist-' || t, now() - (g * interval '10 seconds'), now(),
       52.5 + 0.01 * sin(g / 100.0), 13.4 + 0.01 * cos(g / 100.0), 5, 80, $fixes - g
FROM generate_series(1, $trackers) t, generate_series(1, $fixes) g;
UPDATE tracker_status s SET last_fix_time = p.device_time, last_lat = p.lat, last_lon = p.lon, last_seq = p.seq
FROM (SELECT DISTINCT ON (tracker_id) * FROM positions ORDER BY tracker_id, device_time DESC) p
WHERE s.tracker_id = p.tracker_id;
VACUUM ANALYZE positions;
SQL
t1=$(date +%s.%N)
rows=$(psql_ -At -c "SELECT count(*) FROM positions")
echo "filled $rows rows in $(python3 -c "print(round($t1-$t0))") s" >&2

python3 - "$http_port" "$token" "$runs" "$rows" "$write" <<'EOF'
import http.client, json, sys, time, datetime, statistics, urllib.parse
port, token, runs, rows, write = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
conn = http.client.HTTPConnection("127.0.0.1", port)
now = datetime.datetime.now(datetime.timezone.utc)
def iso(t): return urllib.parse.quote(t.isoformat())
day_ago, month_ago = now - datetime.timedelta(hours=24), now - datetime.timedelta(days=30)
scenarios = {
    "healthz_baseline": "/healthz",
    "latest": "/api/v1/trackers/hist-1/latest",
    "history_24h": f"/api/v1/trackers/hist-1/positions?from={iso(day_ago)}&to={iso(now)}&limit=5000",
    "bucket_5m_30d": f"/api/v1/trackers/hist-1/positions?from={iso(month_ago)}&to={iso(now)}&bucket=5m&limit=5000",
    "summary_30d": "/api/v1/trackers/hist-1/summary",
}
results = []
for name, path in scenarios.items():
    times = []
    for i in range(runs + 5):
        t = time.perf_counter()
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
        r = conn.getresponse(); body = r.read()
        if r.status != 200: sys.exit(f"{name}: {r.status} {body[:200]}")
        if i >= 5: times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    n = len(json.loads(body).get("positions", [])) if name.startswith(("history", "bucket")) else None
    results.append({"name": name, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "fixes_returned": n})
base = results[0]["p50_ms"]
out = []
for r in results:
    for q in ("p50_ms", "p99_ms"):
        e = {"name": f"{r['name']}_{q[:3]}", "value": r[q], "unit": "ms", "rows_in_table": rows}
        if r["fixes_returned"] is not None: e["fixes_returned"] = r["fixes_returned"]
        if r["name"] != "healthz_baseline":
            e.update(baseline_name="healthz_baseline_p50", baseline_value=base, ratio=round(r[q] / base, 1))
        out.append(e)
print(json.dumps(out, indent=2))
if write:
    import re, os
    prev = json.load(open("benchmarks/results.json")) if os.path.exists("benchmarks/results.json") else []
    prev = [e for e in prev if not e["name"].startswith(tuple(scenarios))]
    json.dump(prev + out, open("benchmarks/results.json", "w"), indent=2)
    lines = ["<!-- generated by benchmarks/history.sh --write: do not edit by hand -->",
             f"Command: `benchmarks/history.sh --write`; positions table: {rows:,} rows ({os.cpu_count()} cores, private PostgreSQL 15, default settings); {runs} requests each over one kept-alive connection (Python http.client).",
             "", "| request | p50 ms | p99 ms | fixes returned | p50 / healthz p50 |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['p50_ms']} | {r['p99_ms']} | {r['fixes_returned'] if r['fixes_returned'] is not None else ''} | {round(r['p50_ms']/base,1)} |")
    text = open("BENCHMARKS.md").read()
    block = "\n".join(lines)
    if "<!-- history:begin -->" not in text:
        text += "\n## History queries through the HTTP API\n\n`benchmarks/history.sh --write` fills `positions` in SQL, then times the owner's read routes\nagainst `GET /healthz` on the same connection (the floor: HTTP, auth-free, no query).\n\n<!-- history:begin -->\n<!-- history:end -->\n"
    text = re.sub(r"<!-- history:begin -->.*<!-- history:end -->", "<!-- history:begin -->\n" + block + "\n<!-- history:end -->", text, flags=re.S)
    open("BENCHMARKS.md", "w").write(text)
EOF
