"""One worker process of ``savegame sweep run --workers N``: ``python -m savegame.sweeps.subworker SWEEPDIR``.

The parent starts its workers before it opens the study, so that their start-up (Python, torch,
Optuna and the training module: about two seconds here) overlaps the parent's own (the spec, the
storage, the study). Each worker imports all that, then waits for one line on stdin: ``go`` once
the study is open, anything else (or the parent gone: end of file) to exit at once, in silence,
since the parent reports why. Then it reads the spec the sweep folder recorded, the storage URL
from ``SAVEGAME_SWEEP_STORAGE`` (else the folder's journal), its number among the workers from
``SAVEGAME_SWEEP_WORKER`` (a grid or CMA-ES sampler is seeded with the spec's seed plus it) and
its torch thread count from ``SAVEGAME_SWEEP_THREADS``, and runs the worker loop (``worker.work``) on the shared study.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

GO = "go"
STORAGE_ENV = "SAVEGAME_SWEEP_STORAGE"  # the storage URL (not on the command line: it may hold a password)
TRAIN_ENV = "SAVEGAME_SWEEP_TRAIN"  # the spec's "module:function", imported while the parent opens the study


def main(argv: list[str]) -> int:
    from .spec import spec_from_record
    from .study import open_study, optuna_module, read_record
    from .worker import resolve_train, work

    threads = os.environ.get("SAVEGAME_SWEEP_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    optuna_module()
    if os.environ.get(TRAIN_ENV):
        resolve_train(os.environ[TRAIN_ENV])  # imported once: work() finds it in sys.modules
    if sys.stdin.readline().strip() != GO:
        return 0  # the parent could not open the study and says why
    sweep_dir = Path(argv[0])
    spec = spec_from_record(read_record(sweep_dir))
    study = open_study(sweep_dir, spec, storage=os.environ.get(STORAGE_ENV) or None,
                       worker=int(os.environ.get("SAVEGAME_SWEEP_WORKER", "0")))
    work(study, spec, sweep_dir)
    return 0


def _main_reporting(argv: list[str]) -> int:
    """:func:`main`, with a savegame error (a training module that fails to import, a spec the
    study cannot take) as one line naming the worker, not a traceback."""
    from ..errors import SavegameError

    try:
        return main(argv)
    except SavegameError as error:
        print(f"savegame sweep worker {os.environ.get('SAVEGAME_SWEEP_WORKER', '0')}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from ..process_exit import exit_with

    exit_with(_main_reporting(sys.argv[1:]))
