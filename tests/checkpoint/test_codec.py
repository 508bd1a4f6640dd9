"""The pickle-free codec round-trips what real state_dicts and RNG states hold, exactly."""

import collections
import datetime
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from savegame.checkpoint.codec import SAFETENSORS_DTYPES, decode, encode
from savegame.errors import CheckpointCorruptError, NotSerializableError


def round_trip(tree):
    encoded, tensors = encode(tree)
    text = json.dumps(encoded, allow_nan=False)  # valid JSON, no NaN/Infinity literals
    return decode(json.loads(text), tensors), tensors


def same(a, b):
    """Equal with exact types, bit-exact floats and tensors."""
    if isinstance(a, torch.Tensor):
        return type(b) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape and bool(
            (a.view(torch.uint8) == b.view(torch.uint8)).all() if a.dtype.itemsize == 1 else torch.equal(a, b)
        )
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a) is not type(b) and not (isinstance(a, dict) and type(b) is dict):
        return False
    if isinstance(a, float) or isinstance(a, np.floating):
        return np.array(a).tobytes() == np.array(b).tobytes()
    if isinstance(a, dict):
        return list(a) == list(b) and all(type(k) is type(kb) for k, kb in zip(a, b)) and all(
            same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**100, -(2**70), "", "héllo", 0.1, -0.0, 1e308, 5e-324,
    float("nan"), float("inf"), float("-inf"), b"\x00\xffraw", torch.float16, torch.bfloat16,
    torch.device("cpu"), torch.device("cuda", 1), torch.Size([2, 3]), torch.Size([]),
])
def test_scalars_round_trip_with_exact_types(value):
    decoded, _ = round_trip({"v": value})
    assert same(value, decoded["v"]) or (isinstance(value, float) and math.isnan(value) and math.isnan(decoded["v"]))


def test_bool_and_int_keys_stay_distinct():
    decoded, _ = round_trip({"a": {True: "t", 2: "two"}, "b": {1: "one"}})
    assert [type(k) for k in decoded["a"]] == [bool, int]
    assert type(next(iter(decoded["b"]))) is int


def test_int_keys_of_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    decoded, tensors = round_trip(opt.state_dict())
    assert same(opt.state_dict(), decoded)
    assert "state/0/exp_avg" in tensors and "state/1/exp_avg_sq" in tensors


def test_odd_keys_tuples_and_dollar_strings_round_trip():
    tree = collections.OrderedDict([("$ref", 1), ((1, "a"), [2, (3,)]), (None, 0.5), (2.5, {}), ("x", ())])
    decoded, _ = round_trip(tree)
    assert same(tree, decoded)
    assert list(decoded) == ["$ref", (1, "a"), None, 2.5, "x"]


def test_json_tree_is_readable_for_plain_state():
    encoded, tensors = encode({"epoch": 3, "lr": 0.1, "betas": (0.9, 0.99), "best": float("inf")})
    assert encoded == {"epoch": 3, "lr": 0.1, "betas": {"$tuple": [0.9, 0.99]}, "best": {"$float": "inf"}}
    assert tensors == {}


@pytest.mark.parametrize("dtype", sorted(SAFETENSORS_DTYPES, key=str))
def test_tensors_of_every_safetensors_dtype_round_trip(dtype):
    t = (torch.randn(3, 4) * 10).to(dtype) if dtype != torch.complex64 else torch.randn(3, 4, dtype=dtype)
    decoded, _ = round_trip({"t": t, "scalar": t[0, 0].clone()})
    assert same(t, decoded["t"]) and decoded["scalar"].dim() == 0


def test_tensor_metadata_device_and_requires_grad():
    p = torch.nn.Parameter(torch.ones(2))
    encoded, tensors = encode({"p": p})
    assert encoded == {"p": {"$tensor": "p"}}  # cpu: no device field
    assert not tensors["p"].requires_grad and type(tensors["p"]) is torch.Tensor
    assert decode({"t": {"$tensor": "p", "device": "cuda:0"}}, tensors)["t"].device.type == "cpu"


def test_tied_weights_are_stored_once_and_stay_tied():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    state = {"model": Tied().state_dict()}
    encoded, tensors = encode(state)
    assert list(tensors) == ["model/embed.weight"]
    assert encoded["model"]["head.weight"] == {"$tensor": "model/embed.weight"}
    decoded = decode(encoded, tensors)
    assert decoded["model"]["head.weight"] is decoded["model"]["embed.weight"]


def test_views_of_one_storage_are_stored_as_separate_tensors():
    base = torch.arange(12.0).reshape(3, 4)
    state = {"row": base[1], "col": base[:, 2], "all": base}
    decoded, tensors = round_trip(state)
    assert len(tensors) == 3 and all(t.is_contiguous() for t in tensors.values())
    assert torch.equal(decoded["col"], torch.tensor([2.0, 6.0, 10.0]))


def test_colliding_names_are_made_unique():
    _, tensors = encode({"a/b": torch.zeros(1), "a": {"b": torch.ones(1)}, "__metadata__": torch.ones(1)})
    assert sorted(tensors) == ["__metadata__#2", "a/b", "a/b#2"]


def test_copy_makes_snapshots_independent_of_later_training():
    w = torch.zeros(3)
    _, tensors = encode({"w": w}, copy=True)
    w.add_(1)
    assert tensors["w"].sum() == 0


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.uint32).reshape(2, 3), np.array(3.5, dtype=np.float32), np.zeros((0, 2)),
    np.array([1 + 2j], dtype=np.complex128), np.array(["ab", "c"]), np.arange(4, dtype=">i4"),
    np.array([True, False]), np.arange(10, dtype=np.float16)[::3],
])
def test_numpy_arrays_round_trip_with_dtype_and_shape(array):
    decoded, _ = round_trip({"a": array})
    assert same(np.ascontiguousarray(array), decoded["a"])


@pytest.mark.parametrize("scalar", [
    np.float32(0.1), np.float16(-2.5), np.float64(1 / 3), np.float32("nan"), np.int64(-5),
    np.uint64(2**64 - 1), np.bool_(True), np.complex64(1 - 2j), np.int8(-128),
])
def test_numpy_scalars_round_trip_exactly(scalar):
    decoded, _ = round_trip({"s": scalar})
    assert type(decoded["s"]) is type(scalar)
    assert np.array(decoded["s"]).tobytes() == np.array(scalar).tobytes()


def test_rng_states_round_trip():
    state = {
        "python": random.getstate(), "numpy": np.random.get_state(),
        "generator": np.random.default_rng(5).bit_generator.state, "torch": torch.get_rng_state(),
    }
    decoded, _ = round_trip(state)
    assert same(state, decoded)
    random.setstate(decoded["python"])
    np.random.set_state(decoded["numpy"])
    assert random.random() == (random.setstate(state["python"]), random.random())[1]


@pytest.mark.parametrize("value, fix", [
    (Path("/data"), "str(path)"), (datetime.datetime(2024, 1, 1), "isoformat"), ({1, 2}, "sorted"),
    (lambda x: x, "recreate them in code"), (collections.namedtuple("P", "x")(1), "_asdict"),
    (object(), "convert it"), (bytearray(b"x"), "bytes(value)"),
])
def test_unsupported_values_name_their_key_path_and_a_fix(value, fix):
    with pytest.raises(NotSerializableError) as e:
        encode({"extras": {"paths": ["a", "b", value]}})
    assert "extras['paths'][2]" in str(e.value) and fix in str(e.value) and "torch.Tensor" in str(e.value)


@pytest.mark.parametrize("make, word", [
    (lambda: torch.randn(2, 2).to_sparse(), "dense"),
    (lambda: torch.empty(2, device="meta"), "meta"),
    (lambda: torch.randn(2, dtype=torch.complex128), "view_as_real"),
])
def test_tensors_without_plain_layout_are_refused(make, word):
    with pytest.raises(NotSerializableError, match=r"model\['w'\]") as e:
        encode({"model": {"w": make()}})
    assert word in str(e.value)


def test_object_arrays_and_cycles_are_refused():
    with pytest.raises(NotSerializableError, match="pickle"):
        encode({"a": np.array([object()])})
    loop = []
    loop.append(loop)
    with pytest.raises(NotSerializableError, match="cycle"):
        encode({"loop": loop})


def test_decoding_an_unknown_marker_or_missing_tensor_is_corruption():
    with pytest.raises(CheckpointCorruptError, match=r"\$pickle"):
        decode({"x": {"$pickle": "..."}}, {})
    with pytest.raises(CheckpointCorruptError, match="'model/w'.*does not hold") as e:
        decode({"model": {"w": {"$tensor": "model/w"}}}, {})
    assert "model['w']" in str(e.value)
    with pytest.raises(CheckpointCorruptError):
        decode({"x": {"$dtype": "nn"}}, {})


def test_map_location_moves_tensors_but_not_numpy():
    encoded, tensors = encode({"t": torch.ones(1), "a": np.ones(2)})
    decoded = decode(encoded, tensors, map_location="meta")
    assert decoded["t"].is_meta and isinstance(decoded["a"], np.ndarray)


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.binary(max_size=8),
    st.builds(lambda n, d: torch.arange(n).to(d), st.integers(0, 4), st.sampled_from([torch.float32, torch.int8])),
    st.builds(lambda n: np.arange(n, dtype=np.int16), st.integers(0, 4)),
)
keys = st.one_of(st.text(max_size=6), st.integers(), st.booleans(), st.none(), st.tuples(st.integers()))
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_random_nested_trees_round_trip(tree):
    decoded, _ = round_trip({"root": tree})
    assert same({"root": tree}, decoded) or _has_nan(tree)


def _has_nan(tree):
    return "nan" in repr(tree)
