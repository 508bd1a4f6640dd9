"""savegame.SummaryWriter against torch.utils.tensorboard.SummaryWriter: one logging script, run
once with each writer, must read back the same through TensorBoard's readers, kind by kind.

Wall times are ignored. The one intended difference checked for explicitly: ``add_hparams``
without ``run_name`` -- torch writes a timestamped sub-run, savegame the same run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from readback import (
    ROOT,
    decode_wav,
    graph_def,
    legacy,
    load_contents,
    load_logdir,
    pixels,
    runs_and_tags,
)
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.plugins.audio import plugin_data_pb2 as audio_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.mesh import plugin_data_pb2 as mesh_pb2
from tensorboard.plugins.pr_curve import plugin_data_pb2 as pr_pb2
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter as TorchWriter

import savegame

HPARAMS = {"lr": 0.003, "batch": 64, "optimizer": "adamw", "dropout": 0.1}
HP_METRICS = {"hparam/acc": 0.875, "hparam/loss": 0.25}
NAMED_HPARAMS = {"lr": 0.1, "optimizer": "sgd"}
NAMED_METRICS = {"hparam/acc": 0.5}
SSI = "_hparams_/session_start_info"
LAYOUT = {
    "Training": {"loss": ["Multiline", ["loss/train", "losses"]]},
    "Quality": {"acc band": ["Margin", ["acc", "lr", "int"]]},
}


def log_everything(Writer, log_dir: Path) -> None:
    """Every add_* kind, fixed data, several steps. Deterministic: same calls, same values."""
    rng = np.random.default_rng(1234)
    gen = torch.Generator().manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    vertices = torch.tensor([[[1.0, 1, 1], [-1, -1, 1], [1, -1, -1], [-1, 1, -1]]])
    colors = torch.tensor([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 255]]], dtype=torch.int32)
    faces = torch.tensor([[[0, 2, 3], [0, 3, 1], [0, 1, 2], [1, 3, 2]]], dtype=torch.int32)
    mesh_config = {"camera": {"cls": "PerspectiveCamera", "fov": 75}, "lights": [{"cls": "AmbientLight"}]}

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None

    w = Writer(str(log_dir))
    w.add_custom_scalars(LAYOUT)
    w.add_graph(model, torch.zeros(2, 4))
    for step in range(3):
        # scalars of every input type, odd tags, non-finite values
        w.add_scalar("loss/train", float(rng.normal()), step)
        w.add_scalar("acc", np.float32(rng.random()), step)
        w.add_scalar("lr", torch.tensor(0.1 / (step + 1)), step)
        w.add_scalar("int", step * 7, step)
        w.add_scalar("weird", [float("nan"), float("inf"), float("-inf")][step], step)
        w.add_scalar("with space/ünïcødé", torch.tensor([step / 3], dtype=torch.float64), step)
        w.add_scalar("precise", 1 / (step + 3), step, new_style=True, double_precision=True)
        w.add_scalar("tensor_style", 2 / (step + 3), step, new_style=True)
        w.add_scalars("losses", {"train": float(rng.random()), "val": float(rng.random())}, step)
        w.add_scalars("a/b", {"c d": step * 0.5}, step)
        w.add_tensor("tensor", torch.from_numpy(rng.normal(size=(2, 3)).astype(np.float32)), step)
        # histograms
        w.add_histogram("weights", rng.normal(size=500), step)
        w.add_histogram("grads", torch.randn(200, generator=gen), step, bins="auto")
        w.add_histogram("ten_bins", rng.uniform(size=(10, 10)), step, bins=10)
        w.add_histogram("max_bins", rng.normal(size=300) * (step + 1), step, max_bins=25)
        w.add_histogram("ints", torch.arange(50) % (step + 3), step)
        counts = rng.integers(0, 10, 6)
        w.add_histogram_raw("raw", min=0.5, max=5.5, num=int(counts.sum()), sum=float(counts.sum() * 3),
                            sum_squares=float(counts.sum() * 10), bucket_limits=np.arange(1.0, 7.0),
                            bucket_counts=counts, global_step=step)
        # images
        w.add_image("chw_float", rng.random((3, 8, 6)), step)
        w.add_image("hwc_u8", rng.integers(0, 256, (8, 6, 3), dtype=np.uint8), step, dataformats="HWC")
        w.add_image("hw_tensor", torch.rand(5, 7, generator=gen), step, dataformats="HW")
        w.add_image("one_channel", rng.integers(0, 256, (1, 4, 9), dtype=np.uint8), step)
        w.add_image("rgba", rng.random((6, 5, 4)).astype(np.float32), step, dataformats="HWC")
        w.add_image("out_of_range", rng.normal(size=(3, 4, 4)) * 2, step)
        w.add_images("batch", torch.rand(5, 3, 4, 4, generator=gen), step)
        w.add_images("batch_nhwc_gray", rng.integers(0, 256, (10, 4, 3, 1), dtype=np.uint8), step,
                     dataformats="NHWC")
        w.add_image_with_boxes("boxes", rng.random((3, 32, 32)), np.array([[2, 2, 20, 20], [10, 5, 30, 28]]),
                               step, labels=["a", "bee"])
        w.add_image_with_boxes("boxes_rescaled", torch.rand(3, 16, 16, generator=gen),
                               torch.tensor([[1.0, 1.0, 9.0, 12.0]]), step, rescale=2)
        # text, audio
        w.add_text("notes", f"step **{step}** ünïcødé\n| a | b |\n|---|---|\n| 1 | 2 |", step)
        sound = np.sin(np.arange(800) * (step + 1) / 10) * 0.8
        w.add_audio("sound", torch.from_numpy(sound).unsqueeze(0), step, sample_rate=8000)
        w.add_audio("clipped", sound * 3, step)
        # pr curves
        labels = rng.integers(0, 2, 64)
        predictions = rng.random(64)
        w.add_pr_curve("pr", labels, predictions, step, num_thresholds=21)
        w.add_pr_curve("pr_default", torch.from_numpy(labels), torch.from_numpy(predictions), step)
        w.add_pr_curve("pr_weighted", labels, predictions, step, num_thresholds=9, weights=rng.random(64))
        tp = np.array([10, 8, 5, 2, 0]); fp = np.array([10, 4, 2, 1, 0])
        w.add_pr_curve_raw("pr_raw", tp, fp, 10 - fp, 10 - tp, tp / np.maximum(tp + fp, 1), tp / 10, step,
                           num_thresholds=5)
        # mesh
        w.add_mesh("mesh", vertices=vertices * (step + 1), colors=colors, faces=faces, config_dict=mesh_config,
                   global_step=step)
        w.add_mesh("cloud", vertices=vertices + step, global_step=step)
        if plt is not None:  # figures: rendered with Agg, then an image
            fig = plt.figure(figsize=(2, 1), dpi=40)
            fig.add_subplot(111).plot([0, 1, 2], [step, 0, 1])
            w.add_figure("figure", fig, step)
            w.add_figure("figures", [plt.figure(figsize=(1, 1), dpi=20) for _ in range(2)], step)
    w.add_scalar("no_step", 5.0)
    w.add_scalar("loss/train", 9.0, 1)  # a step again, out of order
    w.add_scalar("late", 1.0, 0)
    w.add_custom_scalars_multilinechart(["loss/train", "acc"], category="cat", title="ml")
    w.add_custom_scalars_marginchart(["acc", "loss/train", "lr"])
    w.add_embedding(torch.from_numpy(rng.normal(size=(9, 5)).astype(np.float32)),
                    metadata=[f"p{i}" for i in range(9)], label_img=torch.rand(9, 3, 4, 6, generator=gen),
                    global_step=0, tag="emb/feat")
    w.add_embedding(rng.normal(size=(3, 2)), metadata=[["x", 1], ["y", 2], ["z", 3]],
                    metadata_header=["name", "n"], global_step=2)
    w.add_hparams(HPARAMS, HP_METRICS, global_step=2)
    w.add_hparams(NAMED_HPARAMS, NAMED_METRICS, run_name="named", global_step=1)
    w.close()


class Logs:
    def __init__(self, root: Path):
        self.root = root
        self.data = load_logdir(root)
        self.contents = load_contents(root)


@pytest.fixture(scope="module")
def Ours():
    return savegame.SummaryWriter


@pytest.fixture(scope="module")
def logs(tmp_path_factory, Ours):
    torch_dir, ours_dir = tmp_path_factory.mktemp("torch"), tmp_path_factory.mktemp("ours")
    log_everything(TorchWriter, torch_dir)
    log_everything(Ours, ours_dir)
    return Logs(torch_dir), Logs(ours_dir)


def _timestamp_runs(data: dict) -> list[str]:
    out = []
    for run in data:
        try:
            float(run)
        except ValueError:
            continue
        out.append(run)
    return out


def _comparable(data: dict, *, ours: bool) -> dict:
    """The logs less what add_hparams writes differently on purpose: torch's timestamped run,
    savegame's session_start_info and metric scalars in the root run, and the hparams plugin tags of
    the named run (torch also writes experiment/session_end_info there). Compared separately."""
    out = {run: {p: dict(tags) for p, tags in plugins.items()} for run, plugins in data.items()}
    if not ours:
        for run in _timestamp_runs(out):
            del out[run]
    else:
        out[ROOT].pop("hparams", None)
        for tag in HP_METRICS:
            out[ROOT]["scalars"].pop(tag, None)
    out.get("named", {}).pop("hparams", None)
    return out


def _pairs(logs_pair, plugin):
    """``(run, tag, torch_rows, our_rows)`` for every tag of ``plugin``, asserting both have the same."""
    theirs, ours = (_comparable(lg.data, ours=i == 1) for i, lg in enumerate(logs_pair))
    keys_t = {(r, t) for r, ps in theirs.items() for t in ps.get(plugin, {})}
    keys_o = {(r, t) for r, ps in ours.items() for t in ps.get(plugin, {})}
    assert keys_o == keys_t, f"{plugin}: only torch {sorted(keys_t - keys_o)}, only ours {sorted(keys_o - keys_t)}"
    assert keys_t, f"the script wrote no {plugin}"
    for run, tag in sorted(keys_t):
        rows_t, rows_o = theirs[run][plugin][tag], ours[run][plugin][tag]
        assert [s for s, _ in rows_o] == [s for s, _ in rows_t], f"{plugin} {run}/{tag}: steps differ"
        yield run, tag, rows_t, rows_o


def _same_f32(a, b) -> bool:
    a, b = np.float32(a), np.float32(b)
    return bool(a == b or (math.isnan(a) and math.isnan(b)))


# -------------------------------------------------------------------------------------------------


def test_same_runs_except_torchs_timestamped_hparams_run(logs):
    theirs, ours = logs
    stamped = _timestamp_runs(theirs.data)
    assert len(stamped) == 1, f"torch should have written one timestamped hparams run: {sorted(theirs.data)}"
    assert _timestamp_runs(ours.data) == []
    assert set(ours.data) == set(theirs.data) - set(stamped)
    assert {ROOT, "losses_train", "losses_val", "a_b_c d", "named"} <= set(ours.data)


def test_same_tags_per_plugin_in_every_run(logs):
    theirs, ours = logs
    want = runs_and_tags(_comparable(theirs.data, ours=False))
    got = runs_and_tags(_comparable(ours.data, ours=True))
    assert set(got) == set(want), f"plugins: torch {sorted(want)}, ours {sorted(got)}"
    for plugin in want:
        assert got[plugin] == want[plugin], (
            f"{plugin}: only torch {sorted(want[plugin] - got[plugin])}, "
            f"only ours {sorted(got[plugin] - want[plugin])}")


def test_scalars_have_the_same_steps_and_float32_values(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "scalars"):
        for (step, vt), (_, vo) in zip(rows_t, rows_o):
            assert _same_f32(vo, vt), f"{run}/{tag} step {step}: torch {vt!r}, ours {vo!r}"


def test_histograms_have_the_same_buckets(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "histograms"):
        for (step, bt), (_, bo) in zip(rows_t, rows_o):
            np.testing.assert_array_equal(np.asarray(bo, np.float32), np.asarray(bt, np.float32),
                                          err_msg=f"{run}/{tag} step {step}")


def test_images_have_the_same_size_and_pixels(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "images"):
        for (step, (wt, ht, pngs_t)), (_, (wo, ho, pngs_o)) in zip(rows_t, rows_o):
            assert (wo, ho, len(pngs_o)) == (wt, ht, len(pngs_t)), f"{run}/{tag} step {step}"
            for pt, po in zip(pngs_t, pngs_o):
                np.testing.assert_array_equal(pixels(po), pixels(pt), err_msg=f"{run}/{tag} step {step}")


def test_audio_has_the_same_wav_samples_and_encoding(logs):
    theirs, ours = logs
    for run, tag, rows_t, rows_o in _pairs(logs, "audio"):
        for (step, clips_t), (_, clips_o) in zip(rows_t, rows_o):
            assert len(clips_o) == len(clips_t)
            for ct, co in zip(clips_t, clips_o):
                (rt, nt, wt, ft), (ro, no, wo, fo) = decode_wav(ct), decode_wav(co)
                assert (ro, no, wo) == (rt, nt, wt), f"{run}/{tag} step {step}"
                np.testing.assert_array_equal(fo, ft, err_msg=f"{run}/{tag} step {step}")
        enc_t = audio_pb2.AudioPluginData.FromString(theirs.contents[run]["audio"][tag]).encoding
        enc_o = audio_pb2.AudioPluginData.FromString(ours.contents[run]["audio"][tag]).encoding
        assert enc_o == enc_t


def test_text_is_the_same(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "text"):
        assert rows_o == rows_t, f"{run}/{tag}"


def test_tensors_are_the_same(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "tensor"):
        for (step, at), (_, ao) in zip(rows_t, rows_o):
            assert ao.dtype == at.dtype and ao.shape == at.shape, f"{run}/{tag} step {step}"
            np.testing.assert_array_equal(ao, at)


def test_pr_curves_are_the_same(logs):
    theirs, ours = logs
    for run, tag, rows_t, rows_o in _pairs(logs, "pr_curves"):
        for (step, ct), (_, co) in zip(rows_t, rows_o):
            assert co.shape == ct.shape, f"{run}/{tag} step {step}"
            np.testing.assert_array_equal(np.asarray(co, np.float32), np.asarray(ct, np.float32),
                                          err_msg=f"{run}/{tag} step {step}")
        meta_t = pr_pb2.PrCurvePluginData.FromString(theirs.contents[run]["pr_curves"][tag])
        meta_o = pr_pb2.PrCurvePluginData.FromString(ours.contents[run]["pr_curves"][tag])
        assert meta_o.num_thresholds == meta_t.num_thresholds


def test_meshes_are_the_same(logs):
    import json

    theirs, ours = logs
    for run, tag, rows_t, rows_o in _pairs(logs, "mesh"):
        for (step, mt), (_, mo) in zip(rows_t, rows_o):
            assert mo.shape == mt.shape, f"{run}/{tag} step {step}"
            np.testing.assert_array_equal(np.asarray(mo, np.float32), np.asarray(mt, np.float32))
        meta_t = mesh_pb2.MeshPluginData.FromString(theirs.contents[run]["mesh"][tag])
        meta_o = mesh_pb2.MeshPluginData.FromString(ours.contents[run]["mesh"][tag])
        assert json.loads(meta_o.json_config or "null") == json.loads(meta_t.json_config or "null"), tag
        meta_t.json_config = meta_o.json_config = ""
        assert meta_o == meta_t, tag


def test_custom_scalars_layouts_are_the_same(logs):
    for run, tag, rows_t, rows_o in _pairs(logs, "custom_scalars"):
        assert [layout for _, layout in rows_o] == [layout for _, layout in rows_t]


def test_graph_and_its_run_metadata_are_the_same(logs):
    theirs, ours = logs
    g_t, g_o = graph_def(theirs.root), graph_def(ours.root)
    assert g_o is not None, "no graph"
    assert g_o == g_t
    for run, tag, rows_t, rows_o in _pairs(logs, "graphs"):
        assert [GraphDef.FromString(g) for _, g in rows_o] == [GraphDef.FromString(g) for _, g in rows_t]
    for run, tag, rows_t, rows_o in _pairs(logs, "graph_tagged_run_metadata"):
        assert [v for _, v in rows_o] == [v for _, v in rows_t], f"{run}/{tag}"


def _hparams(content: bytes) -> dict:
    ssi = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in ssi.hparams.items()}


def test_hparams_land_in_the_same_run_for_savegame_and_a_timestamped_run_for_torch(logs):
    theirs, ours = logs
    (stamped,) = _timestamp_runs(theirs.data)
    # torch: a sub-run with the session start info and the metrics
    assert _hparams(theirs.contents[stamped]["hparams"][SSI]) == HPARAMS
    assert ROOT not in theirs.contents or "hparams" not in theirs.contents[ROOT]
    # savegame: the same session start info and metrics, in the run itself
    assert _hparams(ours.contents[ROOT]["hparams"][SSI]) == HPARAMS
    assert "_hparams_/experiment" not in ours.contents[ROOT]["hparams"]
    for tag in HP_METRICS:
        rows_t = theirs.data[stamped]["scalars"][tag]
        rows_o = ours.data[ROOT]["scalars"][tag]
        assert rows_o == rows_t == [(2, HP_METRICS[tag])], tag


def test_hparams_with_run_name_land_in_that_run_for_both(logs):
    theirs, ours = logs
    assert _hparams(ours.contents["named"]["hparams"][SSI]) == _hparams(theirs.contents["named"]["hparams"][SSI])
    assert _hparams(ours.contents["named"]["hparams"][SSI]) == NAMED_HPARAMS
    assert ours.data["named"]["scalars"] == theirs.data["named"]["scalars"] == {"hparam/acc": [(1, 0.5)]}


def _non_event_files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and "tfevents" not in p.name}


def test_embedding_projector_files_are_the_same(logs):
    theirs, ours = logs
    files_t, files_o = _non_event_files(theirs.root), _non_event_files(ours.root)
    assert sorted(files_o) == sorted(files_t)
    assert "projector_config.pbtxt" in files_t and "00000/emb%2ffeat/tensors.tsv" in files_t
    config_t = text_format.Parse(files_t["projector_config.pbtxt"].read_text(), ProjectorConfig())
    config_o = text_format.Parse(files_o["projector_config.pbtxt"].read_text(), ProjectorConfig())
    assert config_o == config_t
    for name, path_t in files_t.items():
        path_o = files_o[name]
        if name.endswith("tensors.tsv"):
            def parse(p):
                return np.array([[float(x) for x in line.split("\t")] for line in p.read_text().splitlines()],
                                np.float32)
            np.testing.assert_array_equal(parse(path_o), parse(path_t), err_msg=name)
        elif name.endswith(".png"):
            np.testing.assert_array_equal(pixels(path_o.read_bytes()), pixels(path_t.read_bytes()), err_msg=name)
        elif name.endswith(".tsv"):
            assert path_o.read_bytes() == path_t.read_bytes(), name


def _array_key(a: np.ndarray):
    return a.dtype.str, a.shape, a.tolist() if a.dtype == object else a.tobytes()


def _legacy_view(run_dir: Path, drop_scalars=(), drop_tensors=()) -> dict:
    acc = legacy(run_dir)
    tags = acc.Tags()
    scalars = {t: [(e.step, np.float32(e.value)) for e in acc.Scalars(t)] for t in tags["scalars"]
               if t not in drop_scalars}
    hists = {}
    for t in tags["histograms"]:
        hists[t] = [(e.step, e.histogram_value.min, e.histogram_value.max, e.histogram_value.num,
                     list(e.histogram_value.bucket_limit), list(e.histogram_value.bucket))
                    for e in acc.Histograms(t)]
    images = {t: [(e.step, e.width, e.height, pixels(e.encoded_image_string).tobytes()) for e in acc.Images(t)]
              for t in tags["images"]}
    audio = {t: [(e.step, e.sample_rate, e.length_frames, e.content_type,
                  decode_wav(e.encoded_audio_string)[3].tobytes()) for e in acc.Audio(t)]
             for t in tags["audio"]}
    tensors = {t: [(e.step, _array_key(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(t)]
               for t in tags["tensors"] if t not in drop_tensors}
    return {"scalars": scalars, "histograms": hists, "images": images, "audio": audio,
            "tensors": tensors, "graph": tags["graph"], "run_metadata": tags["run_metadata"]}


def test_legacy_event_accumulator_sees_the_same(logs):
    """User scripts read logs with ``event_accumulator.EventAccumulator(...).Scalars(tag)`` etc."""
    theirs, ours = logs
    for run in sorted(_comparable(ours.data, ours=True)):
        sub = "" if run == ROOT else run
        drop_s, drop_t = (tuple(HP_METRICS), (SSI,)) if run == ROOT else ((), ())
        if run == "named":
            drop_t = tuple(t for t in theirs.contents["named"]["hparams"])
        view_t = _legacy_view(theirs.root / sub, (), drop_t)
        view_o = _legacy_view(ours.root / sub, drop_s, drop_t)
        for kind in view_t:
            if isinstance(view_t[kind], dict):
                assert sorted(view_o[kind]) == sorted(view_t[kind]), f"{run}: {kind} tags"
                for tag in view_t[kind]:
                    got, want = view_o[kind][tag], view_t[kind][tag]
                    if kind == "scalars":
                        assert len(got) == len(want) and all(
                            g[0] == w[0] and _same_f32(g[1], w[1]) for g, w in zip(got, want)), f"{run}/{tag}"
                    else:
                        assert got == want, f"{run}: {kind} {tag}"
            else:
                assert view_o[kind] == view_t[kind], f"{run}: {kind}"


def _purge_scenario(Writer, root: Path) -> None:
    with Writer(str(root)) as w:
        for step in range(10):
            w.add_scalar("x", step, step)
    with Writer(str(root), purge_step=5) as w:
        for step in range(5, 8):
            w.add_scalar("x", 100 + step, step)


def test_purge_step_reads_back_like_torch(tmp_path, Ours):
    _purge_scenario(TorchWriter, tmp_path / "torch")
    _purge_scenario(Ours, tmp_path / "ours")
    want = [(e.step, e.value) for e in legacy(tmp_path / "torch").Scalars("x")]
    assert want == [(s, float(s)) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 8)]
    assert [(e.step, e.value) for e in legacy(tmp_path / "ours").Scalars("x")] == want
    assert load_logdir(tmp_path / "ours")[ROOT]["scalars"]["x"] == load_logdir(tmp_path / "torch")[ROOT]["scalars"]["x"]

