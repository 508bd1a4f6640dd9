"""Every random number generator a training step touches, as one state dict.

Python's ``random``, NumPy's legacy global generator, torch's CPU generator and the generator of
every CUDA device. A resumed run restores all of them, so dropout masks, augmentations and
shuffles continue as if the process had never stopped.

>>> import torch
>>> state = capture_rng()
>>> a = torch.rand(3)
>>> restore_rng(state)
>>> torch.equal(a, torch.rand(3))
True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from savegame.errors import CheckpointCorruptError
from savegame.messages import warn


def capture_rng() -> dict[str, Any]:
    """The state of every global generator, ready for the checkpoint codec."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    # Asking for CUDA states would initialise CUDA in a CPU-only run; only read them once in use.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back to ``state`` (as returned by :func:`capture_rng`); a state that
    is not one (a damaged or hostile checkpoint) is :class:`CheckpointCorruptError`."""
    for name, restore in (("python", lambda s: random.setstate(_as_python_state(s))),
                          ("numpy", np.random.set_state), ("torch", torch.set_rng_state)):
        try:
            restore(state[name])
        except (TypeError, ValueError, IndexError, KeyError, RuntimeError) as e:
            raise CheckpointCorruptError(
                f"the checkpoint's {name} random state is not one ({type(e).__name__}: {str(e)[:200]}); the "
                "checkpoint was altered or damaged. Use another checkpoint.") from e
    cuda_states = state.get("cuda")
    if cuda_states:
        if not torch.cuda.is_available():
            warn(
                "the checkpoint holds CUDA random states but CUDA is not available here; "
                "GPU randomness (dropout on the GPU) will not continue the saved sequence",
            )
            return
        count = torch.cuda.device_count()
        if count != len(cuda_states):
            warn(
                f"the checkpoint holds random states for {len(cuda_states)} CUDA devices but "
                f"{count} are visible; restoring the first {min(count, len(cuda_states))}",
            )
        for index, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state, index)


def _as_python_state(state: Any) -> tuple:
    # random.setstate wants (version, tuple_of_ints, gauss_next); a JSON round trip may give lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
