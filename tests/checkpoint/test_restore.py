"""restore_into ends exactly where read_checkpoint + load_into ends, reading each tensor once,
straight into the objects; damage found after memory changed says which objects are half-loaded."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
import xxhash
from torch import nn

from savegame.checkpoint import restore as restore_module
from savegame.checkpoint import tensor_read
from savegame.checkpoint.restore import CheckpointReader, PartiallyRestoredError, restore_into
from savegame.checkpoint.safetensors_io import TensorFile, hash_tensors
from savegame.checkpoint.store import (COMMIT, MANIFEST, TENSORS, read_checkpoint, verify_checkpoint,
                                       write_checkpoint)
from savegame.errors import CheckpointCorruptError, StateMismatchError
from savegame.io import load, load_into

FORMATS = ["pieces", "file-hash"]  # manifest records per-tensor piece hashes, or the whole file's only


def set_format(checkpoint, kind):
    """Give the manifest per-tensor piece hashes, or take them away (a version-1 checkpoint as first
    written), whatever the writer did; COMMIT is rewritten to match."""
    manifest = json.loads((checkpoint / MANIFEST).read_bytes())
    entry = manifest["files"][TENSORS]
    entry.pop("tensor_hashes", None)
    if kind == "pieces":
        entry["tensor_hashes"] = hash_tensors(checkpoint / TENSORS, piece_bytes=256)  # several per tensor
    data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (checkpoint / MANIFEST).write_bytes(data)
    (checkpoint / COMMIT).write_text(json.dumps(
        {MANIFEST: {"size": len(data), "hash": f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}"}}))
    return checkpoint


class Counter:
    """A tracked object that is neither module nor optimizer, with plain state."""

    def __init__(self):
        self.seen, self.history = 0, []

    def state_dict(self):
        return {"seen": self.seen, "history": list(self.history)}

    def load_state_dict(self, state):
        self.seen, self.history = state["seen"], list(state["history"])


def build(seed, *, steps=0):
    """Model (with BatchNorm buffers) + AdamW + StepLR + Counter, trained ``steps`` steps."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    counter = Counter()
    for _ in range(steps):
        train_step(model, opt)
        sched.step()
        counter.seen += 5
        counter.history.append(float(sched.get_last_lr()[0]))
    return {"model": model, "optimizer": opt, "lr_schedule": sched, "counter": counter}


def train_step(model, opt):
    x = torch.randn(6, 8)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def save_run_like(path, objects, *, step=3):
    state = {name: obj.state_dict() for name, obj in objects.items()}
    state["extras"] = {"best": float("inf"), "paths": ("a", 2), "array": np.arange(6.0).reshape(2, 3),
                       "table": torch.arange(5), "np_scalar": np.float32(0.5)}
    state["_savegame"] = {"step": step, "rng": torch.get_rng_state()}
    write_checkpoint(path, state, step=step, epoch=0)
    return path


def assert_same(a, b, where="state"):
    """Equal values, types and bits (tensors: dtype, shape, device and every byte)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), where
        assert torch.equal(a.detach().reshape(-1).view(torch.uint8), b.detach().reshape(-1).view(torch.uint8)), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, where


def end_state(objects):
    return {name: obj.state_dict() for name, obj in objects.items()}


def bits(objects):
    """A deep copy of every object's state, to compare with later."""
    return {name: _clone(obj.state_dict()) for name, obj in objects.items()}


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def the_old_way(path, objects):
    state, _ = read_checkpoint(path, verify=True)
    load_into(str(path), state, objects, strict=True)
    return {k: v for k, v in state.items() if k not in objects}


@pytest.fixture
def saved(tmp_path):
    return save_run_like(tmp_path / "step-000003", build(0, steps=3))


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("optimizer_has_state", [False, True], ids=["fresh-optimizer", "stepped-optimizer"])
def test_restore_into_ends_bit_identical_to_read_checkpoint_then_load_into(saved, kind, optimizer_has_state):
    set_format(saved, kind)
    old, new = build(1, steps=int(optimizer_has_state)), build(2, steps=int(optimizer_has_state))
    rest_old = the_old_way(saved, old)
    rest_new, manifest = restore_into(saved, new)
    assert manifest["step"] == 3
    assert_same(end_state(old), end_state(new))
    assert_same(rest_old, rest_new)
    assert all(type(p) is nn.Parameter and p.requires_grad for p in new["model"].parameters())
    for objects in (old, new):  # and training goes on the same way
        torch.manual_seed(7)
        train_step(objects["model"], objects["optimizer"])
    assert_same(end_state(old), end_state(new))


@pytest.mark.parametrize("kind", FORMATS)
def test_tensors_are_read_straight_into_parameters_buffers_and_existing_optimizer_state(saved, kind, monkeypatch):
    set_format(saved, kind)
    objects = build(1, steps=1)
    model, opt = objects["model"], objects["optimizer"]
    memory = {name: t.data_ptr() for name, t in model.state_dict().items()}
    state_tensors = {(id(p), key): t for p, s in opt.state.items() for key, t in s.items()}
    fresh = []
    real_empty = tensor_read._empty
    monkeypatch.setattr(tensor_read, "_empty", lambda shape, dtype: fresh.append(shape) or real_empty(shape, dtype))
    restore_into(saved, objects)
    assert {name: t.data_ptr() for name, t in model.state_dict().items()} == memory
    assert {(id(p), key): t for p, s in opt.state.items() for key, t in s.items()} == state_tensors  # same objects
    assert sorted(fresh)[:2] == [[2, 3], [5]] and len(fresh) == 3  # only the rest: extras' array and table, RNG


@pytest.mark.parametrize("kind", FORMATS)
def test_a_damaged_tensor_after_memory_changed_raises_partially_restored_naming_the_objects(saved, kind):
    set_format(saved, kind)
    good = save_run_like(saved.parent / "step-000002", build(5, steps=2), step=2)
    set_format(good, kind)
    data = bytearray((saved / TENSORS).read_bytes())
    data[-3] ^= 0x40  # the last tensor in the file: the RNG state, read after the model's tensors
    (saved / TENSORS).write_bytes(bytes(data))
    objects = build(1, steps=1)
    with pytest.raises(PartiallyRestoredError) as e:
        restore_into(saved, objects)
    assert isinstance(e.value, CheckpointCorruptError)
    assert set(e.value.loaded) == {"model", "optimizer"} and e.value.path == saved
    assert "model['0.weight']" in e.value.tensors and str(saved / TENSORS) in str(e.value)
    assert "half-loaded" in str(e.value) and "another checkpoint" in str(e.value)
    if kind == "pieces":
        assert "_savegame/rng" in str(e.value)  # piece hashes name the damaged tensor
    # The way out: the previous checkpoint overwrites every tensor and all the state.
    restore_into(good, objects)
    expected = build(3, steps=1)
    the_old_way(good, expected)
    assert_same(end_state(expected), end_state(objects))


@pytest.mark.parametrize("kind", FORMATS)
def test_damage_found_before_any_memory_changed_is_plain_corruption_and_touches_nothing(saved, kind):
    set_format(saved, kind)
    objects = build(1, steps=1)
    before = bits(objects)
    data = bytearray((saved / TENSORS).read_bytes())
    data[20] ^= 0x01  # inside the header's JSON, still valid JSON
    (saved / TENSORS).write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError) as e:
        restore_into(saved, objects)
    if kind == "pieces":  # the header's own hash is checked first
        assert not isinstance(e.value, PartiallyRestoredError)
        assert_same(before, end_state(objects))
    (saved / TENSORS).write_bytes(bytes(data[:-1]))  # truncated: the header no longer fits the size
    objects = build(1, steps=1)
    before = bits(objects)
    with pytest.raises(CheckpointCorruptError) as e:
        restore_into(saved, objects)
    assert not isinstance(e.value, PartiallyRestoredError)
    assert_same(before, end_state(objects))


def test_key_and_shape_mismatches_are_listed_like_load_into_before_any_byte_is_read(saved, monkeypatch):
    objects = build(1)
    objects["model"] = nn.Sequential(nn.Linear(8, 15), nn.BatchNorm1d(15), nn.ReLU(), nn.Linear(16, 4), nn.Linear(4, 1))
    state, _ = read_checkpoint(saved)
    with pytest.raises(StateMismatchError) as old:
        load_into(str(saved), state, objects, strict=True)
    before = bits(objects)
    monkeypatch.setattr(TensorFile, "read", lambda *a, **k: pytest.fail("read tensor data despite a mismatch"))
    with pytest.raises(StateMismatchError) as new:
        restore_into(saved, objects)
    assert str(new.value) == str(old.value)
    for words in (str(saved), "missing keys", "4.weight", "shape mismatches", "0.weight: saved (16, 8), model (15, 8)"):
        assert words in str(new.value)
    assert_same(before, end_state(objects))
    with pytest.raises(StateMismatchError, match=r"'ema' is not in the checkpoint \(it holds: model, optimizer"):
        restore_into(saved, {"ema": nn.Linear(1, 1)})


def test_strict_false_loads_what_matches_and_warns_like_load_into(saved):
    def partial_model():
        torch.manual_seed(4)
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    old, new = {"model": partial_model()}, {"model": partial_model()}
    state, _ = read_checkpoint(saved)
    with pytest.warns(UserWarning, match="skipped") as old_warning:
        load_into(str(saved), state, old, strict=False)
    with pytest.warns(UserWarning, match="skipped") as new_warning:
        restore_into(saved, new, strict=False)
    assert str(old_warning[0].message) == str(new_warning[0].message)
    assert_same(end_state(old), end_state(new))


class Tied(nn.Module):
    def __init__(self, tie):
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight


@pytest.mark.parametrize("saved_tied, loading_tied", [(True, True), (False, True), (True, False)])
def test_tied_weights_load_as_load_state_dict_loads_them(tmp_path, saved_tied, loading_tied):
    torch.manual_seed(0)
    source = Tied(saved_tied)
    with torch.no_grad():
        source.head.weight.mul_(3)  # untied: the two differ
    path = tmp_path / "c"
    write_checkpoint(path, {"model": source.state_dict()}, step=0, epoch=0)
    for kind in FORMATS:
        set_format(path, kind)
        old, new = {"model": Tied(loading_tied)}, {"model": Tied(loading_tied)}
        the_old_way(path, old)
        restore_into(path, new)
        assert_same(end_state(old), end_state(new))
        assert (new["model"].head.weight is new["model"].embed.weight) == loading_tied


class Odd(nn.Module):
    """Parameters that cannot take the file's bytes as they are: each goes through load_state_dict."""

    def __init__(self):
        super().__init__()
        flat = torch.zeros(10)
        self.a, self.b = nn.Parameter(flat[:6]), nn.Parameter(flat[4:])  # overlapping views of one buffer
        self.register_buffer("t", torch.zeros(4, 3).t())  # not contiguous
        self.wide = nn.Parameter(torch.zeros(3, dtype=torch.float64))  # saved as float32
        self.scaled = nn.Linear(2, 2)
        self.scaled._register_load_state_dict_pre_hook(  # loading transforms the saved values
            lambda sd, prefix, *args: sd.update({prefix + "weight": sd[prefix + "weight"] * 2}))
        self.plain = nn.Parameter(torch.zeros(2))  # this one can


def test_parameters_that_cannot_be_read_in_place_load_through_load_state_dict(tmp_path, monkeypatch):
    torch.manual_seed(0)
    saved = {"a": torch.randn(6), "b": torch.randn(6), "t": torch.randn(3, 4), "wide": torch.randn(3),
             "scaled.weight": torch.randn(2, 2), "scaled.bias": torch.randn(2), "plain": torch.randn(2)}
    path = tmp_path / "c"
    write_checkpoint(path, {"model": saved}, step=0, epoch=0)
    asked = {}
    real_read = TensorFile.read
    monkeypatch.setattr(TensorFile, "read", lambda self, targets, **k: asked.update(targets) or
                        real_read(self, targets, **k))
    for kind in FORMATS:
        set_format(path, kind)
        old, new = {"model": Odd()}, {"model": Odd()}
        the_old_way(path, old)
        asked.clear()
        restore_into(path, new)
        assert_same(end_state(old), end_state(new))
        assert torch.equal(new["model"].scaled.weight, saved["scaled.weight"] * 2)
        assert asked.pop("model/plain") is new["model"].plain
        assert asked == dict.fromkeys(f"model/{key}" for key in saved if key != "plain")  # fresh tensors


def test_an_optimizer_whose_groups_do_not_match_fails_as_before_and_keeps_its_state(saved):
    objects = build(1, steps=1)
    model = objects["model"]
    opt = torch.optim.AdamW([{"params": list(model.parameters())[:2]}, {"params": list(model.parameters())[2:]}])
    train_step(model, opt)
    before = bits({"optimizer": opt})
    with pytest.raises(StateMismatchError, match="Loading 'optimizer' from .* failed: .*parameter groups"):
        restore_into(saved, {"optimizer": opt})
    assert_same(before, end_state({"optimizer": opt}))


@pytest.mark.parametrize("kind", FORMATS)
def test_a_reader_restores_objects_one_call_at_a_time_as_run_tracks_them(saved, kind, monkeypatch):
    set_format(saved, kind)
    reads = []
    real_read = TensorFile.read
    monkeypatch.setattr(TensorFile, "read", lambda self, targets, **k: reads.append(len(targets)) or
                        real_read(self, targets, **k))
    old, new = build(1), build(2)
    rest_old = the_old_way(saved, old)
    reads.clear()
    with CheckpointReader(saved) as reader:
        run_state = reader.read(["_savegame", "extras"])
        for name, obj in new.items():
            assert reader.restore_into({name: obj}) == {}
    assert_same(end_state(old), end_state(new))
    assert_same({k: rest_old[k] for k in ("_savegame", "extras")}, run_state)
    # With piece hashes each call reads only its own tensors; with one file hash the first call
    # reads (and verifies) the whole file and later calls take what it kept.
    assert len(reads) == (3 if kind == "pieces" else 1)


@pytest.mark.parametrize("kind", FORMATS)
def test_savegame_load_returns_the_whole_saved_dict_sharing_memory_with_the_objects(saved, kind):
    set_format(saved, kind)
    objects = build(1)
    state = load(saved, into=objects)
    expected, _ = read_checkpoint(saved)
    assert_same(expected, state)
    weight = objects["model"][0].weight
    assert state["model"]["0.weight"].data_ptr() == weight.data_ptr() and not state["model"]["0.weight"].requires_grad
    assert_same(expected, CheckpointReader(saved).read())


def test_checkpoints_with_piece_hashes_still_verify_and_load_the_old_way(saved):
    set_format(saved, "pieces")
    assert verify_checkpoint(saved) == []
    assert_same(read_checkpoint(saved)[0], CheckpointReader(saved).read())
    data = bytearray((saved / TENSORS).read_bytes())
    data[-3] ^= 0x01
    (saved / TENSORS).write_bytes(bytes(data))
    assert any("does not match" in problem for problem in verify_checkpoint(saved))


def test_a_manifest_naming_a_tensor_the_file_lacks_is_corrupt_before_any_read(saved):
    manifest = json.loads((saved / MANIFEST).read_bytes())
    manifest["state"]["extras"]["table"] = {"$tensor": "no/such/tensor"}
    data = json.dumps(manifest).encode()
    (saved / MANIFEST).write_bytes(data)
    (saved / COMMIT).write_text(json.dumps(
        {MANIFEST: {"size": len(data), "hash": f"xxh3_128:{xxhash.xxh3_128_hexdigest(data)}"}}))
    objects = build(1)
    before = bits(objects)
    with pytest.raises(CheckpointCorruptError, match="no/such/tensor") as e:
        restore_into(saved, objects)
    assert not isinstance(e.value, PartiallyRestoredError) and str(saved / MANIFEST) in str(e.value)
    assert_same(before, end_state(objects))


def test_states_that_are_not_dicts_load_whole_and_refuse_objects(tmp_path):
    path = tmp_path / "c"
    write_checkpoint(path, [torch.ones(2), {"k": 1}], step=0, epoch=0)
    assert_same(read_checkpoint(path)[0], load(path))
    with pytest.raises(StateMismatchError, match="holds a list, not a dict"):
        load(path, into={"model": nn.Linear(1, 1)})
    write_checkpoint(tmp_path / "d", {3: torch.ones(1), "w": torch.zeros(2)}, step=0, epoch=0)  # non-str keys
    assert_same(read_checkpoint(tmp_path / "d")[0], load(tmp_path / "d"))


def test_parallel_readers_restore_the_same_bits(saved, monkeypatch):
    monkeypatch.setattr(tensor_read, "_PARALLEL", 0)
    monkeypatch.setattr(tensor_read, "_READ_CHUNK", 200)
    monkeypatch.setattr(tensor_read, "_READERS", 3)
    for kind in FORMATS:
        set_format(saved, kind)
        old, new = build(1, steps=1), build(2, steps=1)
        rest_old = the_old_way(saved, old)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rest_new, _ = restore_into(saved, new)
        assert_same(end_state(old), end_state(new))
        assert_same(rest_old, rest_new)


def test_the_module_doc_example_names_the_public_api():
    assert set(restore_module.__all__) == {"PartiallyRestoredError", "CheckpointReader", "restore_into", "plan_load"}
