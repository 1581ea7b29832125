"""Per-stage ingest latency from two scrapes of /metrics (before and after a run).

Usage: python3 benchmarks/stages.py BEFORE AFTER  -> one JSON object on stdout:
{stage: {"mean_ms", "p50_ms", "p99_ms", "count"}} for every `pettracker_ingest_stage_seconds`
stage and `puback_wait`. The mean is exact for the run (from the _sum/_count deltas); the
quantiles are the exporter's rolling summary (its last minute or so), i.e. the run's end.
"""
import json
import re
import sys

LINE = re.compile(r'^(pettracker_ingest_stage_seconds|pettracker_puback_wait_seconds)(_sum|_count)?(\{[^}]*\})? (\S+)$')


def parse(path):
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, suffix, labels, value = m.groups()
        labels = labels or ""
        stage = re.search(r'stage="([^"]+)"', labels)
        stage = stage.group(1) if stage else "puback_wait"
        q = re.search(r'quantile="([^"]+)"', labels)
        key = suffix[1:] if suffix else ("q" + q.group(1) if q else None)
        if key:
            out.setdefault(stage, {})[key] = float(value)
    return out


before, after = parse(sys.argv[1]), parse(sys.argv[2])
result = {}
for stage, a in after.items():
    b = before.get(stage, {})
    n = a.get("count", 0) - b.get("count", 0)
    s = a.get("sum", 0) - b.get("sum", 0)
    result[stage] = {
        "mean_ms": round(s / n * 1000, 2) if n else None,
        "p50_ms": round(a.get("q0.5", 0) * 1000, 2),
        "p99_ms": round(a.get("q0.99", 0) * 1000, 2),
        "count": int(n),
    }
print(json.dumps(result))
