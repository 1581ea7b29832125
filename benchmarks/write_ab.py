#!/usr/bin/env python3
"""The batch write statement with and without its positions_5m upsert, on one database, interleaved.

Measures what keeping the last fix of every 5 minutes costs ingest: the statement from
gateway/src/storage/ingest.rs (WRITE_FIXES) as it is ("with"), without the `roll` part
("without"), and a variant that would keep the *first* fix of each interval, skipping fixes that
cannot change it ("first"). Reports the PostgreSQL backend's CPU per fix (from /proc, so run it as
root or as the server's user) and the client's wall time per fix (mostly psycopg building the
arrays, the same for all three).

Usage: python3 benchmarks/write_ab.py [TRACKERS BATCH FIXES_PER_TRACKER_IN_A_ROW ITERATIONS]
Needs psycopg 3 and the shared test cluster that `cargo test` starts (its migrated template is
copied into a scratch database, ab_roll), or the database SCRATCH_DSN names (benchmarks/scratchdb.py).
"""
import re, sys, time, datetime, statistics

import scratchdb
src = open(__import__("pathlib").Path(__file__).resolve().parent.parent / "gateway/src/storage/ingest.rs").read()
with_roll = re.search(r'const WRITE_FIXES: &str = "(.*?)";', src, re.S).group(1)
# The statement as TimescaleDB runs it, rolling the intervals in every batch: on plain PostgreSQL
# from migration 18 the settle pass keeps them, and the statement's gate skips the roll.
gate = "    WHERE (SELECT to_regclass('positions_5m_mark') IS NULL)\n"
assert gate in with_roll, "WRITE_FIXES's gate changed: update this script"
with_roll = with_roll.replace(gate, "")
without_roll = re.sub(r"\), roll AS \(.*?WHERE excluded\.device_time > r\.device_time\n", "", with_roll, flags=re.S)
assert "roll" not in without_roll and "roll" in with_roll
# Named, as the scripts beside it (batch_parts.py) name them. The status update is its own statement
# now (WRITE_STATUS), not measured here; the status columns passed are unused.
with_roll = re.sub(r"\$(\d+)", r"%(p\1)s", with_roll)
without_roll = re.sub(r"\$(\d+)", r"%(p\1)s", without_roll)
admin, c = scratchdb.connect("ab_roll")
assert c.execute("SELECT to_regclass('positions_5m')").fetchone()[0]
trackers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 500
per_msg = int(sys.argv[3]) if len(sys.argv) > 3 else 1   # fixes per tracker in a row (batched uploads)
iters = int(sys.argv[4]) if len(sys.argv) > 4 else 300
c.execute("INSERT INTO trackers (tracker_id, secret_hash, claim_code_hash) SELECT 'ab-' || i, 'x', 'x' FROM generate_series(0, %s) i", (trackers - 1,))
c.execute("INSERT INTO tracker_status (tracker_id) SELECT tracker_id FROM trackers")
base = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
now = datetime.datetime.now(datetime.timezone.utc)
k = 0  # next fix number: device time advances 10 ms per fix overall
def rows():
    global k
    f = [[] for _ in range(12)]
    for j in range(batch):
        t = base + datetime.timedelta(milliseconds=10 * k)
        tr = f"ab-{(k // per_msg) % trackers}"
        for col, v in zip(f, [tr, t, now, 52.5, 13.4, 34.0, 5.0, 1.2, 270.0, 9, 80, k]):
            col.append(v)
        k += 1
    s = scratchdb.status_columns(f, now)
    return f + s
first_roll = with_roll.replace("WHERE excluded.device_time > r.device_time", "WHERE excluded.device_time < r.device_time").replace("i.device_time DESC", "i.device_time ASC")
# "first" with a pre-filter: skip fixes that cannot move their interval's first fix (in-order data)
first_roll = first_roll.replace("""    FROM ins i,
         LATERAL date_bin('5 minutes', i.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') b
""", """    FROM ins i,
         LATERAL date_bin('5 minutes', i.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') b
    WHERE NOT EXISTS (SELECT 1 FROM positions_5m e WHERE e.tracker_id = i.tracker_id AND e.bucket = b AND e.device_time <= i.device_time)
""")
assert first_roll != with_roll and "NOT EXISTS" in first_roll
cpu = scratchdb.backend_cpu(c)
cpu_by = {"without": 0.0, "with": 0.0, "first": 0.0}
times = {"without": [], "with": [], "first": []}
for it in range(iters):
    order = [("without", without_roll), ("with", with_roll), ("first", first_roll)]
    order = order[it % 3:] + order[:it % 3]
    for name, sql in order:
        p = rows()
        t0 = time.perf_counter(); c0 = cpu()
        c.execute(sql, {f"p{i + 1}": v for i, v in enumerate(p)}, prepare=True)
        times[name].append((time.perf_counter() - t0) / batch * 1e6)
        cpu_by[name] += cpu() - c0
for name in times:
    v = times[name][10:]
    print(name, "us/fix median", round(statistics.median(v), 2), "mean", round(statistics.mean(v), 2))
for name in cpu_by:
    print(name, "backend CPU us/fix", round(cpu_by[name] / (iters * batch) * 1e6, 2))
print("ratio with/without (median):", round(statistics.median(times["with"][10:]) / statistics.median(times["without"][10:]), 3))
print("positions", c.execute("SELECT count(*) FROM positions").fetchone()[0], "positions_5m", c.execute("SELECT count(*) FROM positions_5m").fetchone()[0])
scratchdb.drop(admin, c, "ab_roll")
