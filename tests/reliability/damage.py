"""Damaged files: every class of byte position of a checkpoint flipped or cut, and event files
torn mid-record, then what savegame makes of them.

One small real run folder is made per call (a ``savegame.Run`` with a frozen 1 MiB layer, so
incremental saves hard-link it between checkpoints, and AdamW); each damage case copies it,
damages one file and checks:

* **verify**: ``verify_checkpoint`` (what ``savegame verify`` prints) names a problem for every
  damaged checkpoint and none for an intact one (``savegame verify RUN`` exits 1);
* **load**: ``savegame.load`` of a damaged checkpoint, plain and ``into=`` objects, raises
  savegame's own error (a :class:`~savegame.errors.SavegameError`), never a ``KeyError`` or a
  ``struct.error`` from deep inside, and never returns other data than what was saved;
* **resume**: a ``Run`` on the folder (the user's code: ``Run``, ``track``, train, save) resumes
  from the newest intact checkpoint, with a warning when it had to fall back past a damaged
  one, its step and tensors bit for bit the original's; with none intact it starts fresh or
  raises savegame's error. The run then trains on, and its new checkpoint verifies.

A damage that only touches bytes a checkpoint never reads (the stale tensors of a shared file,
see ``checkpoint/sharing.py``) may be resumed from or loaded, as long as what comes back is the
original bit for bit: verify still names it, since it hashes every byte.

**Shared files.** A copy made like ``cp -a`` keeps the hard links of incremental saves: a shared
file damaged in place is damaged in *every* checkpoint that links it, the one that wrote it
first included. The expectation follows: all of them are damaged (verify names each, resume falls
back past all of them, to the newest checkpoint holding another copy). A copy made like ``cp -r``
(``links=False``) has independent files: the damage stays in the one checkpoint. Both are tried.

Event files (:func:`damaged_event_files`): torn at many points, before and after the size the
newest checkpoint recorded, and with a flipped byte in a record's length, its checksums or its
payload. The doctor's reader, ``savegame ls``/``show`` and a resumed Run must cope (no crash),
and the resumed run's curves must hold every step at most once, every step whose record lies
wholly before the damage exactly once with its original value, and the steps trained again
after the resume exactly once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import savegame
from savegame.checkpoint.store import read_checkpoint, verify_checkpoint
from savegame.errors import SavegameError
from tally import Tally

STEPS = 6  # checkpoints at steps 1..6; the frozen layer changes before save 3: 1-2 and 3-6 share
CRASH_AFTER = 2  # steps logged after the last save, then the process "dies"
UNIT = "damaged files tried"
TORTURE_CASES = 450  # of the ~1,000 torture damages, per seed: about 70 s on 2 busy cores


# -- the run ------------------------------------------------------------------------------------
def _model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 512),
                              torch.nn.Linear(512, 512), torch.nn.Linear(512, 2))
    net[3].requires_grad_(False)  # 1 MiB frozen: incremental saves hard-link it (their minimum)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    return net, opt


_DATA = None


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    global _DATA
    if _DATA is None:
        g = torch.Generator().manual_seed(99)
        _DATA = torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g)
    return _DATA


def _train_step(run: savegame.Run, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = _batch()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    run.step += 1
    run.log("loss/train", loss.detach())  # before the save, as the README asks


class _Crash(Exception):
    """The base run's process dies after logging past its last save."""


def _open_run(folder: Path) -> savegame.Run:
    return savegame.Run(folder, save=savegame.Always(), keep=savegame.KeepAll(), handle_signals=False)


def cut_or_flip(path: Path, kind: str, at: int, bit: int) -> None:
    """Truncate ``path`` to ``at`` bytes (``kind`` "cut"), or flip bit ``bit`` of its byte ``at``."""
    if kind == "cut":
        os.truncate(path, at)
        return
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << bit)]))


def make_run(folder: Path) -> dict[int, Any]:
    """Train the base run in ``folder``: saves at steps 1..STEPS (the frozen layer is changed in
    place before the save of step 3: steps 1-2 share step 1's file, 3-6 step 3's), then
    CRASH_AFTER steps logged but not saved, then a crash. Returns ``{step: state}`` of every
    checkpoint, read verified."""
    net, opt = _model(0)
    run = _open_run(folder)
    with contextlib.suppress(_Crash), run:
        run.track(model=net, optimizer=opt)
        for _ in range(STEPS):
            _train_step(run, net, opt)
            if run.step == 3:
                with torch.no_grad():
                    net[3].weight.mul_(0.5)  # the next save writes the frozen layer again
            run.save()
        for _ in range(CRASH_AFTER):
            _train_step(run, net, opt)
        run.writer.flush()
        raise _Crash
    return {c.step: read_checkpoint(c.path)[0] for c in savegame.checkpoint.store.list_checkpoints(
        folder / "checkpoints")}


def _copy(base: Path, target: Path, *, links: bool) -> None:
    """Copy the run folder: with ``links`` as ``cp -a`` (hard links kept), else as ``cp -r``."""
    if not links:
        shutil.copytree(base, target)
        return
    seen: dict[tuple[int, int], Path] = {}
    for folder, _, files in os.walk(base):
        out = target / Path(folder).relative_to(base)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            source = Path(folder) / name
            st = source.stat()
            if (st.st_dev, st.st_ino) in seen:
                os.link(seen[st.st_dev, st.st_ino], out / name)
            else:
                shutil.copy2(source, out / name)
                seen[st.st_dev, st.st_ino] = out / name


def _equal(a: Any, b: Any) -> bool:
    """Bit for bit: tensors of the same dtype, shape and bytes; everything else ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(_bits(a), _bits(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8) if t.dtype.is_floating_point else t


def _tracked(saved: Any) -> dict[str, Any]:
    return {k: saved[k] for k in ("model", "optimizer")}


# -- damage ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    """One damage: ``kind`` "flip" (bit ``bit`` of the byte at ``at``), "cut" (truncate to ``at``
    bytes) or "delete", to ``file`` of checkpoint ``step``; ``what`` names its class."""

    step: int
    file: str
    kind: str
    at: int = 0
    bit: int = 0
    what: str = ""
    links: bool = True

    def apply(self, run_dir: Path) -> Path:
        path = run_dir / "checkpoints" / f"step-{self.step:06d}" / self.file
        if self.kind == "delete":
            path.unlink()
        else:
            cut_or_flip(path, self.kind, self.at, self.bit)
        return path

    def __str__(self) -> str:
        how = {"flip": f"bit {self.bit} of byte {self.at} flipped", "cut": f"cut to {self.at} bytes",
               "delete": "deleted"}[self.kind]
        copy = "" if self.links else " (a cp -r copy: links broken)"
        return f"step-{self.step:06d}/{self.file} ({self.what}): {how}{copy}"


def _safetensors_classes(path: Path, reads: set[str] | None) -> dict[str, tuple[int, int]]:
    """Byte ranges ``{class: (begin, end)}`` of a safetensors file: the length field, the JSON
    header, the data, the data of ``_savegame`` tensors, of tensors the checkpoint reads, of
    stale ones (``reads``: the names a shared file provides, None for the own file)."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    start = 8 + n
    header = json.loads(blob[8:start])
    classes = {"header length": (0, 8), "header JSON": (8, start), "tensor data": (start, len(blob))}
    for name, entry in header.items():
        if name == "__metadata__" or entry["data_offsets"][0] == entry["data_offsets"][1]:
            continue
        begin, end = (start + o for o in entry["data_offsets"])
        label = "_savegame tensor data" if name.startswith("_savegame") else \
            "data read by this checkpoint" if reads is not None and name in reads else \
            "stale data (not read by this checkpoint)" if reads is not None else None
        if label is not None and label not in classes:
            classes[label] = (begin, end)
    return classes


def _json_classes(path: Path, scale: str) -> dict[str, tuple[int, int]]:
    blob = path.read_bytes()
    classes = {"JSON": (0, len(blob))}
    keys = ("_savegame", "files", "shared", "size", "hash") if scale == "ci" else \
        ("_savegame", "files", "tensor_hashes", "shared", "step", "size", "hash", "rng", "loaders", "log")
    for key in keys:
        at = blob.find(f'"{key}"'.encode())
        if at >= 0:
            classes[f'JSON at "{key}"'] = (at, min(len(blob), at + len(key) + 12))
    return classes


def _points(what: str, begin: int, end: int, scale: str, rng: random.Random) -> list[int]:
    """Representative byte positions of a range: first, middle and last (ci; the middle alone of
    a key's neighbourhood, first and last of the length field), or many more (torture)."""
    points = {begin, (begin + end) // 2, end - 1}
    if scale == "ci" and what.startswith("JSON at"):
        points = {(begin + end) // 2}
    elif scale == "ci" and what == "header length":
        points = {begin, end - 1}
    if scale == "torture":
        points |= {rng.randrange(begin, end) for _ in range(2)}
    return sorted(points)


def _cuts(path: Path, classes: dict[str, tuple[int, int]], scale: str, rng: random.Random) -> list[int]:
    """Lengths to cut a file to: 0, half, one byte short, and the middle of each class of a
    safetensors file (mid length field, mid header, mid data ...); many more in torture."""
    size = path.stat().st_size
    cuts = {0, size // 2, size - 1}
    for what, (begin, end) in classes.items():
        if not what.startswith("JSON"):
            cuts.add((begin + end) // 2)
    if scale == "torture":
        cuts |= {rng.randrange(0, size) for _ in range(3)}
    return sorted(c for c in cuts if 0 <= c < size)


def checkpoint_damages(base: Path, scale: str, rng: random.Random) -> list[Damage]:
    """The damage cases: for the newest checkpoint and two older ones (every checkpoint, more
    positions, a seeded sample of TORTURE_CASES at "torture" scale), each file's byte classes
    flipped and cut, and each file deleted; shared files with and without their hard links."""
    steps = [STEPS] if scale == "ci" else list(range(1, STEPS + 1))
    if scale == "ci":
        steps += [4, 1]  # a shared file of an older checkpoint; the file that steps 1-2 share
    damages: list[Damage] = []
    for step in steps:
        folder = base / "checkpoints" / f"step-{step:06d}"
        manifest = json.loads((folder / "manifest.json").read_text())
        for name in sorted(os.listdir(folder)):
            path = folder / name
            shared = (manifest["files"].get(name) or {}).get("shared")
            if name.endswith(".safetensors"):
                classes = _safetensors_classes(path, set(shared["tensors"]) if shared else None)
            else:
                classes = _json_classes(path, scale)
            if scale == "ci" and step != STEPS:  # the older checkpoints: the classes, one flip each
                classes = {k: v for k, v in classes.items() if "JSON at" not in k}
            owner = (step in (1, 3) and name == "tensors.safetensors")  # the file later ones link
            for links in (True, False) if shared or owner else (True,):
                full = scale == "torture" or step == STEPS and links  # every position, or one per class
                for what, (begin, end) in classes.items():
                    positions = _points(what, begin, end, scale, rng) if full else [(begin + end) // 2]
                    for at in positions:
                        bit = rng.randrange(8) if scale == "torture" else at % 8
                        damages.append(Damage(step, name, "flip", at, bit, f"{what} of {_kind(name)}", links))
                for at in _cuts(path, classes, scale, rng) if full else [path.stat().st_size // 2]:
                    damages.append(Damage(step, name, "cut", at, what=f"truncated {_kind(name)}", links=links))
                damages.append(Damage(step, name, "delete", what=f"missing {_kind(name)}", links=links))
    if scale == "torture" and len(damages) > TORTURE_CASES:  # a seeded share: another seed, other positions
        damages = [damages[i] for i in sorted(rng.sample(range(len(damages)), TORTURE_CASES))]
    return damages


def _kind(name: str) -> str:
    return "a shared file" if name.startswith("shared-") else name


# -- the checks -----------------------------------------------------------------------------------
def _damaged_steps(run_dir: Path, damage: Damage) -> set[int]:
    """The checkpoints the damage reached: the one damaged, and with links kept every checkpoint
    holding a link to the same file (the file system shares the bytes)."""
    if damage.kind == "delete" or not damage.links:
        return {damage.step}
    target = (run_dir / "checkpoints" / f"step-{damage.step:06d}" / damage.file).stat()
    hit = set()
    for folder in (run_dir / "checkpoints").iterdir():
        for file in folder.iterdir():
            st = file.stat()
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                hit.add(int(folder.name.split("-")[1]))
    return hit


def _check_verify(run_dir: Path, damaged: set[int], label: str, tally: Tally, *, cli: bool) -> None:
    for folder in sorted((run_dir / "checkpoints").iterdir()):
        step = int(folder.name.split("-")[1])
        problems = verify_checkpoint(folder)
        if step in damaged and not problems:
            tally.fail("other", f"{label}: verify found nothing wrong with step {step}")
        elif step not in damaged and problems:
            tally.fail("other", f"{label}: verify called intact step {step} damaged: {problems[0][:200]}")
    if not cli:
        return
    from savegame.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", str(run_dir), "--json"])
    if code != 1:
        tally.fail("other", f"{label}: `savegame verify` exited {code}, not 1: {err.getvalue()[-300:]}")


def _check_load(path: Path, original: Any, label: str, tally: Tally) -> None:
    """``savegame.load`` of a damaged checkpoint: savegame's error, or the original bit for bit."""
    for into in (False, True):
        net, opt = _model(1)
        try:
            got = savegame.load(path, into={"model": net, "optimizer": opt} if into else None)
        except SavegameError:
            continue
        except Exception as e:  # noqa: BLE001 - any other error is what this looks for
            tally.fail("other", f"{label}: savegame.load{'(into=...)' if into else ''} raised "
                       f"{type(e).__name__}: {str(e)[:200]}")
            continue
        wrong = not _equal(_tracked(got), _tracked(original)) if not into else \
            not _equal({"model": net.state_dict()}, {"model": original["model"]})
        if wrong:
            tally.fail("corrupt_resume", f"{label}: savegame.load{'(into=...)' if into else ''} returned "
                       "data that differs from what was saved, without an error")


def _resume(run_dir: Path) -> tuple[int | None, dict | None, BaseException | None, list[str], Path | None]:
    """Rerun the user's code on ``run_dir``: ``(resumed step, tracked state after track(),
    savegame error or None, warnings, the checkpoint the run then saved)``."""
    net, opt = _model(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run = _open_run(run_dir)
            with run:
                run.track(model=net, optimizer=opt)
                step = run.resumed_from.step if run.resumed_from is not None else None
                state = {"model": {k: v.clone() for k, v in net.state_dict().items()},
                         "optimizer": _clone(opt.state_dict())}
                _train_step(run, net, opt)
                saved = run.save()
        except SavegameError as e:
            return None, None, e, [str(w.message) for w in caught], None
    return step, state, None, [str(w.message) for w in caught], saved.path if saved else None


def _clone(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_clone(v) for v in tree]
    return tree


def _check_resume(run_dir: Path, originals: dict[int, Any], damaged: set[int], label: str, tally: Tally) -> None:
    intact = [s for s in originals if s not in damaged]
    expected = max(intact) if intact else None
    try:
        step, state, error, said, saved = _resume(run_dir)
    except Exception as e:  # noqa: BLE001
        tally.fail("other", f"{label}: the resume crashed with {type(e).__name__}: {str(e)[:300]}")
        return
    if error is not None:
        if expected is not None:
            tally.fail("other", f"{label}: the resume raised instead of falling back to step {expected}: "
                       f"{str(error)[:200]}")
        return
    if step is None:
        if expected is not None:
            tally.fail("data_lost", f"{label}: the resume started fresh though step {expected} is intact")
        return
    if not _equal(state, _tracked(originals[step])):
        tally.fail("corrupt_resume", f"{label}: resumed from step {step}, but its tensors differ from the saved ones")
        return
    if step < (expected or 0):
        tally.fail("data_lost", f"{label}: resumed from step {step}, not the newest intact step {expected}")
    fell_back = step < max(originals)
    if fell_back and not any("damaged" in s for s in said):
        tally.fail("other", f"{label}: fell back to step {step} without a warning")
    if saved is None or verify_checkpoint(saved):
        tally.fail("other", f"{label}: the resumed run's next checkpoint is missing or damaged")


def _check_readers(run_dir: Path, label: str, tally: Tally) -> None:
    """``savegame ls`` and ``show`` on the damaged folder: an answer or savegame's error, no traceback."""
    from savegame.cli import main

    for argv in (["ls", str(run_dir.parent)], ["show", str(run_dir)]):
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                main(argv)
        except Exception as e:  # noqa: BLE001
            tally.fail("other", f"{label}: `savegame {argv[0]}` crashed with {type(e).__name__}: {str(e)[:200]}")


@contextlib.contextmanager
def _quiet():
    """No "savegame: resumed ..." line per case (the level is put back after)."""
    logger = logging.getLogger("savegame")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@_quiet()
def damaged_checkpoints(workdir: Path, scale: str, seed: int) -> Tally:
    """Every damage of :func:`checkpoint_damages`, each on a fresh copy of one base run."""
    rng = random.Random(seed)
    tally = Tally("damaged files: checkpoint", UNIT)
    base = Path(workdir) / "base"
    originals = make_run(base)
    damages = checkpoint_damages(base, scale, rng)
    tally.notes.append(f"{len(damages)} damages: manifest, COMMIT, safetensors length/header/data, "
                       "_savegame tensors, shared files with and without their links; flips, cuts, deletes")
    for i, damage in enumerate(damages):
        run_dir = Path(workdir) / f"case-{i:04d}" / "run"
        _copy(base, run_dir, links=damage.links)
        damaged = _damaged_steps(run_dir, damage)
        damage.apply(run_dir)
        tally.tried += 1
        label = str(damage)
        cli = damage.kind == "delete" or i % 3 == 0  # `savegame verify` on a share of the cases
        _check_verify(run_dir, damaged, label, tally, cli=cli)
        for step in sorted(damaged):
            _check_load(run_dir / "checkpoints" / f"step-{step:06d}", originals[step], label, tally)
        if i % 4 == 0:
            _check_readers(run_dir, label, tally)
        _check_resume(run_dir, originals, damaged, label, tally)
        shutil.rmtree(run_dir.parent)
    return tally


# -- event files ----------------------------------------------------------------------------------
def _records(blob: bytes) -> list[tuple[int, int]]:
    """``[(begin, end)]`` of each record of an undamaged event file."""
    out, pos = [], 0
    while pos + 12 <= len(blob):
        end = pos + 12 + int.from_bytes(blob[pos:pos + 8], "little") + 4
        out.append((pos, end))
        pos = end
    return out


def _raw_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``loss/train`` as savegame's reader finds it in the folder's event files, in file order,
    nothing dropped (a step written twice is there twice)."""
    from savegame.doctor.curves import _event_files
    from savegame.doctor.eventscan import scan_scalars

    found: dict[str, tuple[list[int], list[float]]] = {}
    for path in _event_files(run_dir):
        scan_scalars(path.read_bytes(), found, lambda record: None)
    steps, values = found.get("loss/train", ([], []))
    return list(zip(steps, values))


def _tensorboard_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The same through TensorBoard's own file loader (the oracle), file by file in name order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from savegame.doctor.curves import _event_files

    from tensorboard.util.tensor_util import make_ndarray

    out = []
    for path in _event_files(run_dir):
        for event in EventFileLoader(str(path)).Load():  # it turns simple values into tensors
            out += [(event.step, v.simple_value if v.WhichOneof("value") == "simple_value" else
                     float(make_ndarray(v.tensor))) for v in event.summary.value if v.tag == "loss/train"]
    return out


@dataclass(frozen=True)
class EventDamage:
    kind: str  # "cut" or "flip"
    at: int
    bit: int
    what: str

    def __str__(self) -> str:
        how = f"cut to {self.at} bytes" if self.kind == "cut" else f"bit {self.bit} of byte {self.at} flipped"
        return f"event file ({self.what}): {how}"


def event_damages(blob: bytes, recorded: int, scale: str, rng: random.Random) -> list[EventDamage]:
    """Cuts inside records before and after ``recorded`` (the size the newest checkpoint saw),
    and flips in a record's length, length checksum, payload and payload checksum."""
    records = _records(blob)
    chosen = records if scale == "torture" else [records[0], records[len(records) // 2], records[-1]]
    chosen += [r for r in records if r[0] < recorded <= r[1] or r[0] == recorded][:2]
    damages = []
    for begin, end in dict.fromkeys(chosen):
        where = "after the checkpoint" if begin >= recorded else "before the checkpoint"
        cuts = {begin + 4, begin + 12, (begin + end) // 2, end - 1}
        if scale == "torture":
            cuts |= {rng.randrange(begin, end) for _ in range(3)}
        damages += [EventDamage("cut", at, 0, f"mid-record, {where}") for at in sorted(cuts)]
        for part, (lo, hi) in {"length": (begin, begin + 8), "length CRC": (begin + 8, begin + 12),
                               "payload": (begin + 12, end - 4), "payload CRC": (end - 4, end)}.items():
            positions = [rng.randrange(lo, hi) for _ in range(3 if scale == "torture" else 1)]
            damages += [EventDamage("flip", at, rng.randrange(8), f"{part}, {where}") for at in positions]
    damages.append(EventDamage("cut", 0, 0, "emptied"))
    return damages


@_quiet()
def damaged_event_files(workdir: Path, scale: str, seed: int) -> Tally:
    """Torn and flipped event files under a run that resumes: readers cope, curves stay whole."""
    rng = random.Random(seed)
    tally = Tally("damaged files: event file", UNIT)
    base = Path(workdir) / "events-base"
    originals = make_run(base)
    [event_file] = [p for p in base.iterdir() if "tfevents" in p.name]
    blob = event_file.read_bytes()
    recorded = originals[STEPS]["_savegame"]["log"]["files"][event_file.name]
    reference = dict(_raw_curve(base))  # steps 1..STEPS + CRASH_AFTER, as the base run logged them
    damages = event_damages(blob, recorded, scale, rng)
    tally.notes.append(f"{len(damages)} damages: cuts mid-record before and after the checkpoint's "
                       "size, flips in length, its CRC, payload, its CRC")
    for i, damage in enumerate(damages):
        run_dir = Path(workdir) / f"events-{i:04d}" / "run"
        shutil.copytree(base, run_dir)
        cut_or_flip(run_dir / event_file.name, damage.kind, damage.at, damage.bit)
        tally.tried += 1
        label = str(damage)
        _check_event_readers(run_dir, label, tally)
        _check_event_resume(run_dir, blob, recorded, damage, reference, label, tally)
        shutil.rmtree(run_dir.parent)
    return tally


def _check_event_readers(run_dir: Path, label: str, tally: Tally) -> None:
    from savegame.doctor.curves import read_run

    try:
        read_run(run_dir)
        _raw_curve(run_dir)
    except Exception as e:  # noqa: BLE001
        tally.fail("other", f"{label}: the doctor's reader crashed with {type(e).__name__}: {str(e)[:200]}")
    _check_readers(run_dir, label, tally)


def _intact_steps(blob: bytes, damage: EventDamage, recorded: int) -> set[int]:
    """The steps whose records the damage cannot have touched: those wholly before it, within
    what the checkpoint recorded (the rest is cut off by the resume and trained again)."""
    limit = min(damage.at, recorded)
    kept = blob[:max(end for begin, end in [(0, 0)] + _records(blob) if end <= limit)]
    found: dict[str, tuple[list[int], list[float]]] = {}
    from savegame.doctor.eventscan import scan_scalars

    scan_scalars(kept, found, lambda record: None)
    return set(found.get("loss/train", ([], []))[0])


def _check_event_resume(run_dir: Path, blob: bytes, recorded: int, damage: EventDamage,
                        reference: dict[int, float], label: str, tally: Tally) -> None:
    net, opt = _model(1)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            run = _open_run(run_dir)
            with run:
                run.track(model=net, optimizer=opt)
                if run.resumed_from is None or run.resumed_from.step != STEPS:
                    tally.fail("other", f"{label}: did not resume from step {STEPS}")
                    return
                for _ in range(CRASH_AFTER):
                    _train_step(run, net, opt)
                    run.save()
    except Exception as e:  # noqa: BLE001
        tally.fail("other", f"{label}: the resumed run failed with {type(e).__name__}: {str(e)[:300]}")
        return
    if damage.kind == "cut" and damage.at < recorded and not any("recorded" in str(w.message) for w in said):
        tally.fail("other", f"{label}: the resume cut the torn file back without a warning")
    curve, oracle = _raw_curve(run_dir), _tensorboard_curve(run_dir)
    if curve != oracle:
        tally.fail("other", f"{label}: savegame's reader and TensorBoard's disagree: {curve} vs {oracle}")
    steps = [s for s, _ in curve]
    if len(steps) != len(set(steps)):
        tally.fail("corrupt_resume", f"{label}: a step is in the curves twice: {steps}")
    redone = set(range(STEPS + 1, STEPS + CRASH_AFTER + 1))
    for step in sorted(_intact_steps(blob, damage, recorded) | redone):
        if step not in steps:
            tally.fail("data_lost", f"{label}: step {step} is gone from the curves: {steps}")
    for step, value in curve:
        if step in reference and value != reference[step]:
            tally.fail("corrupt_resume", f"{label}: step {step} shows {value}, it was {reference[step]}")

