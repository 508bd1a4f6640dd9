"""Fuzzers of savegame's readers of other people's files, with hypothesis (and atheris, when it
is installed): the manifest decoder, the checkpoint loader on mutated real checkpoint bytes, the
event-file reader and the sweep spec parser.

Each fuzzer is ``(workdir, scale, seed) -> Tally`` and runs a ``hypothesis.given`` test
programmatically (``max_examples`` by scale, a fixed seed, no example database), so pytest and
the long runner call it alike. Allowed outcomes: success, or savegame's own error (the event
reader: no error at all, it skips what it cannot read). Anything else (``KeyError``,
``struct.error``, ``RecursionError``, ``UnicodeDecodeError`` ...) or a case running past its time
limit (``signal.setitimer``: a hang) is counted as a failure with the input that caused it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, seed as hseed, settings
from hypothesis import strategies as st

from tally import Tally

UNIT = "fuzzed inputs tried"
CASE_SECONDS = 10  # one case running longer is a hang
EXAMPLES = {"ci": 60, "torture": 1500}


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _judge(tally: Tally, what: str, case: Any, fn: Callable[[], Any], allowed: tuple[type[BaseException], ...]) -> None:
    tally.tried += 1
    try:
        with _time_limit(CASE_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except _Hang as e:
        tally.fail("other", f"{what}: {e} on {_short(case)}")
    except allowed:
        pass
    except BaseException as e:  # noqa: B036 - the failures this looks for
        tally.fail("other", f"{what}: {type(e).__name__}: {str(e)[:200]} on {_short(case)}")


def _short(case: Any) -> str:
    text = repr(case)
    return text if len(text) < 300 else text[:300] + f"... ({len(text)} chars)"


def _run(test: Callable[..., None], scale: str, seed: int) -> None:
    settings(max_examples=EXAMPLES[scale], deadline=None, database=None, derandomize=False,
             suppress_health_check=list(HealthCheck))(hseed(seed)(test))()


def _savegame_errors() -> tuple[type[BaseException], ...]:
    from savegame.errors import SavegameError

    return (SavegameError,)


# -- JSON values, the kinds a hostile manifest holds ------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                     st.sampled_from(["$tensor", "$dict", "$tuple", "$float", "$np", "$bytes", "$dtype", "$device",
                                      "$ndarray", "$size", "model/weight", "model/bias", "nan", "int64", "<f4",
                                      "|O", "O", "float32", "cuda:99", "meta", "tensors.safetensors", "../x",
                                      "/etc/passwd", "xxh3_128"]))
_keys = st.one_of(st.text(max_size=8), st.sampled_from(
    ["$tensor", "$dict", "$tuple", "$float", "$np", "$bytes", "$dtype", "$device", "$ndarray", "$size", "value",
     "dtype", "shape", "device", "files", "state", "size", "hash", "tensor_hashes", "shared", "tensors", "from",
     "algorithm", "piece_bytes", "header", "sharded", "objects", "dir", "world_size", "_savegame", "rng", "model"]))
json_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)), max_leaves=30)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, prefix + (i,))
    return out


def _replace(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    tree[path[0]] = _replace(tree[path[0]], path[1:], value)
    return tree


class _Real:
    """A real checkpoint (savegame.save of a model and an optimizer) and a Run's, to mutate."""

    def __init__(self, workdir: Path) -> None:
        import torch

        import savegame

        self.root = Path(workdir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.plain = self.root / "plain"
        if not self.plain.exists():
            torch.manual_seed(0)
            net = torch.nn.Linear(6, 3)
            opt = torch.optim.Adam(net.parameters())
            net(torch.ones(1, 6)).sum().backward()
            opt.step()
            savegame.save(self.plain, {"model": net, "optimizer": opt, "step": 1, "extras": {(1, 2): b"x"}})
        self.run = self.root / "run"
        if not self.run.exists():
            with savegame.Run(self.run, handle_signals=False) as run:
                run.track(model=torch.nn.Linear(3, 2))
                for _ in run.epochs(1):
                    for _ in run.iterate(range(2)):
                        run.log("loss/train", 0.5)
                    run.save(metrics={"loss/val": 0.5})
        self.run_ckpt = sorted((self.run / "checkpoints").glob("step-*"))[-1]
        self.manifests = [json.loads((p / "manifest.json").read_bytes()) for p in (self.plain, self.run_ckpt)]
        self.n = 0

    def copy(self, which: int) -> Path:
        self.n += 1
        target = self.root / f"case-{self.n % 4}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.plain if which == 0 else self.run_ckpt, target)
        return target


def fuzz_manifest(workdir: Path, scale: str, seed: int) -> Tally:
    """Manifests with any JSON anywhere (consistent COMMIT): read_manifest, read_checkpoint,
    verify, list_checkpoints, savegame.load into the real objects."""
    import torch

    import savegame
    from savegame.checkpoint import store
    from hostile import reseal

    tally = Tally("fuzz: manifest decoder", UNIT)
    real = _Real(workdir)
    allowed = _savegame_errors()

    @given(which=st.integers(0, 1), where=st.integers(0, 10 ** 6), value=json_values, whole=st.booleans())
    def test(which: int, where: int, value: Any, whole: bool) -> None:
        manifest = json.loads(json.dumps(real.manifests[which]))
        if whole:
            manifest = value
        else:
            paths = _paths(manifest)
            manifest = _replace(manifest, paths[where % len(paths)], value)
        path = real.copy(which)
        reseal(path, manifest, rehash=False)
        case = (which, "whole" if whole else _paths(real.manifests[which])[where % len(_paths(real.manifests[which]))],
                value)

        def read() -> None:
            for fn in (lambda: store.read_manifest(path), lambda: store.read_checkpoint(path),
                       lambda: store.list_checkpoints(path.parent),
                       lambda: savegame.load(path, into={"model": torch.nn.Linear(6, 3)} if which == 0 else None)):
                with contextlib.suppress(*allowed):
                    fn()
            problems = store.verify_checkpoint(path)  # never raises for damage
            if not isinstance(problems, list):
                raise AssertionError(f"verify returned {problems!r}")

        _judge(tally, "manifest", case, read, allowed)

    _run(test, scale, seed)
    return tally


def fuzz_checkpoint_bytes(workdir: Path, scale: str, seed: int) -> Tally:
    """A real tensor file's bytes flipped, overwritten, cut or grown, every hash made consistent
    again: savegame.load (into the objects and fresh) and verify."""
    import torch

    import savegame
    from savegame.checkpoint import store
    from hostile import manifest_of, reseal

    tally = Tally("fuzz: checkpoint loader", UNIT)
    real = _Real(workdir)
    allowed = _savegame_errors()
    original = (real.plain / "tensors.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(original[:8], "little")

    edits = st.lists(st.tuples(st.integers(0, len(original) + 16), st.binary(min_size=1, max_size=12)),
                     min_size=1, max_size=6)

    @given(edits=edits, near_header=st.booleans(), cut=st.one_of(st.none(), st.integers(0, len(original))),
           tail=st.binary(max_size=16))
    def test(edits: list, near_header: bool, cut: int | None, tail: bytes) -> None:
        data = bytearray(original)
        for offset, chunk in edits:
            offset = offset % header_end if near_header else offset
            data[offset:offset + len(chunk)] = chunk
        if cut is not None:
            del data[cut:]
        data += tail
        path = real.copy(0)
        (path / "tensors.safetensors").write_bytes(bytes(data))
        reseal(path, manifest_of(path))

        def read() -> None:
            net, opt = torch.nn.Linear(6, 3), None
            opt = torch.optim.Adam(net.parameters())
            for fn in (lambda: savegame.load(path), lambda: savegame.load(path, into={"model": net, "optimizer": opt}),
                       lambda: savegame.export_weights(path, real.root / "out.safetensors")):
                with contextlib.suppress(*allowed):
                    fn()
            store.verify_checkpoint(path)

        _judge(tally, "tensor file", (edits, near_header, cut, tail), read, allowed)

    _run(test, scale, seed)
    return tally


def fuzz_event_reader(workdir: Path, scale: str, seed: int) -> Tally:
    """Event files mutated or made up (valid CRCs around hostile records included): the doctor's
    reader takes what it can and never raises."""
    from savegame.doctor.curves import load_runs
    from savegame.doctor.eventscan import scan_scalars
    from savegame.log.records import masked_crc32c

    tally = Tally("fuzz: event-file reader", UNIT)
    real = _Real(workdir)
    event_file = next(p for p in real.run.iterdir() if "tfevents" in p.name)
    original = event_file.read_bytes()
    logdir = real.root / "logdir"

    def framed(payload: bytes) -> bytes:
        header = len(payload).to_bytes(8, "little")
        return header + masked_crc32c(header).to_bytes(4, "little") + payload + \
            masked_crc32c(payload).to_bytes(4, "little")

    @given(mode=st.sampled_from(["mutate", "framed", "raw"]), edits=st.lists(
        st.tuples(st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)), max_size=6),
        payloads=st.lists(st.binary(max_size=64), max_size=5), cut=st.integers(0, 10 ** 6))
    def test(mode: str, edits: list, payloads: list, cut: int) -> None:
        if mode == "mutate":
            data = bytearray(original)
            for offset, chunk in edits:
                offset %= len(data)
                data[offset:offset + len(chunk)] = chunk
            data = bytes(data[:len(data) - cut % 64])
        elif mode == "framed":  # checksums right, contents hostile: the parsers must judge them
            data = original + b"".join(framed(p) for p in payloads)
        else:
            data = b"".join(payloads)

        def read() -> None:
            found: dict = {}
            size = scan_scalars(data, found, lambda record: None)
            if not 0 <= size <= len(data):
                raise AssertionError(f"scan_scalars returned {size} for {len(data)} bytes")
            shutil.rmtree(logdir, ignore_errors=True)
            logdir.mkdir()
            (logdir / "events.out.tfevents.1.host.1.0").write_bytes(data)
            load_runs(logdir)

        _judge(tally, "event file", (mode, edits, payloads, cut), read, ())

    _run(test, scale, seed)
    return tally


def fuzz_sweep_spec(workdir: Path, scale: str, seed: int) -> Tally:
    """Sweep specs as mappings and as YAML text: only SpecError."""
    from savegame.sweeps.spec import SpecError, load_spec, parse_spec

    tally = Tally("fuzz: sweep spec parser", UNIT)
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    numbers = st.one_of(st.integers(-(2 ** 70), 2 ** 1100), st.floats(), st.booleans(), st.none(), st.text(max_size=3))
    params = st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["float", "int", "categorical", "x", None]), "low": numbers, "high": numbers,
        "log": st.one_of(st.booleans(), numbers), "step": numbers, "choices": st.one_of(json_values, st.lists(numbers)),
        "extra": numbers})
    specs = st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.text(max_size=300), st.sampled_from(["..", ".", "a\0b", "x" * 300]), numbers),
        "train": st.one_of(st.sampled_from(["m:f", ":", "m:", "a:b:c"]), json_values),
        "objective": st.one_of(st.fixed_dictionaries({"metric": st.one_of(st.text(max_size=5), json_values)}, optional={
            "direction": st.sampled_from(["minimize", "maximize", "up", None]),
            "use": st.sampled_from(["best", "last", 3])}), json_values),
        "n_trials": numbers, "sampler": st.sampled_from(["grid", "random", "tpe", "cmaes", "x", None]),
        "pruner": st.sampled_from(["none", "median", "asha", "hyperband", 1]), "seed": numbers,
        "doctor": numbers, "space": st.one_of(st.dictionaries(st.text(max_size=5), st.one_of(params, numbers),
                                                              max_size=4), json_values)})

    extra = st.dictionaries(st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=4)),
                            json_values, max_size=2)

    @given(spec=specs, more=extra, text=st.one_of(st.none(), st.text(max_size=200)), as_yaml=st.booleans())
    def test(spec: dict, more: dict, text: str | None, as_yaml: bool) -> None:
        spec = {**spec, **more} if more and not as_yaml else spec
        def parse() -> None:
            if text is not None:
                (root / "spec.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
                with contextlib.suppress(SpecError):
                    load_spec(root / "spec.yaml")
            if as_yaml:
                import yaml

                (root / "spec.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
                load_spec(root / "spec.yaml")
            else:
                parse_spec(spec, name="fuzz")

        _judge(tally, "spec", (spec, text), parse, (SpecError,))

    _run(test, scale, seed)
    return tally


# -- atheris, when installed ------------------------------------------------------------------
def atheris_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


def fuzz_atheris(workdir: Path, scale: str, seed: int) -> Tally:
    """Coverage-guided fuzzing of the event scanner and the spec YAML loader with atheris, in a
    child process (atheris exits the process); a crash is a failure. Nothing tried when absent."""
    tally = Tally("fuzz: atheris (event scanner, spec YAML)", UNIT)
    if not atheris_available():
        tally.notes.append("atheris is not installed: skipped")
        return tally
    runs = 1000 if scale == "ci" else 25_000
    Path(workdir).mkdir(parents=True, exist_ok=True)
    for target in ("events", "spec"):
        done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                               f"import fuzz; fuzz._atheris_child({target!r}, {str(workdir)!r})",
                               f"-runs={runs}", f"-seed={seed}", "-max_len=512", f"-timeout={CASE_SECONDS}"],
                              capture_output=True, text=True, timeout=600, cwd=workdir)
        tally.tried += runs
        if done.returncode != 0:
            tally.fail("other", f"atheris {target}: exit {done.returncode}: {done.stderr[-1500:]}")
    tally.notes.append(f"atheris: {runs} runs per target")
    return tally


def _atheris_child(target: str, workdir: str) -> None:
    import atheris

    with atheris.instrument_imports():
        from savegame.doctor.eventscan import scan_scalars
        from savegame.sweeps.spec import SpecError, load_spec
    spec_file = Path(workdir) / "atheris-spec.yaml"

    def events(data: bytes) -> None:
        found: dict = {}
        size = scan_scalars(data, found, lambda record: None)
        assert 0 <= size <= len(data)

    def spec(data: bytes) -> None:
        spec_file.write_bytes(data)
        try:
            load_spec(spec_file)
        except SpecError:
            pass

    atheris.Setup([sys.argv[0], *sys.argv[1:]], events if target == "events" else spec)
    atheris.Fuzz()


FUZZERS = {"manifest": fuzz_manifest, "checkpoint": fuzz_checkpoint_bytes, "events": fuzz_event_reader,
           "spec": fuzz_sweep_spec, "atheris": fuzz_atheris}


def all_fuzz(workdir: Path, scale: str = "ci", seed: int = 16) -> list[Tally]:
    return [fn(Path(workdir) / name, scale, seed) for name, fn in FUZZERS.items()]


if __name__ == "__main__":  # python tests/reliability/fuzz.py [ci|torture]
    for t in all_fuzz(Path(os.environ.get("TMPDIR", "/tmp")) / "savegame-fuzz", *(sys.argv[1:2] or ["ci"])):
        print(t.family, t.tried, t.failures[:5])
