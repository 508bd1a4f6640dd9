"""``savegame export RUN --best|--latest|--step N -o FILE``: one checkpoint's model weights as a
plain ``.safetensors`` file that ``safetensors.torch.load_file`` reads.

    savegame export runs/demo --best -o digits.safetensors     # the one `ls` and `show` call best
    savegame export runs/demo --step 480 -o w.safetensors --key ema
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..io import export_weights
from ._common import CliError
from .runs import best_of, run_checkpoints, run_dir, run_info
from .tables import metrics_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="the run folder")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true", help="the best checkpoint by the run's metric")
    which.add_argument("--latest", action="store_true", help="the newest checkpoint")
    which.add_argument("--step", type=int, metavar="N", help="the checkpoint of step N")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the .safetensors file to write")
    parser.add_argument("--key", default=None, help="which tracked object holds the weights "
                        "(default: the model; e.g. --key model)")


def run(args: argparse.Namespace, console: Console) -> int:
    run = run_dir(args.run)
    output = Path(args.output)  # main() checked that it can be written
    info = run_info(run)
    checkpoints = run_checkpoints(run)
    if not checkpoints:
        raise CliError(f"{run} has no committed checkpoints yet; train until it saves one")
    if args.latest:
        chosen = checkpoints[-1]
    elif args.step is not None:
        chosen = next((c for c in checkpoints if c.step == args.step), None)
        if chosen is None:
            steps = ", ".join(str(c.step) for c in checkpoints)
            raise CliError(f"{run} has no checkpoint at step {args.step}; it has steps {steps}")
    else:
        best = best_of(run, info, checkpoints)  # the one `savegame ls` and `show` name
        if best is None:
            raise CliError(
                f"{run} records no metric to pick the best checkpoint by (run.json has no ranking "
                "nor best, and no manifest records a keep policy's metric); use --latest or --step N")
        if best["step"] is None:
            raise CliError(f"{run} has no checkpoint with a finite {best['metric']} to rank "
                           "(missing, NaN or inf never ranks); use --latest or --step N")
        chosen = next(c for c in checkpoints if c.step == best["step"])
    try:
        out = export_weights(chosen.path, output, key=args.key)
    except KeyError as error:  # which tracked object holds the weights is ambiguous or wrong
        raise CliError(f"{error.args[0]} On the command line: --key NAME.") from None
    console.print(f"exported the weights of {chosen.path} (step {chosen.step}, epoch "
                  f"{chosen.epoch}, {metrics_text(chosen.metrics)}) to {out}", highlight=False,
                  markup=False, soft_wrap=True)
    return 0
