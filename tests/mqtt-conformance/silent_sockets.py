#!/usr/bin/env python3
"""Measures what a broker does with sockets that never complete a CONNECT (issue 15's figures).

Opens N sockets to HOST:PORT from --source (a loopback address other than the collar's),
half sending nothing and half only the first five bytes of a CONNECT, then watches them for up to --watch seconds: how many the server closed at once (a
limit), how many later (a handshake timeout) and when, and how many were still open at the end.
With --http it asks GET /healthz every half second meanwhile, and with --collar CLIENT_ID:SECRET
a real MQTT client (mosquitto_pub) connects and publishes at QoS 1 while the sockets are open.

Usage: silent_sockets.py HOST:PORT [-n 2000] [--watch 45] [--http HOST:PORT] [--collar ID:SECRET]
"""

import argparse
import json
import selectors
import socket
import subprocess
import threading
import time
import urllib.request



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mqtt")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--watch", type=float, default=45.0)
    ap.add_argument("--http")
    ap.add_argument("--collar")
    ap.add_argument("--source", default="127.0.0.2", help="address the idle sockets come from")
    args = ap.parse_args()
    host, port = args.mqtt.rsplit(":", 1)
    port = int(port)

    health = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://{args.http}/healthz", timeout=5) as r:
                    health["ok" if r.status == 200 else "failed"] += 1
            except Exception:
                health["failed"] += 1
            stop.wait(0.5)

    if args.http:
        threading.Thread(target=probe, daemon=True).start()

    sel = selectors.DefaultSelector()
    start = time.monotonic()
    open_failed = 0
    for i in range(args.n):
        try:
            s = socket.create_connection((host, port), timeout=5, source_address=(args.source, 0))
        except OSError:
            open_failed += 1
            continue
        if i % 2:
            s.sendall(bytes([0x10, 0x0F, 0x00, 0x04, ord("M")]))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, time.monotonic())
    opened_in = time.monotonic() - start

    collar = {}

    def connect_collar():
        # In its own process: this one holds thousands of sockets, past what select() in a
        # client library's loop can watch.
        cid, secret = args.collar.split(":", 1)
        t0 = time.monotonic()
        done = subprocess.run(
            ["mosquitto_pub", "-h", host, "-p", str(port), "-i", cid, "-u", cid, "-P", secret,
             "-t", f"trackers/{cid}/online", "-m", "online", "-q", "1"],
            capture_output=True, text=True, timeout=30)
        collar["published_qos1"] = done.returncode == 0
        collar["error"] = done.stderr.strip() or None
        collar["seconds"] = round(time.monotonic() - t0, 3)

    collar_thread = None
    if args.collar:
        collar_thread = threading.Thread(target=connect_collar, daemon=True)
        collar_thread.start()

    closed_at = []
    answered = 0
    deadline = start + args.watch
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if data:
                answered += 1
            closed_at.append(time.monotonic() - key.data)
            sel.unregister(s)
            s.close()
    still_open = len(sel.get_map())
    stop.set()
    if collar_thread:
        collar_thread.join()
    at_once = sum(1 for t in closed_at if t < 0.5)
    report = {
        "sockets": args.n,
        "connect_failed": open_failed,
        "opened_in_s": round(opened_in, 2),
        "closed": len(closed_at),
        "closed_within_0.5_s": at_once,
        "closed_later": len(closed_at) - at_once,
        "last_close_after_s": round(max(closed_at), 2) if closed_at else None,
        "answered_before_close": answered,
        "still_open_after_watch": still_open,
        "watch_s": args.watch,
        "healthz": health if args.http else None,
        "collar": collar or None,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
