"""Start the real TensorBoard on run folders, with every logged sample kept.

``savegame board`` and the tests use :func:`start_board`: it runs ``python -m tensorboard.main``
in a child process bound to ``127.0.0.1`` (a free port unless one is asked for), waits until the
server answers ``/data/runs``, and returns a :class:`Board` that stops it (SIGTERM, then SIGKILL
after a timeout). Nothing of TensorBoard is imported into this process.

TensorBoard keeps only a random sample of a long series by default (1000 scalars, 10 images, 500
histograms per tag). :data:`SAMPLES_PER_PLUGIN` raises the limit of every plugin to
:data:`KEEP_ALL` points. Not to ``0``: both loaders read ``0`` as "keep all", but each plugin
also passes the same number as the ``downsample`` of its reads, and a read downsampled to 0
points returns nothing (tensorboard 2.21: ``scalars=0`` gives ``[]`` for every scalar series).

A folder of runs (``runs/``, with ``runs/a``, ``runs/b``) is served as ``--logdir``: its runs
are ``a``, ``b``. A folder that holds event files itself (one run), or several folders, are
served through a temporary folder of symbolic links ``{name: folder}`` (removed by ``stop()``),
``name`` being the folder's base name, so the runs are ``name`` and ``name/<sub-run>`` with
either loader. Not ``--logdir_spec``: its fast loader does not exist (tensorboard falls back
to the Python loader), it names a folder's own events ``name/.``, and TensorBoard's hparams
plugin finds no metric of a session whose run is ``.`` or ends in ``/.`` (the metric's group
becomes ``.``, then it looks in run ``./.``). ``--logdir_spec`` is only the fallback where
symbolic links cannot be made.

>>> from savegame.log.board import start_board
>>> with start_board("runs") as board:  # doctest: +SKIP
...     print(board.url)                 # open it in a browser; the block's end stops it
http://127.0.0.1:38291/
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import SavegameError

#: Sample count per tag that no run reaches: "keep every point" (see the module docstring on 0).
KEEP_ALL = 1_000_000_000

#: Every TensorBoard 2.21 plugin that reads sampled series: scalars, images, audio, histograms
#: (and distributions, drawn from the same data), text, pr_curves, mesh, hparams, custom_scalars,
#: graphs. A name no plugin reads is ignored by both loaders.
PLUGINS = ("scalars", "images", "audio", "histograms", "distributions", "text", "pr_curves",
           "mesh", "hparams", "custom_scalars", "graphs")
SAMPLES_PER_PLUGIN = ",".join(f"{name}={KEEP_ALL}" for name in PLUGINS)

LOAD_FAST = ("auto", "true", "false")
_SERVING = re.compile(r"TensorBoard \S+ at (\S+) \(Press CTRL\+C to quit\)")


class BoardError(SavegameError):
    """TensorBoard could not be started: a missing folder, no tensorboard, a server that died.

    ``output`` holds the last lines TensorBoard printed, when it printed any.
    """

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def tensorboard_available() -> bool:
    """Whether ``tensorboard`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def run_names(logdirs: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, Any]
              ) -> dict[str, Path]:
    """``{name: folder}`` for the folders to serve; a mapping keeps its names.

    Names are the folders' base names, made unique with ``-2``, ``-3``; ``/``, ``\\``, and ``:``
    and ``,`` (which ``--logdir_spec`` splits on) become ``_``.

    >>> run_names(["a/runs", "b/runs", "c"])
    {'runs': PosixPath('a/runs'), 'runs-2': PosixPath('b/runs'), 'c': PosixPath('c')}
    """
    if isinstance(logdirs, Mapping):
        pairs = [(str(name), Path(path)) for name, path in logdirs.items()]
    else:
        paths = [logdirs] if isinstance(logdirs, (str, os.PathLike)) else list(logdirs)
        pairs = [(Path(p).resolve().name or "root", Path(p)) for p in paths]
    named: dict[str, Path] = {}
    for name, path in pairs:
        base = re.sub(r"[:,/\\]", "_", name).strip(".") or "run"
        unique, n = base, 1
        while unique in named:
            n += 1
            unique = f"{base}-{n}"
        named[unique] = path
    return named


def check_logdirs(logdirs: Mapping[str, Path]) -> None:
    """Raise :class:`BoardError` (one line, naming the path) unless every folder can be served."""
    if not logdirs:
        raise BoardError("no folder to serve; pass the folder that holds your runs")
    for path in logdirs.values():
        if not path.exists():
            raise BoardError(f"{path} does not exist; pass the folder that holds your runs "
                             "(TensorBoard reads every event file below it)")
        if not path.is_dir():
            raise BoardError(f"{path} is a file, not a folder; pass the folder that holds it")


def has_event_files(folder: Path) -> bool:
    """Whether ``folder`` itself holds TensorBoard event files (it is a run, not runs)."""
    try:
        return any("tfevents" in entry.name and entry.is_file() for entry in os.scandir(folder))
    except OSError:
        return False


def link_folder(logdirs: Mapping[str, Path]) -> Path | None:
    """A new temporary folder with one symbolic link ``name -> folder`` per entry.

    None where links cannot be made (Windows without the privilege); nothing is left behind.
    """
    farm = Path(tempfile.mkdtemp(prefix="savegame-board-"))
    try:
        for name, path in logdirs.items():
            os.symlink(path.resolve(), farm / name, target_is_directory=True)
    except OSError:
        remove_link_folder(farm)
        return None
    return farm


def remove_link_folder(farm: Path) -> None:
    """Remove what :func:`link_folder` made: the links themselves, never what they point to."""
    for entry in farm.iterdir() if farm.is_dir() else ():
        if entry.is_symlink():
            entry.unlink()
    try:
        farm.rmdir()
    except OSError:
        pass


def logdir_flags(logdirs: Mapping[str, Path]) -> tuple[list[str], Path | None]:
    """TensorBoard's flags that serve ``logdirs`` (see the module docstring), and the folder of
    links made for them (None if none; the caller removes it with :func:`remove_link_folder`)."""
    if len(logdirs) == 1:
        path = next(iter(logdirs.values()))
        if not has_event_files(path):
            return ["--logdir", str(path)], None
    farm = link_folder(logdirs)
    if farm is not None:
        return ["--logdir", str(farm)], farm
    for path in logdirs.values():
        if "," in str(path.resolve()):
            raise BoardError(f"{path}: TensorBoard cannot serve a folder with ',' in its path "
                             "beside others here (no symbolic links); serve it alone or rename it")
    # absolute paths start with "/", so a ":" inside one is never read as a name
    spec = ",".join(f"{name}:{path.resolve()}" for name, path in logdirs.items())
    return ["--logdir_spec", spec], None


def tensorboard_command(logdir: list[str], *, port: int = 0, host: str = "127.0.0.1",
                        load_fast: str = "auto", reload_interval: float | None = None,
                        extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of a TensorBoard serving ``logdir`` (its flags, see
    :func:`logdir_flags`), every sample kept.

    >>> cmd = tensorboard_command(["--logdir", "runs"], port=6006)
    >>> cmd[1:]  # doctest: +ELLIPSIS
    ['-m', 'tensorboard.main', '--logdir', 'runs', '--host', '127.0.0.1', '--port', '6006', ...]
    >>> cmd[cmd.index("--samples_per_plugin") + 1].split(",")[:2]
    ['scalars=1000000000', 'images=1000000000']
    """
    if load_fast not in LOAD_FAST:
        raise BoardError(f"load_fast must be one of {', '.join(LOAD_FAST)}, not {load_fast!r}")
    if logdir[0] == "--logdir_spec" and load_fast == "true":
        raise BoardError("TensorBoard's fast loader cannot serve several folders where symbolic "
                         "links cannot be made; pass one folder, or load_fast='auto'")
    cmd = [sys.executable, "-m", "tensorboard.main", *logdir, "--host", host, "--port", str(port),
           f"--load_fast={load_fast}", "--samples_per_plugin", SAMPLES_PER_PLUGIN]
    if reload_interval is not None:
        cmd += ["--reload_interval", str(reload_interval)]
    return cmd + list(extra_args)


class Board:
    """A running TensorBoard child process: ``url``, ``process``, ``stop()``; a context manager."""

    def __init__(self, process: subprocess.Popen, logdirs: Mapping[str, Path],
                 command: list[str], links: Path | None = None) -> None:
        self.process = process
        self.logdirs = dict(logdirs)  # {name: folder} as served
        self.command = command
        self.links = links  # the temporary folder of symbolic links, if any; stop() removes it
        self.url: str = ""
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read_output, name="tensorboard-output",
                                        daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # drained always, so the pipe never fills up
            line = line.rstrip("\n")
            self._lines.append(line)
            if not self._serving.is_set() and (found := _SERVING.search(line)):
                self.url = found.group(1)
                self._serving.set()
        self._serving.set()  # the output ended: wake a waiter, which then sees the exit

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0]) if self.url else 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, lines: int = 40) -> str:
        """The last ``lines`` lines TensorBoard printed (stdout and stderr together)."""
        return "\n".join(list(self._lines)[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait until the server answers ``GET /data/runs``; returns the URL.

        Raises :class:`BoardError` with TensorBoard's last output if it exits or ``timeout``
        seconds pass (and then stops it).
        """
        deadline = time.monotonic() + timeout
        while not self._serving.wait(0.1):
            if time.monotonic() > deadline:
                self._fail(f"TensorBoard did not start serving within {timeout:.0f} s")
        if not self.url:  # its output ended without a serving line: it exited
            self._fail("TensorBoard exited before it served")
        probe = _probe_url(self.url) + "data/runs"
        while True:
            if not self.alive():
                self._fail("TensorBoard exited before it served")
            try:
                with _NO_PROXY.open(probe, timeout=5) as reply:
                    json.load(reply)
                    return self.url
            except (OSError, ValueError):  # not listening yet, or a partial answer
                pass
            if time.monotonic() > deadline:
                self._fail(f"TensorBoard did not answer {probe} within {timeout:.0f} s")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        self.stop()
        output = self.output()
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        code = self.process.returncode
        raise BoardError(f"{what} (exit code {code})" + (f": {last}" if last else ""), output)

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited within ``timeout`` s.

        Returns its exit code (0 after a clean SIGTERM). Safe to call more than once.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2)  # EOF comes once the data server (a grandchild) exits too
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()
        if self.links is not None:
            remove_link_folder(self.links)
            self.links = None
        return self.process.returncode

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return f"Board({self.url or '?'}, pid={self.pid}, {state})"


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # http_proxy skips it


def _probe_url(url: str) -> str:
    """``url`` with a wildcard host (0.0.0.0, ::) replaced by loopback, for requests."""
    return re.sub(r"^http://(0\.0\.0\.0|\[::\])(?=:)", "http://127.0.0.1", url)


def start_board(logdirs: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, Any],
                *, port: int = 0, host: str = "127.0.0.1", load_fast: str = "auto",
                reload_interval: float | None = None, timeout: float = 60.0,
                extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Board:
    """Start TensorBoard on ``logdirs`` and wait until it answers; returns the :class:`Board`.

    ``logdirs``: one folder, several, or ``{name: folder}``. ``port=0`` lets the server pick a
    free port (``board.url`` names it). ``load_fast``: TensorBoard's ``--load_fast`` ("true" is
    the Rust data server, "false" the Python loader, "auto" the first that works). Raises
    :class:`BoardError` for a missing folder, a missing tensorboard or a server that does not
    come up within ``timeout`` seconds (with its last output); the server is stopped then.
    """
    named = run_names(logdirs)
    check_logdirs(named)
    if not tensorboard_available():
        raise BoardError("tensorboard is not installed; pip install tensorboard")
    if load_fast not in LOAD_FAST:
        raise BoardError(f"load_fast must be one of {', '.join(LOAD_FAST)}, not {load_fast!r}")
    flags, links = logdir_flags(named)
    try:
        command = tensorboard_command(flags, port=port, host=host, load_fast=load_fast,
                                      reload_interval=reload_interval, extra_args=extra_args)
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace",
                                   env=child_env)
    except BaseException:
        if links is not None:
            remove_link_folder(links)
        raise
    board = Board(process, named, command, links)
    try:
        board.wait_ready(timeout)
    except BaseException:  # Ctrl-C while it starts, too: never leave the server behind
        board.stop()
        raise
    return board


def serve(board: Board) -> bool:
    """Block until ``board`` exits, or SIGINT or SIGTERM arrives; then stop it.

    Returns True when a signal stopped it, False when the server exited by itself (its code is
    ``board.process.returncode``). While it stops the server, further SIGINT/SIGTERM are
    ignored (the stop itself ends in SIGKILL after a timeout).
    """
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    previous_int = signal.getsignal(signal.SIGINT) if main_thread else None

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    interrupted = False
    try:
        if main_thread:
            signal.signal(signal.SIGTERM, on_signal)
            # Also SIGINT: a process started in the background by a shell without job control
            # inherits SIGINT ignored, and Ctrl-C (or kill -INT) must still stop the server.
            signal.signal(signal.SIGINT, on_signal)
        board.process.wait()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            board.stop()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return interrupted
