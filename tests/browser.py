"""Load pages of the built book in headless Chromium over the DevTools protocol; report what failed to load."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No background traffic: this machine's network is closed, and the book must not need one.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--allow-file-access-from-files"]

# Run in the page once it has loaded: images that did not decode, and whether MathJax typeset anything.
REPORT = """new Promise(done => {
  const finish = () => setTimeout(() => done(JSON.stringify({
    images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
    math: document.querySelectorAll('mjx-container').length,
    title: document.title})), 1500);
  document.readyState === 'complete' ? finish() : window.addEventListener('load', finish);
})"""


def connect(url: str) -> websocket.WebSocket:
    """A DevTools WebSocket to url, sent with no Origin header, as a client that is not a web page.

    websocket-client sends `Origin: http://<host>` by default, and Chromium 150 refuses any Origin it was not
    told to allow (403). Sending none changes only this client; `--remote-allow-origins` would instead widen
    what the browser accepts, for every page, and needs the port before Chromium has chosen it.
    """
    return websocket.create_connection(url, timeout=30, suppress_origin=True)


class Chromium:
    """One headless Chromium; `load(path)` opens a page and returns its report and every URL it requested."""

    def __init__(self):
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
        # Chromium's helper processes may still write to the profile as it closes: don't fail on cleanup.
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if m:
                self.host = m.group(1)
                return
        self.close()
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def load(self, path: Path) -> tuple[dict, list[str]]:
        req = urllib.request.Request(f"http://{self.host}/json/new?about:blank", method="PUT")
        target = json.load(urllib.request.urlopen(req, timeout=10))
        ws = connect(target["webSocketDebuggerUrl"])
        try:
            ids = iter(range(1, 10**6))
            requested: list[str] = []
            events: list[str] = []

            def receive(until):
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("method") == "Network.requestWillBeSent":
                        requested.append(msg["params"]["request"]["url"])
                    events.append(msg.get("method"))
                    if until(msg):
                        return msg

            def call(method, **params):
                i = next(ids)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                msg = receive(lambda m: m.get("id") == i)
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

            call("Network.enable")
            call("Page.enable")
            call("Page.navigate", url=path.resolve().as_uri())
            if "Page.loadEventFired" not in events:  # evaluate in the new page, not the blank one it replaces
                receive(lambda m: m.get("method") == "Page.loadEventFired")
            result = call("Runtime.evaluate", expression=REPORT, awaitPromise=True, returnByValue=True)
            return json.loads(result["result"]["value"]), requested
        finally:
            ws.close()
            urllib.request.urlopen(urllib.request.Request(f"http://{self.host}/json/close/{target['id']}"),
                                   timeout=10).read()

    def screenshot(self, path: Path, out: Path, width: int = 1280, height: int = 1600) -> None:
        """A PNG of the page, for a person to look at."""
        flags = [f for f in FLAGS if not f.startswith("--remote-debugging")]
        subprocess.run([CHROMIUM, *flags, f"--window-size={width},{height}", f"--screenshot={out}",
                        f"--user-data-dir={self.profile.name}/shot", path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=60)

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and all its helpers
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":  # python tests/browser.py _build/html: screenshots of every page into _build/shots
    import sys

    html = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    shots = html.parent / "shots"
    shots.mkdir(exist_ok=True)
    with Chromium() as c:
        for page in sorted(html.rglob("*.html")):
            if "_static" in page.parts or page.name in ("search.html", "genindex.html") or page.parent == html:
                continue
            report, _ = c.load(page)
            bad = [i["src"] for i in report["images"] if not i["ok"]]
            out = shots / (page.relative_to(html).as_posix().replace("/", "_") + ".png")
            c.screenshot(page, out)
            print(f"{page.relative_to(html)}: {len(report['images'])} images, {len(bad)} broken, "
                  f"{report['math']} formulas -> {out}")
