"""A small WebDriver client (standard library only) for the browser benchmark: Debian's
chromedriver driving headless Debian chromium, the same browser the tests in tests/web_*.rs use.

Chrome DevTools Protocol commands go through chromedriver's `goog/cdp/execute`.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

# The tests' flags (tests/common/browser.rs): headless, nothing reaching other origins, a fresh
# profile per run.
CHROME_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--enable-precise-memory-info",
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Browser:
    def __init__(self, width=1280, height=800, extra_args=()):
        self.profile = tempfile.mkdtemp(prefix="pettracker-chromium-")
        self.port = free_port()
        self.driver = subprocess.Popen(
            [os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        args = CHROME_ARGS + [f"--user-data-dir={self.profile}", f"--window-size={width},{height}"] + list(extra_args)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                        "args": args,
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
            }
        }
        session = self._call("POST", "/session", caps)
        self.session = session["sessionId"]
        # Measuring windows run as async scripts longer than the default 30 s.
        self.cmd("POST", "/timeouts", {"script": 600_000})
        # A window cannot be narrower than Chromium's minimum: phones are emulated.
        self.cdp("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
        })

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return json.load(r).get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def refresh(self):
        """Reloads the page and waits for it (WebDriver's Refresh)."""
        self.cmd("POST", "/refresh", {})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        """`script` gets its arguments and, last, the callback to call with the result."""
        return self.cmd("POST", "/execute/async", {"script": script, "args": list(args)})

    def cdp(self, command, params=None):
        return self.cmd("POST", "/goog/cdp/execute", {"cmd": command, "params": params or {}})

    def find(self, css):
        el = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(el.values()))

    def wait_for(self, script, timeout=60, *args):
        """Polls `return <expression>` until it is truthy; returns it."""
        deadline = time.time() + timeout
        while True:
            value = self.js(f"return {script};", *args)
            if value:
                return value
            if time.time() > deadline:
                raise TimeoutError(f"not within {timeout} s: {script}")
            time.sleep(0.05)

    def type_into(self, css, text):
        self.cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def console(self):
        return self.cmd("POST", "/se/log", {"type": "browser"})

    def close(self):
        try:
            self.cmd("DELETE", "")
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def sign_in(self, app, email, password):
        self.get(app)
        self.wait_for("document.querySelector('[data-testid=email]')")
        self.type_into("[data-testid=email]", email)
        self.type_into("[data-testid=password]", password)
        self.click("[data-testid=sign-in]")
        self.wait_for("document.querySelector('[data-testid=connection-state]')")
