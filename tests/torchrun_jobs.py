"""Real 2-rank torchrun jobs (gloo, CPU) for the tests: started, signalled, killed as a whole."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DDP_SCRIPT = Path(__file__).parent / "fixtures" / "ddp_script.py"


def torchrun_env():
    """This environment without a torchrun job's variables (a test runner inside one: not ours)."""
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def torchrun(script, *args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(script), *map(str, args)]


def on_two_ranks(tmp_path, source, *args):
    """Run ``source`` as a script on 2 real torchrun ranks (gloo); each rank writes what it found to
    ``<tmp_path>/rank-<r>.txt`` (one file each: their stdout interleaves); returns those texts."""
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(torchrun(script, *args), capture_output=True, text=True, timeout=120, env=torchrun_env())
    assert done.returncode == 0, done.stderr
    return [(tmp_path / f"rank-{rank}.txt").read_text() for rank in (0, 1)]


def run_ddp(run_dir, out, *extra, nproc=2, timeout=300):
    """The DDP fixture run to its end; returns the finished process."""
    done = subprocess.run(torchrun(DDP_SCRIPT, run_dir, out, *extra, nproc=nproc), capture_output=True, text=True,
                          timeout=timeout, env=torchrun_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def start_ddp(run_dir, out, *extra):
    """The DDP fixture started in a session of its own: :func:`kill_job` kills the agent and ranks."""
    for rank in (0, 1):
        Path(f"{out}.rank{rank}.pid").unlink(missing_ok=True)
    return subprocess.Popen(torchrun(DDP_SCRIPT, run_dir, out, *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=torchrun_env(), start_new_session=True)


def kill_job(process):
    """SIGKILL the whole job at once (torchrun's agent and every rank), as a lost machine does."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def rank_pid(out, rank, timeout=60):
    """The pid rank ``rank`` of the DDP fixture wrote at its start."""
    path = Path(f"{out}.rank{rank}.pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.01)
    raise TimeoutError(f"rank {rank} never started")
