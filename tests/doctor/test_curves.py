"""The doctor's reader: every writer's event files, read like tensorboard's own loader reads them."""

import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from savegame import SummaryWriter
from savegame.doctor import LogdirError, load_runs, read_run
from savegame.doctor.eventscan import scan_scalars


def accumulator_scalars(folder):
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[ea.SCALARS]}
    for tag in acc.Tags()[ea.TENSORS]:  # new-style scalars
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        from tensorboard.util import tensor_util
        out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return out


def ours(folder):
    run = read_run(folder)
    return {tag: list(zip(s.steps.tolist(), s.values.tolist())) for tag, s in run.scalars.items()}


def same(a, b):
    assert a.keys() == b.keys()
    for tag in a:
        assert [s for s, _ in a[tag]] == [s for s, _ in b[tag]], tag
        for (_, x), (_, y) in zip(a[tag], b[tag]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6), tag


@pytest.mark.parametrize("writer", ["torch", "savegame", "tensorboardX"])
def test_reader_matches_tensorboards_loader_for_every_writer(tmp_path, writer):
    rng = np.random.default_rng(0)
    values = rng.normal(size=300).astype(np.float32).tolist()
    values[7], values[8], values[9] = math.nan, math.inf, -math.inf
    if writer == "tensorboardX":
        from tensorboardX import SummaryWriter as XWriter
        make = XWriter
    else:
        make = TorchWriter if writer == "torch" else SummaryWriter
    with make(str(tmp_path)) as w:
        for step, value in enumerate(values):
            w.add_scalar("loss/train", value, step)
            if step % 10 == 0:
                w.add_scalar("loss/val", value * 2, step)
                w.add_scalar("über/ünïcode tag", 1.5, step)
        w.add_histogram("weights", np.arange(10.0), 3)  # a record the fast path hands to protobuf
        w.add_text("note", "hello", 4)
    same(ours(tmp_path), accumulator_scalars(tmp_path))


def test_new_style_tensor_scalars_are_read(tmp_path):
    with TorchWriter(str(tmp_path)) as w:
        for step in range(5):
            w.add_scalar("loss", 1.0 / (step + 1), step, new_style=True)
    assert ours(tmp_path) == {"loss": [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]}
    same(ours(tmp_path), accumulator_scalars(tmp_path))


def test_torn_and_damaged_tails_end_the_file_like_tensorboard(tmp_path):
    with TorchWriter(str(tmp_path)) as w:
        for step in range(50):
            w.add_scalar("loss", float(step), step)
    [path] = [p for p in tmp_path.iterdir() if "tfevents" in p.name]
    blob = path.read_bytes()
    path.write_bytes(blob[:-7])  # torn mid-record
    assert [s for s, _ in ours(tmp_path)["loss"]] == list(range(49))
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF  # a flipped bit: the checksum stops reading there
    path.write_bytes(bytes(damaged))
    steps = [s for s, _ in ours(tmp_path)["loss"]]
    assert steps == list(range(len(steps))) and 10 < len(steps) < 49


def test_scan_falls_back_to_protobuf_for_anything_but_plain_scalars():
    from tensorboard.compat.proto import event_pb2, summary_pb2
    event = event_pb2.Event(step=3, wall_time=1.0, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="a", simple_value=1.0,
                                  metadata=summary_pb2.SummaryMetadata(display_name="A"))]))
    from savegame.log.records import frame
    found, others = {}, []
    scan_scalars(frame(event.SerializeToString()) + frame(b"\x10\x05"), found, others.append)
    assert found == {} and len(others) == 2


def test_add_scalars_children_and_add_hparams_folders_fold_into_their_run(tmp_path):
    with TorchWriter(str(tmp_path / "exp")) as w:
        for step in range(1, 20):
            w.add_scalars("loss", {"train": 1.0 / step, "val": 2.0 / step}, step)
        w.add_hparams({"lr": 0.1, "opt": "sgd", "wd": True}, {"hp/best": 1.0})
    [run] = load_runs(tmp_path)
    assert run.name == "exp"
    assert sorted(run.scalars) == ["loss/train", "loss/val"]
    assert run.hparams == {"lr": 0.1, "opt": "sgd", "wd": True}


def test_a_resumed_torch_run_uses_the_rerun_values_for_repeated_steps(tmp_path):
    with TorchWriter(str(tmp_path)) as w:  # the first process: steps 1..30, died
        for step in range(1, 31):
            w.add_scalar("loss", 100.0 + step, step)
    with TorchWriter(str(tmp_path)) as w:  # resumed from a checkpoint at step 20: a second file
        for step in range(21, 41):
            w.add_scalar("loss", float(step), step)
    run = read_run(tmp_path)
    s = run.scalars["loss"]
    assert s.steps.tolist() == list(range(1, 41))
    assert s.values[:20].tolist() == [100.0 + k for k in range(1, 21)]
    assert s.values[20:].tolist() == [float(k) for k in range(21, 41)]
    assert [n.kind for n in run.notes] == ["restarted"]


def test_runs_are_found_at_any_depth_and_named_relative_to_the_root(tmp_path):
    for name in ("a", "sweep/lr_0.1", "sweep/lr_0.01", "lightning_logs/version_0"):
        with TorchWriter(str(tmp_path / name)) as w:
            w.add_scalar("train_loss_step", 1.0, 1)
    (tmp_path / "a" / "checkpoints").mkdir()  # never searched
    assert [r.name for r in load_runs(tmp_path)] == ["a", "lightning_logs/version_0", "sweep/lr_0.01",
                                                     "sweep/lr_0.1"]
    assert [r.name for r in load_runs(tmp_path / "a")] == ["a"]  # a root that is a run: its folder's name


def test_missing_paths_and_files_are_clear_errors_and_an_empty_folder_has_no_runs(tmp_path):
    with pytest.raises(LogdirError, match="does not exist"):
        load_runs(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(LogdirError, match="is a file"):
        load_runs(tmp_path / "file.txt")
    assert load_runs(tmp_path) == []
    assert isinstance(LogdirError("x"), FileNotFoundError)


def test_an_unreadable_event_file_does_not_hide_the_others(tmp_path):
    with TorchWriter(str(tmp_path)) as w:
        w.add_scalar("loss", 1.0, 1)
    (tmp_path / "events.out.tfevents.0.garbage").write_bytes(os.urandom(100))
    assert ours(tmp_path) == {"loss": [(1, 1.0)]}


from hypothesis import given, settings, strategies as st  # noqa: E402

_tags = st.text(min_size=0, max_size=12)
_events = st.lists(st.tuples(st.integers(-2**63, 2**63 - 1) | st.integers(0, 300),
                             st.floats(allow_nan=False, width=64) | st.sampled_from([0.0, 1.0]),
                             st.lists(st.tuples(st.sampled_from(["loss", "a/b", "ü"]) | _tags,
                                                st.floats(width=32)), min_size=0, max_size=3),
                             st.booleans()), max_size=30)


@settings(max_examples=150, deadline=None)
@given(_events)
def test_the_hand_decoder_agrees_with_protobuf_on_any_scalar_event(events):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from savegame.log.records import frame
    blob, expected = b"", {}
    for step, wall_time, values, with_metadata in events:
        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=value,
                                      metadata=summary_pb2.SummaryMetadata(display_name="d") if with_metadata else None)
            for tag, value in values])
        blob += frame(event_pb2.Event(step=step, wall_time=wall_time, summary=summary).SerializeToString())
    found = {}

    def other(data):  # what the fast path hands back, decoded by protobuf, in order (as curves.py does)
        event = event_pb2.Event.FromString(data)
        for value in event.summary.value:
            steps, kept = found.setdefault(value.tag, ([], []))
            steps.append(event.step)
            kept.append(value.simple_value)

    assert scan_scalars(blob, found, other) == len(blob)
    for step, _, values, _ in events:
        for tag, value in values:
            steps, kept = expected.setdefault(tag, ([], []))
            steps.append(step)
            kept.append(np.float32(value))
    assert found.keys() == expected.keys()
    for tag, (steps, kept) in expected.items():
        got_steps, got_values = found[tag]
        assert got_steps == steps
        assert np.array_equal(np.asarray(got_values, np.float32), np.asarray(kept, np.float32), equal_nan=True)
