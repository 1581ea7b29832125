#!/usr/bin/env bash
# What each part of an ingest batch costs PostgreSQL (see batch_parts.py), on a private cluster
# that `pettracker serve` starts and migrates, as the other scenarios do.
# Usage: [BATCH_PARTS="TRACKERS BATCH ITERATIONS"] bash benchmarks/batch_parts.sh
source "$(dirname "$0")/lib.sh"
bench_build
start_server
# shellcheck disable=SC2086 # three numbers
SCRATCH_DSN="host=127.0.0.1 port=$pg_port user=pettracker password=$PGPASSWORD dbname=pettracker" \
  python3 benchmarks/batch_parts.py ${BATCH_PARTS:-}
