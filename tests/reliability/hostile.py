"""Hostile input: checkpoint folders, run folders, logdirs and sweep specs from someone else,
treated as an attacker's. Every crafted checkpoint carries consistent hashes (hashes are not
secrets: :func:`reseal` recomputes each one the manifest and COMMIT hold), so only the hostile
part itself can stop it.

Each scenario is ``(workdir, scale, seed) -> Tally`` (``scale``: "ci" or "torture"), called by
``test_hostile.py`` and by the long runner. An attempt goes right when savegame refuses with its
own error (or, where the hostile part is harmless, loads), and goes wrong when a pickle payload
runs (it would create a marker file), a file outside the folder is opened (an audit hook watches
every ``open``), a secret's bytes show up, a write lands outside the intended folder, a huge
allocation is tried (the attempts run under ``RLIMIT_AS``), or any other exception escapes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import xxhash

from tally import Tally

UNIT = "hostile inputs tried"
SECRET = b"HOSTILE-SECRET-7f3a"  # the bytes of every file outside the folder an attack aims at

# -- watching opens ---------------------------------------------------------------------------
_WATCHED: set[str] = set()  # real paths that must never be opened
_OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _WATCHED or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    try:
        real = os.path.realpath(os.fsdecode(args[0]))
    except (ValueError, OSError):
        return
    if real in _WATCHED:
        _OPENED.append(real)


_hooked: list[bool] = []


@contextlib.contextmanager
def watching(*paths: Path):
    """Record every open of ``paths`` (by real path) inside the block: ``yield`` the list."""
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked.append(True)
    _WATCHED.update(os.path.realpath(p) for p in paths)
    _OPENED.clear()
    try:
        yield _OPENED
    finally:
        _WATCHED.clear()


class Boom:
    """Unpickling one creates ``marker``: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- crafting checkpoints ---------------------------------------------------------------------
def reseal(ckpt: Path, manifest: Any = None, *, raw: bytes | None = None, rehash: bool = True) -> None:
    """Write ``manifest`` (or the ``raw`` bytes) as the checkpoint's manifest with every hash made
    consistent: each listed tensor file's size, hash and piece hashes (when its header parses),
    then COMMIT's size and hash of the manifest."""
    from savegame.checkpoint.tensor_hash import hash_file, hash_tensors

    if raw is None:
        if manifest is None:
            manifest = json.loads((ckpt / "manifest.json").read_bytes())
        files = manifest.get("files") if isinstance(manifest, dict) else None
        for name, entry in (files.items() if isinstance(files, dict) and rehash else ()):
            file = ckpt / name if isinstance(name, str) and isinstance(entry, dict) else None
            if file is None or not file.is_file() or "/" in name or name.startswith("."):
                continue
            found = hash_file(file)
            entry["size"], entry["hash"] = found.size, found.hash
            if "tensor_hashes" in entry:
                with contextlib.suppress(Exception):
                    entry["tensor_hashes"] = hash_tensors(file)
        raw = json.dumps(manifest).encode()
    (ckpt / "manifest.json").unlink(missing_ok=True)
    (ckpt / "manifest.json").write_bytes(raw)
    (ckpt / "COMMIT").unlink(missing_ok=True)
    (ckpt / "COMMIT").write_text(json.dumps({"manifest.json": {
        "size": len(raw), "hash": f"xxh3_128:{xxhash.xxh3_128_hexdigest(raw)}"}}))


def manifest_of(ckpt: Path) -> dict:
    return json.loads((ckpt / "manifest.json").read_bytes())


def safetensors_bytes(entries: dict, data: bytes = b"") -> bytes:
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data


class Bench:
    """A work folder with one real run (two checkpoints, the second incremental) to copy and
    damage, a secret file outside it, and the bookkeeping of one scenario."""

    def __init__(self, workdir: Path, tally: Tally) -> None:
        import torch

        import savegame

        self.root, self.tally = Path(workdir), tally
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker = self.root / "payload-ran"
        self.secret_dir = self.root / "outside"
        self.secret_dir.mkdir(exist_ok=True)
        self.secret = self.secret_dir / "secret.safetensors"  # a valid tensor file, the victim's
        self.secret.write_bytes(safetensors_bytes(
            {"w": {"dtype": "U8", "shape": [len(SECRET)], "data_offsets": [0, len(SECRET)]}}, SECRET))
        self.secret_json = self.secret_dir / "secret.json"
        self.secret_json.write_bytes(b'{"secret": "' + SECRET + b'"}')
        self.template = self.root / "template-run"
        if not self.template.exists():
            torch.manual_seed(0)
            model = torch.nn.Linear(300, 200)  # 240 KB: big enough for the incremental save to share it
            with savegame.Run(self.template, handle_signals=False, config={"lr": 0.1}) as run:
                run.track(model=model)
                for epoch in run.epochs(2):
                    for _ in run.iterate(range(2)):
                        if epoch == 1:
                            with torch.no_grad():
                                model.bias.add_(1.0)  # the weight stays equal: shared at the second save
                        run.log("loss/train", 1.0 / (run.step + 1))
                    run.save(metrics={"loss/val": 1.0 / (epoch + 1)})
        self.checkpoints = sorted((self.template / "checkpoints").glob("step-*"))
        self.plain = self.root / "template-plain"
        if not self.plain.exists():
            savegame.save(self.plain, {"model": torch.nn.Linear(4, 2), "step": 3, "note": "hi"})
        self.count = 0

    def fresh_run(self) -> Path:
        self.count += 1
        run = self.root / f"run-{self.count:04d}"
        shutil.copytree(self.template, run, symlinks=True)
        return run

    def fresh_plain(self) -> Path:
        self.count += 1
        path = self.root / f"ckpt-{self.count:04d}"
        shutil.copytree(self.plain, path, symlinks=True)
        return path

    # -- judging one attempt --------------------------------------------------------------
    def attempt(self, what: str, fn: Callable[[], Any], *, must_refuse: bool = True,
                allowed: tuple[type[BaseException], ...] = (), refused: Callable[[Any], bool] | None = None) -> None:
        """Run ``fn`` once and judge it. Right: a savegame error (or one of ``allowed``); or, unless
        ``must_refuse``, success; ``refused(result)`` says whether a success is a refusal (a Run
        that set the checkpoint aside). Wrong: a payload ran, a watched file opened, the secret in
        the result or the error, any other exception."""
        from savegame.errors import SavegameError

        self.tally.tried += 1
        self.marker.unlink(missing_ok=True)
        out = io.StringIO()
        with watching(self.secret, self.secret_json) as opened, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result, error = fn(), None
            except (SavegameError, *allowed) as e:
                result, error = None, e
            except BaseException as e:  # noqa: B036 - anything else is what this suite looks for
                self.tally.fail("other", f"{what}: {type(e).__name__}: {str(e)[:300]}")
                return
        if self.marker.exists():
            self.tally.fail("code_executed", f"{what}: the pickle payload ran")
        if opened:
            self.tally.fail("other", f"{what}: opened {opened[0]}, outside the folder")
        shown = out.getvalue() + (str(error) if error else "") + _text(result)
        if SECRET.decode() in shown:
            self.tally.fail("other", f"{what}: the secret outside the folder showed up")
        if error is None and must_refuse and not (refused is not None and refused(result)):
            self.tally.fail("corrupt_resume", f"{what}: accepted ({_text(result)[:200]})")


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        import torch

        if isinstance(value, dict):
            return repr({k: (v.tolist() if isinstance(v, torch.Tensor) and v.numel() < 64 else v)
                         for k, v in value.items()})
        return repr(value)[:10_000]
    except Exception:  # noqa: BLE001 - only for the secret check
        return ""


def _cli(*argv: str) -> Callable[[], int]:
    def call() -> int:
        from savegame.cli import main

        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = e.code
        if code not in (0, 1, 2):
            raise AssertionError(f"exit code {code}")
        return code
    return call


def _resume(run_dir: Path, hostile: Path) -> Callable[[], Any]:
    """Resume ``run_dir`` (its newest checkpoint the hostile one): returns the step resumed from,
    or None; a checkpoint set aside as damaged is a refusal."""
    def call() -> Any:
        import torch

        import savegame

        with savegame.Run(run_dir, handle_signals=False) as run:
            run.track(model=torch.nn.Linear(300, 200))
            for _ in run.epochs(3):
                for _ in run.iterate(range(1)):
                    pass
                break
            return run.resumed_from.path if run.resumed_from else None
    return call


def _not_from(hostile: Path) -> Callable[[Any], bool]:
    return lambda resumed: resumed is None or Path(resumed).name != hostile.name


def entry_points(bench: Bench, what: str, make: Callable[[], Path], *, in_run: bool,
                 must_refuse: bool = True) -> None:
    """Attack every reader with the checkpoint ``make()`` crafts (a fresh copy each time):
    ``savegame.load``, a Run's resume (when ``in_run``), ``savegame verify/show/export/ls``."""
    import savegame

    path = make()
    bench.attempt(f"{what}: savegame.load", lambda: savegame.load(path), must_refuse=must_refuse)
    path = make()
    bench.attempt(f"{what}: savegame verify", _cli("verify", str(path)), must_refuse=False)
    path = make()
    run_dir = path.parent.parent if in_run else path.parent
    bench.attempt(f"{what}: savegame export", _cli("export", str(run_dir), "--latest", "-o",
                                                   str(bench.root / f"export-{bench.count}.safetensors")),
                  must_refuse=False)
    if in_run:
        path = make()
        bench.attempt(f"{what}: savegame show", _cli("show", str(path.parent.parent), "--json"), must_refuse=False)
        bench.attempt(f"{what}: savegame ls", _cli("ls", str(path.parent.parent.parent), "--json"), must_refuse=False)
        path = make()
        bench.attempt(f"{what}: Run resume", _resume(path.parent.parent, path), must_refuse=must_refuse,
                      refused=_not_from(path))


def newest(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


# -- the scenarios ----------------------------------------------------------------------------
def pickle_payloads(workdir: Path, scale: str, seed: int) -> Tally:
    """Pickles posing as a checkpoint or as files inside one never run."""
    import torch

    import savegame

    tally = Tally("hostile input: pickle payloads", UNIT)
    bench = Bench(workdir, tally)
    bomb = Boom(bench.marker)
    files = {"bomb.pt": lambda p: torch.save({"model": bomb}, p),
             "bomb.pkl": lambda p: p.write_bytes(pickle.dumps(bomb, protocol=2)),
             "bomb.ckpt": lambda p: p.write_bytes(pickle.dumps({"state_dict": bomb}, protocol=5))}
    for name, write in files.items():
        path = bench.root / name
        write(path)
        bench.attempt(f"{name}: savegame.load", lambda: savegame.load(path))
        bench.attempt(f"{name}: import_weights", lambda: savegame.import_weights(path))
        bench.attempt(f"{name}: Run(resume=)", lambda: savegame.Run(bench.fresh_run(), resume=path,
                                                                     handle_signals=False).finish())
        bench.attempt(f"{name}: savegame verify", _cli("verify", str(path)), must_refuse=False)
        bench.attempt(f"{name}: savegame export", _cli("export", str(path), "--latest", "-o",
                                                       str(bench.root / "x.safetensors")), must_refuse=False)
    tally.notes.append("torch.save / pickle files as a checkpoint, as a tensor file, inside the state tree")

    def as_tensor_file(kind: str) -> Callable[[], Path]:
        def make() -> Path:
            path = newest(bench.fresh_run())
            files[kind](path / "tensors.safetensors")
            reseal(path)
            return path
        return make

    for kind in files:
        entry_points(bench, f"{kind} as tensors.safetensors", as_tensor_file(kind), in_run=True)

    payload = base64.b64encode(pickle.dumps(bomb)).decode()

    def in_state(where: str) -> Callable[[], Path]:
        def make() -> Path:
            path = newest(bench.fresh_run())
            m = manifest_of(path)
            own = m["state"]["_savegame"]
            if where == "extras":
                m["state"]["extras"] = {"blob": {"$bytes": payload}}
            elif where == "rng.python":
                own["rng"]["python"] = {"$bytes": payload}
            elif where == "rng.numpy":
                own["rng"]["numpy"] = {"$tuple": ["MT19937", {"$bytes": payload}, 0, 0, 0.0]}
            elif where == "np object":
                m["state"]["extras"] = {"x": {"$np": "O", "value": payload}}
            elif where == "ndarray object":
                m["state"]["extras"] = {"x": {"$ndarray": "model/weight", "dtype": "|O"}}
            elif where == "config":
                own["config"] = {"$bytes": payload}
            reseal(path, m)
            return path
        return make

    for where in ("extras", "rng.python", "rng.numpy", "np object", "ndarray object", "config"):
        entry_points(bench, f"pickle bytes in {where}", in_state(where), in_run=True, must_refuse=False)

    def beside() -> Path:  # a pickle listed in the manifest as one of the checkpoint's files
        path = newest(bench.fresh_run())
        torch.save({"x": bomb}, path / "optimizer.pt")
        m = manifest_of(path)
        m["files"]["optimizer.pt"] = {"size": 0, "hash": ""}
        reseal(path, m)
        return path

    entry_points(bench, "optimizer.pt listed beside the tensors", beside, in_run=True, must_refuse=False)
    rounds = 1 if scale == "ci" else 3
    for _ in range(rounds - 1):
        for kind in files:
            entry_points(bench, f"{kind} as tensors.safetensors (again)", as_tensor_file(kind), in_run=True)
    return tally


def path_traversal(workdir: Path, scale: str, seed: int) -> Tally:
    """No read outside the folder: through the manifest's file names or through symbolic links."""
    tally = Tally("hostile input: paths out of the folder", UNIT)
    bench = Bench(workdir, tally)
    secret = bench.secret
    rel = os.path.relpath(secret, newest(bench.template))

    def named(name_of: Callable[[Path], str], *, shared: bool = False, mkdir: str | None = None) -> Callable[[], Path]:
        def make() -> Path:
            path = newest(bench.fresh_run())
            if mkdir:
                (path / mkdir).mkdir()
            m = manifest_of(path)
            name = name_of(path)
            entry = {"size": len(secret.read_bytes()), "hash": "", "tensor_hashes": {}}
            if shared:
                entry["shared"] = {"from": "step-000001", "tensors": ["w"]}
            m["files"][name] = entry
            # the hashes of the secret, as an attacker who knows it would write them
            from savegame.checkpoint.tensor_hash import hash_file, hash_tensors
            found = hash_file(secret)
            entry["size"], entry["hash"], entry["tensor_hashes"] = found.size, found.hash, hash_tensors(secret)
            m["state"]["extras"] = {"stolen": {"$tensor": "w"}}
            reseal(path, m, rehash=False)
            return path
        return make

    attacks = {
        "../ in a file name": named(lambda p: rel),
        "an absolute file name": named(lambda p: str(secret)),
        "shared-../ (a folder named shared-..)": named(lambda p: "shared-../../" + rel, shared=True,
                                                       mkdir="shared-.."),
        "shared- file name with ../": named(lambda p: "shared-0000/../" + rel, shared=True, mkdir="shared-0000"),
    }

    def linked(name: str, target: Path) -> Callable[[], Path]:
        def make() -> Path:
            path = newest(bench.fresh_run())
            if name == "tensors.safetensors" or name.startswith("shared-"):
                m = manifest_of(path)
                (path / name).unlink(missing_ok=True)
                os.symlink(target, path / name)
                if name not in m["files"]:
                    m["files"][name] = {"size": 0, "hash": "", "tensor_hashes": {},
                                        "shared": {"from": "step-000001", "tensors": ["w"]}}
                    m["state"]["extras"] = {"stolen": {"$tensor": "w"}}
                reseal(path, m)  # consistent: the hashes of what the link points at
            else:  # manifest.json, COMMIT: link them after sealing
                reseal(path)
                (path / name).unlink()
                os.symlink(target, path / name)
            return path
        return make

    attacks["tensors.safetensors linked outside"] = linked("tensors.safetensors", secret)
    attacks["a shared- file linked outside"] = linked("shared-00000000deadbeef.safetensors", secret)
    attacks["manifest.json linked outside"] = linked("manifest.json", bench.secret_json)
    attacks["COMMIT linked outside"] = linked("COMMIT", bench.secret_json)
    attacks["tensors.safetensors linked by a relative path"] = linked(
        "tensors.safetensors", Path(os.path.relpath(secret, newest(bench.template))))
    for what, make in attacks.items():
        entry_points(bench, what, make, in_run=True)

    def shared_from_outside() -> Path:  # an incremental save's record naming a checkpoint outside
        run = bench.fresh_run()
        path = newest(run)
        m = manifest_of(path)
        for name, entry in m["files"].items():
            if "shared" in entry:
                entry["shared"]["from"] = str(bench.secret_dir)
        reseal(path, m)
        return path

    entry_points(bench, "shared.from naming a folder outside", shared_from_outside, in_run=True, must_refuse=False)

    # a FIFO outside, linked in: opening it would hang (the attempt runs with a timeout)
    fifo = bench.secret_dir / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    for name in ("tensors.safetensors", "manifest.json"):
        path = linked(name, fifo)()
        bench.tally.tried += 1
        done = _with_timeout(lambda: _quiet_load(path), 20)
        if done is _HUNG:
            tally.fail("other", f"a FIFO linked in as {name}: savegame.load hung (it opened the FIFO)")
        elif isinstance(done, BaseException) and not _savegame_error(done):
            tally.fail("other", f"a FIFO linked in as {name}: {type(done).__name__}: {done}")
    if scale == "torture":
        rng = random.Random(seed)
        for i in range(20):  # random depths of ../
            depth = rng.randint(1, 8)
            entry_points(bench, f"../ x{depth}", named(lambda p, d=depth: "../" * d + "outside/secret.safetensors"),
                         in_run=True)
    tally.notes.append("../ and absolute names, shared-.. folders, links out for every file, a FIFO")
    return tally


_HUNG = object()


def _savegame_error(e: BaseException) -> bool:
    from savegame.errors import SavegameError

    return isinstance(e, SavegameError)


def _quiet_load(path: Path) -> Any:
    import savegame

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return savegame.load(path)


def _with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()``'s result or exception, or ``_HUNG`` if it runs past ``seconds`` (a daemon thread
    is left blocked)."""
    box: list[Any] = [_HUNG]

    def run() -> None:
        try:
            box[0] = fn()
        except BaseException as e:  # noqa: B036 - handed to the caller
            box[0] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        # unblock it: open the FIFO's other end so its open returns, then end it
        return _HUNG
    return box[0]


# -- huge sizes, under RLIMIT_AS --------------------------------------------------------------
def huge_sizes(workdir: Path, scale: str, seed: int) -> Tally:
    """Huge or negative sizes, shapes and offsets: each reader runs in a child process whose
    address space is capped at what it uses plus 1.5 GiB, so a huge allocation fails there."""
    tally = Tally("hostile input: huge sizes, shapes, offsets", UNIT)
    workdir.mkdir(parents=True, exist_ok=True)
    child = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                            f"import hostile; hostile._huge_child({str(workdir)!r}, {scale!r}, {seed})"],
                           capture_output=True, text=True, timeout=300)
    try:
        got = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tally.tried += 1
        tally.fail("other", f"the child process died (exit {child.returncode}): {child.stderr[-2000:]}")
        return tally
    tally.tried, tally.notes = got["tried"], got["notes"]
    for kind, what in got["failures"]:
        tally.fail(kind, what)
    return tally


def _address_space_cap() -> None:
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + (3 << 29)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _huge_child(workdir: str, scale: str, seed: int) -> None:
    import torch

    import savegame
    from savegame.checkpoint import store

    tally = Tally("huge", UNIT)
    bench = Bench(Path(workdir), tally)
    _ = torch.empty(1 << 20)  # warm the allocator before the cap
    _address_space_cap()
    f32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    headers = {
        "shape [2**40]": {"model/weight": {**f32, "shape": [2 ** 40], "data_offsets": [0, 2 ** 42]}},
        "shape [2**40] over a small span": {"model/weight": {**f32, "shape": [2 ** 40]}},
        "a negative dim": {"model/weight": {**f32, "shape": [-2], "data_offsets": [0, -8]}},
        "negative offsets": {"model/weight": {**f32, "data_offsets": [-8, 0]}},
        "offsets past the end": {"model/weight": {**f32, "data_offsets": [2 ** 62, 2 ** 62 + 8]}},
        "offsets past 2**64": {"model/weight": {**f32, "data_offsets": [2 ** 70, 2 ** 70 + 8]}},
        "an empty tensor of huge dims": {"model/weight": {**f32, "shape": [0, 2 ** 62, 2 ** 62], "data_offsets": [0, 0]}},
        "dims whose product wraps int64": {"model/weight": {**f32, "shape": [2 ** 32, 2 ** 32, 0], "data_offsets": [0, 0]}},
        "a float dim": {"model/weight": {**f32, "shape": [2.0]}},
        "a bool dim": {"model/weight": {**f32, "shape": [True, True]}},
        "shape as a string": {"model/weight": {**f32, "shape": "22"}},
        "a huge string dim": {"model/weight": {**f32, "shape": ["9" * 5000]}},
        "an unknown dtype": {"model/weight": {**f32, "dtype": "F128"}},
    }
    for what, entries in headers.items():
        def make(entries=entries) -> Path:
            path = bench.fresh_plain()
            (path / "tensors.safetensors").write_bytes(safetensors_bytes(entries, bytes(8)))
            m = manifest_of(path)
            m["state"]["model"] = {"weight": {"$tensor": "model/weight"}}
            reseal(path, m)
            return path
        entry_points(bench, what, make, in_run=False)
    # the 8-byte header length itself
    for what, n in {"a header length of 2**63": 2 ** 63, "a header length of 2**64-1": 2 ** 64 - 1,
                    "a header length just under the cap": 99_999_999}.items():
        def make(n=n) -> Path:
            path = bench.fresh_plain()
            (path / "tensors.safetensors").write_bytes(n.to_bytes(8, "little") + b"{}      ")
            reseal(path)
            return path
        entry_points(bench, what, make, in_run=False)
    # the manifest's own numbers
    def manifest_numbers(edit: Callable[[dict], None]) -> Callable[[], Path]:
        def make() -> Path:
            path = bench.fresh_plain()
            m = manifest_of(path)
            edit(m)
            reseal(path, m, rehash=False)
            return path
        return make

    entry = lambda m: m["files"]["tensors.safetensors"]  # noqa: E731
    numbers = {
        "a file size of 2**70": lambda m: entry(m).update(size=2 ** 70),
        "a negative file size": lambda m: entry(m).update(size=-1),
        "piece_bytes of 1": lambda m: entry(m)["tensor_hashes"].update(piece_bytes=1),
        "piece_bytes of 2**80": lambda m: entry(m)["tensor_hashes"].update(piece_bytes=2 ** 80),
        "a negative piece_bytes": lambda m: entry(m)["tensor_hashes"].update(piece_bytes=-64),
        "a step of 10**400": lambda m: m.update(step=10 ** 400),
        "a $size of [2**62]*8": lambda m: m["state"].update(extras={"$size": [2 ** 62] * 8}),
        "a $np of 10**400": lambda m: m["state"].update(x={"$np": "int64", "value": 10 ** 400}),
        "a $bytes of 50 MB of base64": lambda m: m["state"].update(x={"$bytes": "A" * 50_000_001}),
        "an $ndarray with a huge shape": lambda m: m["state"].update(
            x={"$ndarray": "model/weight", "dtype": "<f4", "shape": [2 ** 40]}),
    }
    for what, edit in numbers.items():
        entry_points(bench, what, manifest_numbers(edit), in_run=False,
                     must_refuse=what not in ("a step of 10**400", "a $size of [2**62]*8", "piece_bytes of 2**80"))
    # a manifest larger than any savegame writes: a sparse file, refused before it is read
    path = bench.fresh_plain()
    with open(path / "manifest.json", "r+b") as f:
        f.truncate(300_000_000)
    bench.attempt("a 300 MB manifest: savegame.load", lambda: savegame.load(path))
    bench.attempt("a 300 MB manifest: list_checkpoints", lambda: store.list_checkpoints(path.parent),
                  must_refuse=False)
    print(json.dumps({"tried": tally.tried, "notes": ["headers, offsets, shapes, sizes under RLIMIT_AS"],
                      "failures": [[f.split(":", 1)[0].replace(" ", "_"), f.split(":", 1)[1].strip()]
                                   for f in tally.failures]}))


# -- deep or huge JSON ------------------------------------------------------------------------
def hostile_json(workdir: Path, scale: str, seed: int) -> Tally:
    """Deeply nested or huge JSON (and YAML) gets savegame's own error."""
    import savegame
    from savegame.doctor.curves import load_runs
    from savegame.sweeps import load_spec
    from savegame.sweeps.study import read_record

    tally = Tally("hostile input: deep and huge JSON", UNIT)
    bench = Bench(workdir, tally)
    shapes = ("list", "dict", "marker")
    cases = [(150, "dict"), (990, "marker"), (100_000, "list")] if scale == "ci" else \
        [(d, s) for d in (101, 150, 300, 500, 990, 5_000, 100_000, 1_000_000) for s in shapes]
    depths = [depth for depth, _ in cases]
    for depth, shape in cases:
        if True:
            if shape == "list":
                text = "[" * depth + "]" * depth
            elif shape == "dict":
                text = '{"a":' * depth + "1" + "}" * depth
            else:
                text = '{"$tuple":[' * depth + "]}" * depth

            def as_manifest(text=text) -> Path:
                path = newest(bench.fresh_run())
                reseal(path, raw=text.encode())
                return path

            def as_state(text=text) -> Path:
                path = newest(bench.fresh_run())
                raw = (path / "manifest.json").read_bytes()
                m = json.loads(raw)
                m["state"]["extras"] = "@@"
                reseal(path, raw=json.dumps(m).encode().replace(b'"@@"', text.encode()))
                return path

            def as_run_json(text=text) -> Path:
                run = bench.fresh_run()
                info = json.loads((run / "run.json").read_text())
                info["config"] = "@@"
                (run / "run.json").write_text(json.dumps(info).replace('"@@"', text))
                return newest(run)

            entry_points(bench, f"a manifest {depth} {shape}s deep", as_manifest, in_run=True)
            entry_points(bench, f"a state {depth} {shape}s deep", as_state, in_run=True)
            entry_points(bench, f"run.json's config {depth} {shape}s deep", as_run_json, in_run=True,
                         must_refuse=False)
            path = as_run_json()
            bench.attempt(f"run.json {depth} {shape}s deep: the doctor", lambda: load_runs(path.parent.parent),
                          must_refuse=False)
            if (depth, shape) == cases[-1]:  # the report draws every run of the folder: once
                bench.attempt(f"run.json {depth} {shape}s deep: savegame report",
                              _cli("report", str(path.parent.parent.parent), "-o", str(bench.root / "r.html")),
                              must_refuse=False)
            sweep = bench.root / f"sweep-{bench.count}"
            sweep.mkdir()
            (sweep / "sweep.json").write_text(text)
            bench.attempt(f"sweep.json {depth} {shape}s deep", lambda: read_record(sweep))
            bench.count += 1
            spec = bench.root / f"spec-{bench.count}.yaml"
            spec.write_text("train: m:f\nobjective: {metric: loss}\nspace: " + text.replace('"', ""))
            bench.attempt(f"a sweep spec {depth} {shape}s deep", lambda: load_spec(spec))
    # huge: sparse files far past the caps, and a spec with a billion-laughs alias
    run = bench.fresh_run()
    with open(run / "run.json", "r+b") as f:
        f.truncate(400_000_000)
    bench.attempt("a 400 MB run.json: savegame show", _cli("show", str(run)), must_refuse=False)

    def resume_past_it() -> int:
        with savegame.Run(run, handle_signals=False) as opened:
            return opened.step

    # a Run sets the damaged file aside, whole, and resumes from the checkpoints
    bench.attempt("a 400 MB run.json: Run", resume_past_it,
                  refused=lambda step: step > 0 and (run / "run.json.damaged").stat().st_size == 400_000_000)
    spec = bench.root / "huge.yaml"
    with open(spec, "wb") as f:
        f.truncate(200_000_000)
    bench.attempt("a 200 MB sweep spec", lambda: load_spec(spec))
    laughs = bench.root / "laughs.yaml"
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    laughs.write_text("train: m:f\nobjective: {metric: loss}\nspace:\n  lr: {type: float, low: 0.1, high: 1}\n"
                      + "\n".join("  " + line for line in lines) + "\n")
    bench.attempt("a billion-laughs sweep spec", lambda: load_spec(laughs))
    tally.notes.append(f"nesting {min(depths)}..{max(depths)} in manifests, states, run.json, sweep.json, "
                       "specs; sparse files past the size caps; YAML aliases")
    return tally


# -- names ------------------------------------------------------------------------------------
def hostile_names(workdir: Path, scale: str, seed: int) -> Tally:
    """Run names, log tags and sweep names with ``../``, NUL or 300+ characters: a clear error or
    a folder inside the intended one, never a write outside it."""
    import savegame
    from savegame.sweeps import parse_spec

    tally = Tally("hostile input: names", UNIT)
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    outside = workdir / "outside-names"
    outside.mkdir(exist_ok=True)
    rng = random.Random(seed)
    names = ["../escaped", "../../escaped", "/" + str(outside / "abs"), "a\0b", "x" * 300, "é" * 200, "..", ".",
             "a/../../escaped", "trailing/", "", " ", "\n", "con", "a\\..\\b"]
    if scale == "torture":
        alphabet = ["..", "/", "\0", "a", "é", "\\", ".", " "]
        names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(60)]
    before = _tree(workdir, skip=home)
    from savegame.errors import SavegameError

    def judged(what: str, fn: Callable[[], Any]) -> None:
        tally.tried += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = _with_timeout(fn, 60)
        except BaseException as e:  # noqa: B036
            result = e
        if result is _HUNG:
            tally.fail("other", f"{what}: hung")
        elif isinstance(result, BaseException) and not isinstance(
                result, (SavegameError, ValueError, TypeError, OSError)):
            tally.fail("other", f"{what}: {type(result).__name__}: {result}")
        elif isinstance(result, BaseException) and not str(result):
            tally.fail("other", f"{what}: an error without a message ({type(result).__name__})")

    spec = {"train": "m:f", "objective": {"metric": "loss"}, "space": {"lr": {"type": "float", "low": 0.1, "high": 1}}}
    for name in names:
        shown = repr(name)[:40]
        writer_dir = home / f"writer-{tally.tried}"

        def tags(name=name, writer_dir=writer_dir) -> None:
            w = savegame.SummaryWriter(writer_dir)
            try:
                for call in (lambda: w.add_scalar(name, 1.0, 0), lambda: w.add_scalars("m", {name: 1.0}, 0),
                             lambda: w.add_scalars(name, {"a": 1.0}, 0),
                             lambda: w.add_hparams({"x": 1}, {"m": 1.0}, run_name=name),
                             lambda: w.add_text(name, "t", 0), lambda: w.flush()):
                    with contextlib.suppress(ValueError, TypeError, OSError, SavegameError):
                        call()
            finally:
                with contextlib.suppress(SavegameError):
                    w.close()

        judged(f"writer tags {shown}", tags)

        def in_run(name=name) -> None:
            with savegame.Run(home / f"logrun-{tally.tried}", handle_signals=False) as run:
                with contextlib.suppress(ValueError, TypeError, OSError, SavegameError):
                    run.log(name, 1.0)
                run.save()
        judged(f"run.log({shown})", in_run)
        judged(f"sweep name {shown}", lambda: parse_spec({**spec, "name": name}))
        judged(f"sweep space key {shown}", lambda: parse_spec({**spec, "name": "n", "space": {
            name: {"type": "float", "low": 0.1, "high": 1}}}))
    after = _tree(workdir, skip=home)
    if escaped := sorted(after - before):
        tally.tried += 1
        tally.fail("data_lost", f"files written outside the intended folder: {escaped[:5]}")
    runs = workdir / "runs" / "here"
    runs.mkdir(parents=True, exist_ok=True)
    for name in names:  # a Run's folder is the path it is given, ../ included: only the error is judged
        judged(f"Run({repr(name)[:40]})", lambda: _run_once(runs / name.lstrip("/")))
    tally.notes.append(f"{len(names)} names as run folders, tags, sub-runs, hparams runs, sweep names")
    return tally


def _run_once(path: Path) -> None:
    import savegame

    with savegame.Run(path, handle_signals=False) as run:
        run.save()


def _tree(root: Path, *, skip: Path) -> set[str]:
    out = set()
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            dirs[:] = []
            continue
        out.update(os.path.join(folder, f) for f in files + dirs)
    return {p for p in out if not p.startswith(str(skip))}


SCENARIOS = {"pickle": pickle_payloads, "paths": path_traversal, "huge": huge_sizes, "json": hostile_json,
             "names": hostile_names}


def all_hostile(workdir: Path, scale: str = "ci", seed: int = 16) -> list[Tally]:
    """Every scenario, each in its own folder under ``workdir``."""
    started = time.monotonic()
    out = [fn(Path(workdir) / name, scale, seed) for name, fn in SCENARIOS.items()]
    out[0].notes.append(f"{time.monotonic() - started:.0f} s for all hostile scenarios")
    return out
