#!/usr/bin/env bash
# Scenario 7, the owner web app in a real browser (issue 18): headless Debian chromium through
# chromedriver (the tests' browser and flags) against `pettracker serve`, no basemap (tiles are
# another origin's cost). benchmarks/browser.py measures, each beside what the API alone takes:
#   browser_first_paint_30_pets   page load to the frame after 30 pets' markers were added
#                                 (baseline: GET /api/v1/trackers for them)
#   browser_live_N_pets_fps       frames per second while N collars of `firmware-sim run`
#                                 (real MQTT, the simulator's pets around Berlin) report every 5 s
#   browser_live_N_pets_lag_pNN   fix device time to the frame that moved its marker
#                                 (baseline: the same fixes' arrival on the page's WebSocket)
#   browser_history_Dd_heap       JS heap after drawing D days of one pet reporting every 5 s
#                                 (baseline: the heap before) and the time to draw them
#                                 (baseline: the API request the screen makes)
# Full: 1,000 live pets for 60 s, 30 days (518,400 fixes); quick: 200 pets for 15 s, 3 days
# shown through the 7-day range.
# Usage: benchmarks/browser.sh [--quick]; prints JSON lines (see lib.sh).
source "$(dirname "$0")/lib.sh"
bench_build
if [ $quick = 1 ]; then live_pets=200; live_secs=15; days=3; range=7; runs=3
else live_pets=1000; live_secs=60; days=30; range=30; runs=7; fi
live_pets=${BENCH_LIVE_PETS:-$live_pets}; live_secs=${BENCH_LIVE_SECS:-$live_secs}
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
  || { log "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"; exit 1; }

export PETTRACKER_MAP_TILE_URL=""
# One browser makes a burst of requests per page load; the limiter still runs on each.
export PETTRACKER_HTTP_RATE_LIMIT_PER_SECOND=100000 PETTRACKER_HTTP_RATE_LIMIT_BURST=100000
start_server
log "server on http $http_port, mqtt $mqtt_port"
for who in paint live history; do owner_token "$who@example.com" >/dev/null; done

# 30 pets with a position each (a few minutes of history through the ingest write path).
$bin/pettracker seed --trackers 30 --days 0.005 --interval 30 --prefix paint --owner paint@example.com >&2
python3 benchmarks/browser.py paint --port "$http_port" --email paint@example.com --pets 30 --runs $runs \
  | tee "$work/paint.jsonl"
idle_fps=$(python3 -c 'import json,sys; print(next(json.loads(l)["value"] for l in open(sys.argv[1]) if "browser_idle_fps" in l))' "$work/paint.jsonl")

# A fleet over real MQTT, every collar owned by one account.
provision live "$live_pets" "$work/live.jsonl"
psql_ -c "UPDATE trackers SET owner_id = (SELECT id FROM users WHERE email = 'live@example.com'),
                 claimed_at = now() - interval '1 hour' WHERE tracker_id LIKE 'live-%'" >&2
$bin/firmware-sim run --broker "127.0.0.1:$mqtt_port" --credentials "$work/live.jsonl" --interval 5 \
  >"$work/fleet.log" 2>&1 &
fleet=$!
bench_pids+=("$fleet")
python3 benchmarks/browser.py live --port "$http_port" --email live@example.com --pets "$live_pets" \
  --seconds "$live_secs" --idle-fps "$idle_fps"
kill -INT "$fleet" 2>/dev/null || true
wait "$fleet" 2>/dev/null || true

# One pet, a fix every 5 s for the whole range.
t0=$(now)
$bin/pettracker seed --trackers 1 --days "$days" --interval 5 --prefix long --owner history@example.com >&2
fixes=$(psql_ -At -c "SELECT count(*) FROM positions WHERE tracker_id = 'long-0001'")
log "$fixes fixes seeded in $(python3 -c "print(round($(now) - $t0))") s"
python3 benchmarks/browser.py history --port "$http_port" --email history@example.com \
  --tracker long-0001 --days "$range" --fixes "$fixes"
