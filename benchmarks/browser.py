#!/usr/bin/env python3
"""The web app in a real browser (benchmarks/browser.sh runs this): headless Debian chromium
through chromedriver, the same browser and flags as tests/web_*.rs, against `pettracker serve`.

  paint    time to first map paint with N pets: from the start of a page load (signed in, the
           session resumed from its cookie) to the frame after every pet's marker was added;
           baseline: GET /api/v1/trackers for the same pets, the request the page waits for.
  live     a fleet publishing every 5 s: frames per second over a window, and update lag, from
           the fix's device time to the animation frame that moved its marker; baseline: the
           same fixes' arrival on the page's WebSocket (what the server and network take).
  history  a long history of one pet drawn: JavaScript heap after drawing (after a forced
           garbage collection) against the heap before, and time to draw against the time of
           the API request the screen makes.
Prints one JSON object per result (see lib.sh's `emit`).
"""
import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from webdriver import Browser  # noqa: E402

PASSWORD = "correct horse battery"


def out(name, value, unit, **extra):
    row = {"name": name, "value": round(value, 3) if value < 100 else round(value), "unit": unit}
    row.update(extra)
    print(json.dumps(row), flush=True)


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round((len(values) - 1) * p)))]


def api_token(port, email):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", "/api/v1/auth/login", json.dumps({"email": email, "password": PASSWORD}),
                 {"content-type": "application/json"})
    return json.loads(conn.getresponse().read())["access_token"]


def timed_get(port, token, path, runs):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times, size = [], 0
    for i in range(runs + 2):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"})
        r = conn.getresponse()
        body = r.read()
        t1 = time.perf_counter()
        if r.status != 200:
            sys.exit(f"{path}: {r.status} {body[:200]!r}")
        size = len(body)
        if i >= 2:
            times.append((t1 - t0) * 1000)
    return statistics.median(times), size


def main_thread(b):
    """Seconds the renderer's main thread has spent so far: in all, in script, layout, style."""
    b.cdp("Performance.enable")
    m = {x["name"]: x["value"] for x in b.cdp("Performance.getMetrics")["metrics"]}
    return {"task": m["TaskDuration"], "script": m["ScriptDuration"], "layout": m["LayoutDuration"],
            "style": m["RecalcStyleDuration"]}


def heap(b):
    b.cdp("Performance.enable")
    b.cdp("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in b.cdp("Performance.getMetrics")["metrics"]}
    return metrics["JSHeapUsedSize"] / 2**20, metrics.get("Nodes", 0)


def paint(a):
    b = Browser()
    try:
        b.sign_in(a.app, a.email, PASSWORD)
        b.wait_for(f"document.querySelectorAll('[data-testid=pet-marker]').length >= {a.pets}")
        times = []
        for _ in range(a.runs):
            b.refresh()
            t = b.wait_for("window.__pettracker && window.__pettracker.metrics.firstPetsPaint", 60)
            n = b.js("return document.querySelectorAll('[data-testid=pet-marker]').length;")
            if n < a.pets:
                sys.exit(f"only {n} of {a.pets} markers at first paint")
            times.append(t)
        # Where the last load's time went (milliseconds since navigation start).
        steps = b.js("""
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const end = (s) => { const e = res.find((r) => r.name.includes(s)); return e ? Math.round(e.responseEnd) : null; };
            return {html: Math.round(nav.responseEnd), dom_content_loaded: Math.round(nav.domContentLoadedEventEnd),
                    session_resumed: end('/auth/session/refresh'), pets_loaded: end('/api/v1/trackers'),
                    files: res.filter((r) => !r.name.includes('/api/')).length};
        """)
        # The frame rate of the same page with nothing moving: the machine's own ceiling.
        idle = b.js_async(FPS_SCRIPT, 10)
        out("browser_idle_fps", idle["frames"] / idle["secs"], "frames/s", pets=a.pets,
            worst_frame_ms=round(idle["worst"], 1), note="the pets page, no live updates")
        token = api_token(a.port, a.email)
        api_ms, size = timed_get(a.port, token, "/api/v1/trackers", max(a.runs, 20))
        out(f"browser_first_paint_{a.pets}_pets", statistics.median(times), "ms",
            baseline_name=f"api_trackers_{a.pets}_pets", baseline_value=round(api_ms, 2),
            ratio=round(statistics.median(times) / api_ms, 1), runs=[round(t) for t in times],
            last_load_ms=steps,
            note="navigation start to the frame after all markers were added; session resumed from its cookie")
    finally:
        check_console(b)
        b.close()


FPS_SCRIPT = """
    const secs = arguments[0], done = arguments[arguments.length - 1];
    let frames = 0, worst = 0, last = performance.now();
    const start = last;
    function tick(now) {
      frames += 1; worst = Math.max(worst, now - last); last = now;
      if (now - start < secs * 1000) requestAnimationFrame(tick);
      else done({frames, secs: (now - start) / 1000, worst});
    }
    requestAnimationFrame(tick);
"""


def live(a):
    b = Browser()
    try:
        b.sign_in(a.app, a.email, PASSWORD)
        b.wait_for(f"document.querySelectorAll('[data-testid=pet-marker]').length >= {a.pets}", 120)
        # Let every collar report once more, then measure a window.
        time.sleep(6)
        b.js("const p = window.__pettracker; p.metrics.lagMs.length = 0; p.metrics.arrivalLagMs.length = 0;"
             "Object.assign(p.frameWork, {frames: 0, totalMs: 0, maxMs: 0});")
        heap_before, nodes = heap(b)
        before = main_thread(b)
        result = b.js_async(FPS_SCRIPT, a.seconds)
        after = main_thread(b)
        # Share of the window the page's main thread was busy, and with what.
        busy = {k: round((after[k] - before[k]) / result["secs"], 3) for k in after}
        m = b.js("const p = window.__pettracker; return {lag: p.metrics.lagMs, arrival: p.metrics.arrivalLagMs, work: p.frameWork};")
        fps = result["frames"] / result["secs"]
        lag, arrival = m["lag"], m["arrival"]
        if not lag:
            sys.exit("no live updates reached the map during the window")
        common = {"pets": a.pets, "seconds": round(result["secs"], 1), "updates": len(lag),
                  "updates_per_second": round(len(lag) / result["secs"], 1)}
        work = m["work"]
        idle = a.idle_fps
        out(f"browser_live_{a.pets}_pets_fps", fps, "frames/s", worst_frame_ms=round(result["worst"], 1),
            baseline_name="browser_idle_fps", baseline_value=idle, ratio=round(fps / idle, 2) if idle else None,
            main_thread_busy=busy, update_frames=work["frames"],
            update_ms_per_frame_mean=round(work["totalMs"] / max(work["frames"], 1), 2),
            update_ms_per_frame_max=round(work["maxMs"], 1),
            js_heap_mib=round(heap_before, 1), dom_nodes=nodes, **common)
        for p, q in (("p50", 0.5), ("p99", 0.99)):
            v, base = pct(lag, q), pct(arrival, q)
            out(f"browser_live_{a.pets}_pets_lag_{p}", v, "ms",
                baseline_name=f"browser_live_{a.pets}_pets_arrival_{p}", baseline_value=round(base, 1),
                ratio=round(v / base, 2) if base else None,
                note="fix device time to the frame that moved the marker; baseline: to the WebSocket message",
                **common)
    finally:
        check_console(b)
        b.close()


def history(a):
    b = Browser()
    try:
        b.sign_in(a.app, a.email, PASSWORD)
        b.js("location.hash = '#/apps'")
        time.sleep(1)
        before, _ = heap(b)
        b.js(f"location.hash = '#/history/{a.tracker}'")
        # The screen first shows today; once that is done, the long range.
        b.wait_for("performance.getEntriesByName('pettracker-history-drawn').length", 300)
        t0 = b.js("performance.clearMarks(); return performance.now();")
        b.click(f"[data-testid=range-{a.days}-days]")
        b.wait_for("performance.getEntriesByName('pettracker-history-drawn').length"
                   " && performance.getEntriesByName('pettracker-track-drawn').length", 300)
        drawn = b.js("return performance.getEntriesByName('pettracker-track-drawn')[0].startTime;") - t0
        with_summary = b.js("return performance.getEntriesByName('pettracker-history-drawn')[0].startTime;") - t0
        points = int(b.js("return document.querySelector('[data-testid=history-status]').dataset.points;"))
        after, nodes = heap(b)
        # The request the screen made, alone.
        token = api_token(a.port, a.email)
        now = time.time()
        frm = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now - (a.days - 1) * 86400))
        to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))
        bucket = b.js("return document.querySelector('[data-testid=history-status]').textContent;")
        width = bucket.split("every ")[1].split(",")[0] if "every " in bucket else "5m"
        path = f"/api/v1/trackers/{a.tracker}/positions?" + urllib.parse.urlencode(
            {"from": frm, "to": to, "bucket": width, "simplify": 5})
        api_ms, size = timed_get(a.port, token, path, 10)
        summary_ms, _ = timed_get(a.port, token, f"/api/v1/trackers/{a.tracker}/summary?"
                                  + urllib.parse.urlencode({"from": frm, "to": to}), 3)
        common = {"days": a.days, "fixes_stored": a.fixes, "points_drawn": points, "bucket": width,
                  "api_response_bytes": size}
        out(f"browser_history_{a.days}d_heap", after, "MiB", baseline_name="browser_heap_before_history",
            baseline_value=round(before, 1), ratio=round(after / before, 2), dom_nodes=nodes,
            note="JS heap after a forced GC, the track drawn", **common)
        out(f"browser_history_{a.days}d_draw", drawn, "ms", baseline_name=f"api_history_{a.days}d",
            baseline_value=round(api_ms, 1), ratio=round(drawn / api_ms, 2),
            note="click to the track drawn; baseline: the track's API request alone", **common)
        out(f"browser_history_{a.days}d_summary", with_summary, "ms",
            baseline_name=f"api_summary_{a.days}d", baseline_value=round(summary_ms, 1),
            ratio=round(with_summary / summary_ms, 2),
            note="click to the daily summary shown (requested beside the track); baseline: its API request alone",
            **common)
    finally:
        check_console(b)
        b.close()


def check_console(b):
    errors = [e for e in b.console() if e["level"] == "SEVERE"]
    for e in errors:
        print(f"browser console: {e['message'][:300]}", file=sys.stderr)
    if errors:
        sys.exit("errors in the browser console")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["paint", "live", "history"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--email", required=True)
    ap.add_argument("--pets", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--tracker", default="")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--fixes", type=int, default=0)
    ap.add_argument("--idle-fps", type=float, default=0, help="browser_idle_fps of the paint run")
    a = ap.parse_args()
    a.app = f"http://127.0.0.1:{a.port}/"
    {"paint": paint, "live": live, "history": history}[a.what](a)


if __name__ == "__main__":
    main()
