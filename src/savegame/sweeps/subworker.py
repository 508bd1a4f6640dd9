"""One worker process of ``savegame sweep run --workers N``: ``python -m savegame.sweeps.subworker SWEEPDIR``.

It reads the spec the sweep folder recorded, the storage URL from ``SAVEGAME_SWEEP_STORAGE``
(else the folder's journal), its number among the workers from ``SAVEGAME_SWEEP_WORKER`` (its
sampler's seed is the spec's plus it) and its torch thread count from ``SAVEGAME_SWEEP_THREADS``, then runs
the worker loop (``worker.work``) on the shared study.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from .runner import STORAGE_ENV
    from .spec import spec_from_record
    from .study import open_study, read_record
    from .worker import work

    sweep_dir = Path(argv[0])
    threads = os.environ.get("SAVEGAME_SWEEP_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    spec = spec_from_record(read_record(sweep_dir))
    study = open_study(sweep_dir, spec, storage=os.environ.get(STORAGE_ENV) or None,
                       worker=int(os.environ.get("SAVEGAME_SWEEP_WORKER", "0")))
    work(study, spec, sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
