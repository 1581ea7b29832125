#!/usr/bin/env python3
"""What each part of an ingest batch costs PostgreSQL: the batch transaction as ingest writes it
(gateway/src/storage/ingest.rs: the trackers' lock, the fixes by binary COPY_FIXES, WRITE_STATUS,
COMMIT) against the same transaction written other ways, interleaved batch by batch on one
database.

Variants (each statement prepared, so none is planned again between batches):
  copy        lock + COPY + status: what ingest does on plain PostgreSQL (migration 18 on)
  no_lock     the same without the trackers' lock (SELECT ... FOR UPDATE)
  insert      lock + WRITE_FIXES (`INSERT ... ON CONFLICT DO NOTHING`, intervals skipped as on
              plain PostgreSQL) + status: a batch that met a stored fix, written again
  roll        lock + WRITE_FIXES keeping the 5-minute intervals + status: what ingest does on
              TimescaleDB (and did on plain PostgreSQL before migration 18)
  copy_only   only the COPY
  combined    lock + the insert with the status update as a CTE of it: one statement fewer
  insert_pipe, combined_pipe   the same as insert and combined, sent in one pipeline (psycopg's
              pipeline mode: the statements and the COMMIT leave before the first answer)
Variants to run: BATCH_VARIANTS=copy,insert,... (default all).
Reports the backend's CPU per fix (from /proc: run it as root or as the server's user) and the
transaction's wall time per fix, median of the batches. The fixes are dated by the clock, after
the days' settle mark (migration 17), as a fleet's are: the statement trigger notes nothing.

Usage: [BATCH_PARTS="TRACKERS BATCH ITERATIONS"] bash benchmarks/batch_parts.sh (a private cluster of its own), or
       python3 benchmarks/batch_parts.py [TRACKERS BATCH ITERATIONS]
  (default 500 600 300: one writer's shard of 1,000 collars at 80 % of the single-fix maximum,
  about 1.2 fixes per tracker and batch). Needs psycopg 3. The Python script alone uses the test
  cluster that `cargo test` starts under $TMPDIR (its migrated template copied into a scratch
  database, ab_parts), or the database SCRATCH_DSN names, written into as it is
  (benchmarks/scratchdb.py).
"""
import contextlib, datetime, os, re, statistics, sys, time

import scratchdb

src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../gateway/src/storage/ingest.rs")).read()
const = lambda name: re.search(r'const ' + name + r': &str = "(.*?)";', src, re.S).group(1)
insert, status, copy, lock = const("WRITE_FIXES"), const("WRITE_STATUS"), const("COPY_FIXES"), const("LOCK_TRACKERS")
# The statement as TimescaleDB runs it, rolling the intervals in every batch: on plain PostgreSQL
# from migration 18 the settle pass keeps them, and the statement's gate skips the roll.
gate = "    WHERE (SELECT to_regclass('positions_5m_mark') IS NULL)\n"
assert gate in insert, "WRITE_FIXES's gate changed: update this script"
named = lambda q: re.sub(r"\$(\d+)", r"%(p\1)s", q)
TYPES = ["text", "timestamptz", "timestamptz", "float8", "float8", "float4", "float4", "float4",
         "float4", "int2", "int2", "int8"]
# The insert and the status update as one statement (the status a CTE of the insert, its
# parameters after the insert's): one round trip fewer.
head, tail = insert.rsplit("\n)\nSELECT", 1)
combined = (head + "\n), upd AS (\n" + re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + 12}", status)
            + "\n    RETURNING 1\n)\nSELECT" + tail)
# name: (takes the lock, fixes by COPY, the fix statement, updates the status, pipelined)
variants = {
    "copy": (True, True, None, True, False),
    "no_lock": (False, True, None, True, False),
    "insert": (True, False, insert, True, False),
    "roll": (True, False, insert.replace(gate, ""), True, False),
    "copy_only": (False, True, None, False, False),
    "combined": (True, False, combined, False, False),
    "insert_pipe": (True, False, insert, True, True),
    "combined_pipe": (True, False, combined, False, True),
}
only = os.environ.get("BATCH_VARIANTS")
if only:
    variants = {k: v for k, v in variants.items() if k in only.split(",")}

admin, c = scratchdb.connect("ab_parts")
# As ingest's own connections (storage::ingest_pool): planned once, rows found by key.
c.execute("SET plan_cache_mode = force_generic_plan")
c.execute("SET random_page_cost = 1.1")
trackers, batch, iters = ([int(a) for a in sys.argv[1:4]] + [500, 600, 300][len(sys.argv) - 1:])[:3]
c.execute("INSERT INTO trackers (tracker_id, secret_hash, claim_code_hash) SELECT 'ab-' || i, 'x', 'x' FROM generate_series(0, %s) i", (trackers - 1,))
c.execute("INSERT INTO tracker_status (tracker_id) SELECT tracker_id FROM trackers")
c.execute("ANALYZE")
base = datetime.datetime.now(datetime.timezone.utc)
k = 0  # next fix number; each tracker's device time advances 1 s per fix, from now


def rows():
    global k
    f = [[] for _ in range(12)]
    now = datetime.datetime.now(datetime.timezone.utc)
    for j in range(batch):
        n = k + j
        tr = n % trackers
        t = base + datetime.timedelta(seconds=n // trackers)
        for col, v in zip(f, [f"ab-{tr}", t, now, 52.5 + n * 1e-7, 13.4, 34.0, 5.0, 1.2, 270.0, 9, 80, n]):
            col.append(v)
    k += batch
    s = scratchdb.status_columns(f, now)
    return f, {f"p{i + 1}": v for i, v in enumerate(f)}, {f"p{i + 1}": v for i, v in enumerate(s)}, sorted(set(f[0]))


cpu = scratchdb.backend_cpu(c)
cpu_by = {v: 0.0 for v in variants}
times = {v: [] for v in variants}
fixes = {v: 0 for v in variants}
names = list(variants)
for it in range(iters):
    # A different order each round, so no variant always follows the same one.
    order = names[it % len(names):] + names[:it % len(names)]
    for name in order:
        f, fix_params, status_params, keys = rows()
        locks, by_copy, fix_statement, updates, pipelined = variants[name]
        if fix_statement is combined:
            fix_params = {**fix_params, **{f"p{int(k[1:]) + 12}": v for k, v in status_params.items()}}
        t0 = time.perf_counter(); c0 = cpu()
        with (c.pipeline() if pipelined else contextlib.nullcontext()), c.transaction():
            if locks:
                c.execute(named(lock), {"p1": keys}, prepare=True)
            if by_copy:
                with c.cursor().copy(copy) as cp:
                    cp.set_types(TYPES)
                    for r in zip(*f):
                        cp.write_row(r)
            else:
                c.execute(named(fix_statement), fix_params, prepare=True)
            if updates:
                c.execute(named(status), status_params, prepare=True)
        if it < 5:
            continue
        times[name].append((time.perf_counter() - t0) / batch * 1e6)
        cpu_by[name] += cpu() - c0
        fixes[name] += batch
ref = "copy" if "copy" in variants else names[0]
copy_us = cpu_by[ref] / fixes[ref] * 1e6
for name in names:
    us = cpu_by[name] / fixes[name] * 1e6
    print(f"{name:11} transaction us/fix median {statistics.median(times[name]):7.2f}   backend CPU us/fix {us:6.2f}   "
          f"against {ref} {us / copy_us:5.2f}x")
print("trackers", trackers, "batch", batch, "batches per variant", len(times[ref]),
      "positions", c.execute("SELECT count(*) FROM positions").fetchone()[0],
      "positions_5m", c.execute("SELECT count(*) FROM positions_5m").fetchone()[0])
scratchdb.drop(admin, c, "ab_parts")
