"""``savegame board`` binds to 127.0.0.1 unless told otherwise, and says so (issue 16, part 6).

The real command as a process, the real TensorBoard it starts: the sockets its process tree
listens on are read from ``/proc/net/tcp`` and ``tcp6`` (each socket matched to the process by
its inode in ``/proc/PID/fd``), so what is checked is the kernel's view, not a flag.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "log"))

from tbserver import children, free_port, gone, request_json  # noqa: E402

if not Path("/proc/net/tcp").exists():
    pytest.skip("needs Linux /proc/net/tcp to see the listening sockets", allow_module_level=True)

LISTEN = "0A"


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the processes ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if found := re.fullmatch(r"socket:\[(\d+)\]", target):
                inodes.add(found[1])
    sockets = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != LISTEN or fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc shows each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            sockets.append((socket.inet_ntop(family, raw), int(port, 16)))
    return sockets


def tree(pid: int) -> list[int]:
    found = [pid]
    for child in children(pid):
        found += tree(child)
    return found


def other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


class Board:
    """``savegame board FOLDER --port P [args]`` as a process, its output read as it comes."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "savegame.cli", "board", str(folder), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: queue.Queue = queue.Queue()
        self.err: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(self.process.stdout, self.out), daemon=True).start()
        threading.Thread(target=_lines, args=(self.process.stderr, self.err), daemon=True).start()

    def serving_line(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no serving line within {timeout:.0f} s: {seen}")
            if line is None:
                pytest.fail(f"savegame board ended before serving: {seen} {self.stderr()}")
            seen.append(line)
            if "TensorBoard at" in line:
                return line

    def stderr(self) -> str:
        lines = []
        while True:
            try:
                line = self.err.get_nowait()
            except queue.Empty:
                return "".join(lines)
            if line is None:
                return "".join(lines)
            lines.append(line)

    def sockets(self, timeout: float = 30.0) -> list[tuple[str, int]]:
        """Every listening socket of the board's process tree, once its port is among them
        (the fast loader's data server, a grandchild, may come up a little after)."""
        deadline = time.monotonic() + timeout
        while True:
            found = listening(tree(self.process.pid))
            if any(port == self.port for _, port in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        pids = tree(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in pids[1:]:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    from savegame import SummaryWriter

    with SummaryWriter(tmp_path / "run") as writer:
        for step in range(5):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    return tmp_path


def test_board_binds_only_loopback_by_default_and_says_so(logs):
    board = Board(logs)
    try:
        line = board.serving_line()
        assert f"http://127.0.0.1:{board.port}/" in line
        assert "only this machine can reach it" in line and "--host 0.0.0.0" in line
        sockets = board.sockets()
        assert ("127.0.0.1", board.port) in sockets
        # every socket of the tree (TensorBoard's, and its data server's) is on loopback only
        assert sockets and all(address in ("127.0.0.1", "::1") for address, _ in sockets), sockets
        assert isinstance(request_json(f"http://127.0.0.1:{board.port}/data/runs"), list)
        address = other_address()
        if address is not None:  # from the machine's own network address: refused
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, board.port), timeout=5).close()
        assert "warning" not in board.stderr()
    finally:
        board.stop()


def test_board_host_0000_binds_every_address_and_warns(logs):
    board = Board(logs, "--host", "0.0.0.0")
    try:
        line = board.serving_line()
        assert "open to the network" in line and "only this machine" not in line
        assert f"TensorBoard at http://{socket.gethostname()}:{board.port}/ " in line  # an address to open
        warning = board.stderr()
        assert "warning: --host 0.0.0.0 serves the logs to anyone who can reach this machine" in warning
        assert "127.0.0.1" in warning  # and how to keep them here
        assert ("0.0.0.0", board.port) in board.sockets()
        address = other_address()
        if address is not None:  # and the machine's network address answers
            assert isinstance(request_json(f"http://{address}:{board.port}/data/runs"), list)
    finally:
        board.stop()
