#!/usr/bin/env python3
"""Collects the JSON lines of a benchmark run (benchmarks/run) into one table.

Repeated scenarios report the median run per result (the whole entry of the run whose value is
the median, so its baseline and ratio stay from the same run) plus every run's value. With
--write: benchmarks/results.json and the generated section of BENCHMARKS.md.
"""
import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys

# Targets on a 2-core machine: name -> [(comparison, bound, text)], issue 8's first, then issue
# 17's (ratios to baselines of the same run). Checked here, in a report; never asserted in tests.
TARGETS = {
    "ingest_single_fix_qos1": [("ge", 50000, ">= 50,000 fixes/s (issue 8)"),
                               ("ratio_ge", 0.2, ">= 0.2 of COPY (issue 17)")],
    "ingest_batch10_qos1": [("ge", 150000, ">= 150,000 fixes/s (issue 8)"),
                            ("ratio_ge", 0.6, ">= 0.6 of COPY (issues 8, 17)")],
    "ingest_cpu_utilisation_at_max": [("ge", 0.95, ">= 0.95 (issue 17)")],
    "ingest_puback_p50_at_80pct": [("le", 30, "<= 30 ms (issue 17)")],
    "broker_hop_pettracker": [("ratio_ge", 1.0, ">= Mosquitto (issue 8)"),
                              ("ratio_ge", 0.6, ">= 0.6 of Mosquitto (issue 17)")],
    "collars_connected": [("ge", 20000, ">= 20,000 collars (aim 100,000)")],
    "collars_fixes_lost": [("le", 0, "0")],
    "live_latency_half_load_p99": [("le", 10, "<= 10 ms")],
    "history_latest_10_trackers_p99": [("le", 2, "<= 2 ms")],
    "history_24h_p99": [("le", 20, "<= 20 ms")],
    "history_bucket_5m_30d_p99": [("le", 100, "<= 100 ms")],
    "history_summary_30d_p99": [("le", 50, "<= 50 ms (issue 17)")],
    "outage_fixes_lost": [("le", 0, "0")],
}
ORDER = ["ingest", "broker", "live", "collars", "history", "outage", "browser", "fleet", "scaleout"]


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.jsonl"))):
        scenario, i = os.path.basename(path).split(".")[:2]
        with open(path) as f:
            entries = [json.loads(line) for line in f if line.strip().startswith("{")]
        entries += derived(entries)
        runs.setdefault(scenario, []).append(entries)
    results = []
    for scenario in sorted(runs, key=lambda s: ORDER.index(s) if s in ORDER else 99):
        by_name = {}
        for entries in runs[scenario]:
            for e in entries:
                by_name.setdefault(e["name"], []).append(e)
        for name, es in by_name.items():
            es = sorted(es, key=lambda e: e["value"])
            median = dict(es[(len(es) - 1) // 2])
            if len(es) > 1:
                median["runs"] = [e["value"] for e in es]
            median["scenario"] = scenario
            results.append(median)
    return results


def verdict(e):
    texts, mets = [], []
    for op, bound, text in TARGETS.get(e["name"], []):
        v = e.get("ratio") if op == "ratio_ge" else e["value"]
        texts.append(text)
        if v is None:
            mets.append("?")
        else:
            mets.append("yes" if (v >= bound if op in ("ge", "ratio_ge") else v <= bound) else "no")
    return "; ".join(texts), "; ".join(mets)


def derived(entries):
    """Issue 17's figures that ingest.sh reports inside its runs' entries, as rows of their own,
    so each run's value enters the median like any other result."""
    by = {e["name"]: e for e in entries}
    single, rated = by.get("ingest_single_fix_qos1"), by.get("ingest_single_fix_qos1_at_80pct")
    out = []
    if single and "cpu_utilisation_of_2_cores" in single:
        out.append({"name": "ingest_cpu_utilisation_at_max", "value": single["cpu_utilisation_of_2_cores"],
                    "unit": "of 2 cores", "cpu_us_per_fix": single.get("cpu_us_per_fix")})
    if single and rated and "puback_ms_p50" in rated:
        for q in ("p50", "p99"):
            at_max = single[f"puback_ms_{q}"]
            out.append({"name": f"ingest_puback_{q}_at_80pct", "value": round(rated[f"puback_ms_{q}"], 1),
                        "unit": "ms", "baseline_name": f"ingest_puback_{q}_at_max",
                        "baseline_value": round(at_max, 1),
                        "ratio": round(rated[f"puback_ms_{q}"] / at_max, 3) if at_max else None,
                        "fixes_per_second": rated["value"]})
    return out


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    cores = os.cpu_count()
    mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    pg = sh("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1").strip()
    pg = sh(f"{pg}/postgres --version") if pg else "PostgreSQL not found"
    return {
        "cores": cores,
        "memory_gib": mem,
        "cpu": cpu,
        "os": platform.platform(),
        "rustc": sh("rustc --version"),
        "postgres": pg,
        "mosquitto": sh("/usr/sbin/mosquitto -h 2>/dev/null | head -1") or "not installed",
        "commit": sh("git rev-parse --short HEAD"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--half-rate", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--command", default="benchmarks/run")
    ap.add_argument("--started", default="")
    ap.add_argument("--note", default="", help="e.g. 'debug build': printed with the run")
    ap.add_argument("--merge", action="store_true",
                    help="with --write: keep the other scenarios' results from benchmarks/results.json")
    a = ap.parse_args()
    results = load(a.out)
    if a.half_rate:
        single = [e for e in results if e["name"] == "ingest_single_fix_qos1"]
        if not single:
            sys.exit("no ingest result to halve")
        print(round(single[0]["value"] / 2))
        return
    for e in results:
        e["target"], e["met"] = verdict(e)
    m = machine()
    print(json.dumps(results, indent=2))
    if not a.write:
        return
    command, started, note = a.command, a.started, a.note
    if a.merge:
        # Scenarios re-run alone replace their own rows; the rest of the table stays as it was,
        # with the original run's line and a note of this one.
        ran = {e["scenario"] for e in results}
        with open("benchmarks/results.json") as f:
            kept = [e for e in json.load(f) if e.get("scenario") not in ran]
        results = sorted(kept + results,
                         key=lambda e: ORDER.index(e["scenario"]) if e["scenario"] in ORDER else 99)
        with open("benchmarks/run.json") as f:
            previous = json.load(f)
        again = f"{', '.join(sorted(ran))} run alone ({a.command}, started {a.started} at {m['commit']}"
        again += f", {a.note})" if a.note else ")"
        command, started = previous["command"], previous["started"]
        note = f"{previous['note']}; {again}" if previous.get("note") else again
        m = previous["machine"]
    # results.json: one entry per result, as issue 8 specifies; the run's context beside it.
    with open("benchmarks/results.json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open("benchmarks/run.json", "w") as f:
        json.dump({"machine": m, "command": command, "started": started, "note": note}, f, indent=2)
        f.write("\n")
    lines = [
        "<!-- generated by benchmarks/run --write: do not edit by hand -->",
        f"Run: `{command} --write`, started {started}, commit {m['commit']}"
        + (f" ({note})." if note else "."),
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}; "
        f"{m['rustc']}; {m['postgres']} (private cluster, default settings, fsync on); "
        f"{m['mosquitto']}. Database, server and load generator share the same cores.",
        "",
        "| scenario | value | unit | baseline | baseline value | ratio | target | met | runs |",
        "|---|---:|---|---|---:|---:|---|---|---|",
    ]
    for e in results:
        runs = ", ".join(str(v) for v in e.get("runs", []))
        lines.append(
            f"| {e['name']} | {e['value']} | {e['unit']} | {e.get('baseline_name', '')} | "
            f"{e.get('baseline_value', '')} | {e.get('ratio', '')} | {e['target']} | {e['met']} | {runs} |"
        )
    block = "\n".join(lines)
    text = open("BENCHMARKS.md").read()
    new = re.sub(
        r"<!-- suite:begin -->.*<!-- suite:end -->",
        lambda _: "<!-- suite:begin -->\n" + block + "\n<!-- suite:end -->",
        text,
        flags=re.S,
    )
    if new == text and "<!-- suite:begin -->" not in text:
        new = text + "\n<!-- suite:begin -->\n" + block + "\n<!-- suite:end -->\n"
    with open("BENCHMARKS.md", "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
