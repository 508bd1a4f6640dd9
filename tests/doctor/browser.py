"""A real headless Chromium driven over the Chrome DevTools Protocol, for the report tests.

Tests import it as ``from browser import ...`` (pytest puts this folder on ``sys.path``). It
needs the ``websocket-client`` package and a ``chromium`` (or Chrome) binary; :func:`find_chromium`
says which, and the test decides whether a missing one skips or fails.

The browser listens on a port it picks itself (``--remote-debugging-port=0``) and writes it to
``<user-data-dir>/DevToolsActivePort``; the test talks to one page through the browser's websocket
with a flattened target session, so no HTTP endpoint is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The browser binary: ``$SAVEGAME_CHROMIUM``, else the first of :data:`CANDIDATES` on PATH."""
    explicit = os.environ.get("SAVEGAME_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless browser process and one page in it. Use as a context manager: leaving it
    kills the browser's whole process group (renderers included)."""

    def __init__(self, binary: str, profile: Path, *, width: int = 1280, height: int = 900) -> None:
        import websocket  # websocket-client

        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._log_file(profile), start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0
        try:
            port, path = self._devtools_address(profile)
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=30,
                                                  suppress_origin=True)
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable", session=self.session)
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                      "deviceScaleFactor": 1, "mobile": False}, session=self.session)
        except BaseException:
            self.close()
            raise

    def _log_file(self, profile: Path):
        # a file, not a pipe: a chatty browser would block on a full pipe nobody reads
        self.log_path = profile.with_name(profile.name + "-chromium.log")
        self._log = open(self.log_path, "wb")
        return self._log

    def _devtools_address(self, profile: Path, timeout: float = 30.0) -> tuple[int, str]:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with code {self.process.returncode} before it "
                                   f"opened its DevTools port:\n{err}")
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                return int(lines[0]), lines[1].strip()
            time.sleep(0.05)
        raise TimeoutError(f"chromium wrote no {port_file} within {timeout:.0f} s")

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._receive(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(f"no answer to {method} within {timeout:.0f} s")

    def _receive(self, deadline: float) -> dict[str, Any]:
        self.ws.settimeout(max(0.05, deadline - time.monotonic()))
        reply = json.loads(self.ws.recv())
        if "method" in reply:
            self.events.append(reply)
        return reply

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no {method} event within {timeout:.0f} s")
            self._receive(deadline)

    def open(self, url: str, timeout: float = 60.0) -> None:
        """Navigate the page and wait for its load event (images decoded by then)."""
        self.events.clear()
        result = self.call("Page.navigate", {"url": url}, session=self.session)
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries seen so far."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return found

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """PNG bytes of ``clip`` (x, y, width, height in CSS pixels), else of the whole page."""
        if clip is None:
            width, height = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            clip = {"x": 0, "y": 0, "width": width, "height": height}
        result = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                      "clip": {**clip, "scale": 1}}, session=self.session)
        return base64.b64decode(result["data"])

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: renderers go too
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
