#!/usr/bin/env python3
"""What keeping `tracker_days` at ingest costs: the batch write statement with the daily-summary
trigger of migration 13 enabled and disabled, interleaved on one database.

The statement is gateway/src/storage/ingest.rs's WRITE_FIXES as it is. Reports the PostgreSQL
backend's CPU per fix (from /proc: run it as root or as the server's user) and the statement's
wall time per fix. Each tracker reports a fix every 10 s of device time, in order (the trigger's
common case: extending the day's row); LATE_EVERY > 0 also sends every LATE_EVERY-th batch again
shifted 5 s back in time (late fixes between stored ones: the day is computed again).

Usage: python3 benchmarks/days_ab.py [TRACKERS BATCH FIXES_PER_TRACKER_IN_A_ROW ITERATIONS LATE_EVERY]
(DAYS_AB_BLOCK and DAYS_AB_SETUP below.)
Needs psycopg 3 and the test cluster that `cargo test` starts under $TMPDIR (its migrated
template is copied into a scratch database, ab_days), or the database SCRATCH_DSN names
(benchmarks/scratchdb.py).
"""
import datetime, os, re, statistics, sys, time

import scratchdb

src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../gateway/src/storage/ingest.rs")).read()
# Named, as the scripts beside it (batch_parts.py) name them. The status update is its own statement
# now (WRITE_STATUS), not measured here; the status columns passed are unused.
sql = re.sub(r"\$(\d+)", r"%(p\1)s", re.search(r'const WRITE_FIXES: &str = "(.*?)";', src, re.S).group(1))
admin, c = scratchdb.connect("ab_days")
assert c.execute("SELECT to_regclass('tracker_days')").fetchone()[0], "no tracker_days: not plain PostgreSQL at migration 13"
# DAYS_AB_SETUP: an SQL file run first, to measure a variant of the trigger's functions.
if os.environ.get("DAYS_AB_SETUP"):
    c.execute(open(os.environ["DAYS_AB_SETUP"]).read())
trackers, batch, per_msg, iters, late_every = ([int(a) for a in sys.argv[1:6]] + [1000, 500, 1, 200, 0][len(sys.argv) - 1:])[:5]
c.execute("INSERT INTO trackers (tracker_id, secret_hash, claim_code_hash) SELECT 'ab-' || i, 'x', 'x' FROM generate_series(0, %s) i", (trackers - 1,))
c.execute("INSERT INTO tracker_status (tracker_id) SELECT tracker_id FROM trackers")
base = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - datetime.timedelta(days=1)
now = datetime.datetime.now(datetime.timezone.utc)
k = 0  # next fix number; each tracker's device time advances 10 s per fix
def rows(shift=None):
    global k
    f = [[] for _ in range(12)]
    first = k if shift is None else shift
    for j in range(batch):
        n = first + j
        tr = n // per_msg % trackers
        t = base + datetime.timedelta(seconds=10 * (n // per_msg // trackers * per_msg + n % per_msg) - (5 if shift is not None else 0))
        for col, v in zip(f, [f"ab-{tr}", t, now, 52.5 + n * 1e-7, 13.4, 34.0, 5.0, 1.2, 270.0, 9, 80, n]):
            col.append(v)
    if shift is None:
        k += batch
    s = scratchdb.status_columns(f, now)
    return f + s, first
cpu = scratchdb.backend_cpu(c)
cpu_by, times, fixes = {"without": 0.0, "with": 0.0}, {"without": [], "with": []}, {"without": 0, "with": 0}
# DAYS_AB_BLOCK: batches in a row with the trigger in one state (default 1). Toggling it is DDL,
# after which PostgreSQL plans the batch statement and the trigger's statements again: with
# blocks, the first batch after each toggle is not counted; without, small batches measure
# mostly that planning.
block = int(os.environ.get("DAYS_AB_BLOCK", "1"))
for it in range(iters):
    for name in (["without", "with"] if it % 2 else ["with", "without"]):
        c.execute(f"ALTER TABLE positions {'ENABLE' if name == 'with' else 'DISABLE'} TRIGGER tracker_days_insert")
        for j in range(block):
            p, first = rows()
            batches = [p]
            if late_every and it % late_every == 0 and first >= batch:
                batches.append(rows(shift=first - batch)[0])
            for b in batches:
                t0 = time.perf_counter(); c0 = cpu()
                c.execute(sql, {f"p{i + 1}": v for i, v in enumerate(b)}, prepare=True)
                if block > 1 and j == 0:
                    continue
                times[name].append((time.perf_counter() - t0) / batch * 1e6)
                cpu_by[name] += cpu() - c0
                fixes[name] += batch
for name in times:
    v = times[name][10:]
    print(name, "statement us/fix median", round(statistics.median(v), 2), "backend CPU us/fix", round(cpu_by[name] / fixes[name] * 1e6, 2))
print("ratio with/without (median wall):", round(statistics.median(times["with"][10:]) / statistics.median(times["without"][10:]), 3))
print("positions", c.execute("SELECT count(*) FROM positions").fetchone()[0], "tracker_days", c.execute("SELECT count(*) FROM tracker_days").fetchone()[0])
scratchdb.drop(admin, c, "ab_days")
