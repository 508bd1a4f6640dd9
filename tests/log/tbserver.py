"""A real TensorBoard on a free localhost port, and JSON helpers for its HTTP API.

Tests import it as ``from tbserver import ...`` (pytest puts this folder on ``sys.path``).
The server is :func:`savegame.log.board.start_board`, the one ``savegame board`` runs, so every
test here also runs with its ``--samples_per_plugin``. Both loaders can be asked for:
``load_fast="true"`` (the Rust data server) and ``load_fast="false"`` (the Python loader).

The HTTP shapes (tensorboard 2.21, the same for both loaders):

* ``GET /data/runs``: a JSON list of run names (``"a"``, ``"a/sub"``), sorted by the server
* ``GET /data/plugins_listing``: ``{plugin: {"enabled": bool, ...}}``
* ``GET /data/plugin/scalars/tags``: ``{run: {tag: {"displayName", "description"}}}``
* ``GET /data/plugin/scalars/scalars?run=R&tag=T``: ``[[wall_time, step, value], ...]``
  (400 or 404 until the series is loaded)
* ``POST /data/plugin/hparams/session_groups`` and ``/data/plugin/hparams/experiment``: the
  body is a JSON ``ListSessionGroupsRequest`` / ``GetExperimentRequest`` (camelCase field
  names, enums as names) sent with ``Content-Type: application/json``: with curl's default
  form type the server reads an empty body and answers 400. ``sliceSize`` must be set (its
  default 0 returns no group) and ``allowedStatuses`` must list every status (sessions with
  another status are dropped). A GET with ``?request=<the JSON>`` works too.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from savegame.log.board import Board, start_board

T = TypeVar("T")

#: ids for parametrizing over both loaders: {"rust": "true", "python": "false"}
LOADERS = {"rust": "true", "python": "false"}

ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

#: a ListSessionGroupsRequest that lists every session group (as the hparams dashboard asks)
SESSION_GROUPS_REQUEST: dict[str, Any] = {
    "experimentName": "",
    "allowedStatuses": ALL_STATUSES,
    "colParams": [],
    "aggregationType": "AGGREGATION_AVG",
    "startIndex": 0,
    "sliceSize": 1000,
}
EXPERIMENT_REQUEST: dict[str, Any] = {"experimentName": "", "includeMetrics": True}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class HttpError(AssertionError):
    """The server answered with an HTTP error; ``status`` and the body are in the message."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {body[:500]}")
        self.status = status


def request_json(url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """GET ``url`` (or POST ``body`` as JSON) and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as error:
        raise HttpError(url, error.code, error.read().decode("utf-8", "replace")) from None


class TBServer:
    """A started TensorBoard (``board``) with one method per API route used by the tests."""

    def __init__(self, board: Board, load_fast: str) -> None:
        self.board = board
        self.load_fast = load_fast
        self.url = board.url

    def get(self, route: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return request_json(f"{self.url}{route.lstrip('/')}{query}")

    def post(self, route: str, body: Any) -> Any:
        return request_json(f"{self.url}{route.lstrip('/')}", body)

    def runs(self) -> list[str]:
        return self.get("data/runs")

    def plugins_listing(self) -> dict[str, Any]:
        return self.get("data/plugins_listing")

    def scalar_tags(self) -> dict[str, dict[str, Any]]:
        return self.get("data/plugin/scalars/tags")

    def scalars(self, run: str, tag: str) -> list[list[float]]:
        """``[[wall_time, step, value], ...]`` of one series."""
        return self.get("data/plugin/scalars/scalars", run=run, tag=tag)

    def session_groups(self, **overrides: Any) -> dict[str, Any]:
        return self.post("data/plugin/hparams/session_groups",
                         {**SESSION_GROUPS_REQUEST, **overrides})

    def experiment(self, **overrides: Any) -> dict[str, Any]:
        return self.post("data/plugin/hparams/experiment", {**EXPERIMENT_REQUEST, **overrides})

    def wait_for(self, probe: Callable[[], T], what: str, timeout: float = 30.0) -> T:
        """Call ``probe`` until it returns something truthy; HTTP errors count as "not yet".

        The loaders read event files in the background after the server answers, so data
        shows up some time after start. Fails with ``what`` and the server's output.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = probe()
                if last:
                    return last
            except HttpError as error:
                last = error
            if not self.board.alive():
                pytest.fail(f"TensorBoard exited while waiting for {what}:\n{self.board.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout:.0f} s for {what} (load_fast={self.load_fast}); "
                            f"last: {last!r}\nTensorBoard output:\n{self.board.output()}")
            time.sleep(0.2)

    def wait_scalars(self, run: str, tag: str, count: int, timeout: float = 30.0
                     ) -> list[list[float]]:
        """The series once it has (at least) ``count`` points."""
        return self.wait_for(lambda: (points := self.scalars(run, tag)) and
                             len(points) >= count and points,
                             f"{count} points of {run}/{tag}", timeout)

    def wait_session_groups(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The session groups once there are (at least) ``count`` with metric values."""
        def probe() -> list[dict[str, Any]] | None:
            groups = self.session_groups().get("sessionGroups", [])
            ready = [g for g in groups if g.get("metricValues")]
            return groups if len(ready) >= count else None
        return self.wait_for(probe, f"{count} hparams session groups", timeout)


@contextlib.contextmanager
def tensorboard(logdir: str | Path, load_fast: str = "true", reload_interval: float = 1.0,
                timeout: float = 60.0) -> Iterator[TBServer]:
    """A real TensorBoard on ``logdir`` on a free 127.0.0.1 port; stopped when the block ends."""
    board = start_board(logdir, port=0, host="127.0.0.1", load_fast=load_fast,
                        reload_interval=reload_interval, timeout=timeout)
    try:
        yield TBServer(board, load_fast)
    finally:
        board.stop()


def children(pid: int) -> list[int]:
    """The child pids of ``pid`` (Linux /proc), [] when it has none or is gone."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")
