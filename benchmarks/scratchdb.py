"""A scratch database for the SQL-level A/B scripts (days_ab.py, write_ab.py, batch_parts.py),
and the CPU its backend uses.

The database is a copy of the migrated template in the test cluster that `cargo test` starts under
$TMPDIR, or, with SCRATCH_DSN set, the database it names, used as it is (a throwaway one:
benchmarks/batch_parts.sh points it at a private cluster of `pettracker serve`).
"""
import os

import psycopg


def connect(name):
    """(admin, conn): autocommit connections, admin None without a copy to drop at the end."""
    if os.environ.get("SCRATCH_DSN"):
        return None, psycopg.connect(os.environ["SCRATCH_DSN"], autocommit=True)
    cluster = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pettracker-test-pg-{os.geteuid()}")
    port = open(f"{cluster}/pgdata/postmaster.pid").read().splitlines()[3]
    pw = open(f"{cluster}/password").read().strip()
    dsn = f"host=127.0.0.1 port={port} user=pettracker password={pw} dbname="
    admin = psycopg.connect(dsn + "postgres", autocommit=True)
    tmpl = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pettracker_template_%' "
        "AND datname NOT LIKE '%building' ORDER BY oid DESC LIMIT 1").fetchone()[0]
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name} TEMPLATE {tmpl}")
    return admin, psycopg.connect(dsn + name, autocommit=True)


def drop(admin, conn, name):
    conn.close()
    if admin is not None:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def backend_cpu(conn):
    """A function giving the CPU seconds conn's backend has used so far (from /proc: run as root
    or as the server's user)."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick
    return cpu


def status_columns(f, seen):
    """WRITE_STATUS's $1..$10 from WRITE_FIXES's twelve fix columns `f`: each tracker's last fix
    of the batch (the fixes here are in device-time order per tracker) and when it was seen."""
    newest = {}
    for i, tr in enumerate(f[0]):
        newest[tr] = i
    idx = list(newest.values())
    return [[f[col][i] for i in idx] for col in (0, 1, 3, 4, 6, 7, 8, 11, 10)] + [[seen for _ in idx]]
