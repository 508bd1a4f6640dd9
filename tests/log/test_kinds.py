"""savegame.SummaryWriter, kind by kind: what each add_* writes is what TensorBoard's own readers
read back (``readback.load_logdir`` = the dashboards' loader, ``readback.legacy`` = the
``EventAccumulator`` user scripts call), plus the writer's life cycle: flush, close, a torn tail."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from readback import (
    ROOT,
    all_event_files,
    decode_wav,
    event_files,
    graph_def,
    legacy,
    load_contents,
    load_logdir,
    pixels,
)
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.mesh import metadata as mesh_metadata
from tensorboard.plugins.mesh import plugin_data_pb2 as mesh_pb2
from tensorboard.plugins.pr_curve import plugin_data_pb2 as pr_pb2
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

import savegame


@pytest.fixture
def Writer():
    return savegame.SummaryWriter


def f32(x) -> np.float32:
    return np.float32(x)


def same_f32(a, b) -> bool:
    """float32 equality where NaN equals NaN (and +inf/-inf only themselves)."""
    a, b = f32(a), f32(b)
    return bool(a == b or (math.isnan(a) and math.isnan(b)))


def rgba(rgb: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 picture as the H x W x 4 RGBA a decoded PNG compares against."""
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([rgb.astype(np.uint8), alpha], axis=2)


# a 2 x 3 RGB picture with every channel value distinct, HWC
IMG_HWC = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 13 + 7
# floats whose *255 are integers plus a hair, so truncating and rounding encoders agree
FLOAT_LEVELS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], np.float32)


# -------------------------------------------------------------------------------------------------
# files and constructor


def test_event_files_are_named_tfevents_and_end_with_filename_suffix(Writer, tmp_path):
    w = Writer(tmp_path, filename_suffix=".sgtest")
    w.add_scalar("x", 1.0, 0)
    w.close()
    files = event_files(tmp_path)
    assert files, "no event file written into log_dir"
    assert all("tfevents" in p.name and p.name.endswith(".sgtest") for p in files), files


def test_get_logdir_returns_the_log_dir(Writer, tmp_path):
    w = Writer(str(tmp_path / "run"))
    try:
        assert os.fspath(w.get_logdir()) == str(tmp_path / "run")
        assert os.fspath(w.log_dir) == str(tmp_path / "run")
    finally:
        w.close()


def test_default_log_dir_is_runs_datetime_host_comment(Writer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = Writer(comment="_sgcomment")
    w.add_scalar("x", 1.0, 0)
    w.close()
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("_sgcomment"), runs
    assert event_files(runs[0])


# -------------------------------------------------------------------------------------------------
# scalars


def test_scalars_read_back_with_their_steps_and_values_of_every_input_type(Writer, tmp_path):
    grad = torch.tensor(1.25, requires_grad=True) * 2  # a loss-like tensor that needs grad
    written = [
        (0, 1.5),  # python float
        (1, 7),  # python int
        (2, np.float32(0.25)),  # numpy scalars
        (3, np.float64(0.1)),
        (4, np.int64(-3)),
        (5, torch.tensor(3.25)),  # 0-d CPU tensor
        (6, torch.tensor([2.0], dtype=torch.float64)),  # one-element tensor
        (7, grad),
        (8, float("nan")),
        (9, float("inf")),
        (10, float("-inf")),
        (11, torch.tensor(float("nan"))),
        (10**12, -2.0),  # a step past 2**32
    ]
    with Writer(tmp_path) as w:
        for step, value in written:
            w.add_scalar("loss", value, step)

    rows = load_logdir(tmp_path)[ROOT]["scalars"]["loss"]
    assert [s for s, _ in rows] == [s for s, _ in written]
    expected = [float(torch.as_tensor(v).detach().reshape(())) for _, v in written]
    for (step, got), want in zip(rows, expected):
        assert same_f32(got, want), (step, got, want)
    assert math.isnan(rows[8][1]) and rows[9][1] == math.inf and rows[10][1] == -math.inf


def test_legacy_event_accumulator_reads_the_scalars_too(Writer, tmp_path):
    with Writer(tmp_path) as w:
        for step, value in enumerate([0.5, float("nan"), float("inf"), -1.0]):
            w.add_scalar("train/loss", value, step)
    events = legacy(tmp_path).Scalars("train/loss")
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert all(same_f32(e.value, v) for e, v in zip(events, [0.5, float("nan"), float("inf"), -1.0]))


def test_scalar_tags_keep_spaces_slashes_and_unicode(Writer, tmp_path):
    tags = {"with space": 1.0, "a/b/c": 2.0, "ünïcødé/λ": 3.0, "日本語 タグ": 4.0, "trailing/": 5.0}
    with Writer(tmp_path) as w:
        for tag, value in tags.items():
            w.add_scalar(tag, value, 4)
    scalars = load_logdir(tmp_path)[ROOT]["scalars"]
    assert {tag: rows for tag, rows in scalars.items()} == {tag: [(4, v)] for tag, v in tags.items()}


def test_scalar_without_global_step_is_logged_at_step_zero(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_scalar("x", 2.0)
    assert load_logdir(tmp_path)[ROOT]["scalars"]["x"] == [(0, 2.0)]


def test_many_tags_at_one_step_all_read_back(Writer, tmp_path):
    with Writer(tmp_path) as w:
        for step in range(3):
            for i in range(20):
                w.add_scalar(f"m/{i}", i * 10 + step, step)
    scalars = load_logdir(tmp_path)[ROOT]["scalars"]
    assert scalars == {f"m/{i}": [(s, float(i * 10 + s)) for s in range(3)] for i in range(20)}


def test_add_scalars_writes_one_sub_run_per_tag_named_like_torch(Writer, tmp_path):
    with Writer(tmp_path) as w:
        for step in range(2):
            w.add_scalars("loss", {"train": 1.0 + step, "val": 2.0 + step}, step)
            w.add_scalars("a/b", {"x y": 5.0 * step}, step)
    data = load_logdir(tmp_path)
    assert set(data) >= {"loss_train", "loss_val", "a_b_x y"}
    assert data["loss_train"]["scalars"] == {"loss": [(0, 1.0), (1, 2.0)]}
    assert data["loss_val"]["scalars"] == {"loss": [(0, 2.0), (1, 3.0)]}
    assert data["a_b_x y"]["scalars"] == {"a/b": [(0, 0.0), (1, 5.0)]}
    assert "loss" not in data.get(ROOT, {}).get("scalars", {})


# -------------------------------------------------------------------------------------------------
# tensors, histograms


def test_add_tensor_reads_back_shape_dtype_and_values(Writer, tmp_path):
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4
    b = torch.tensor([[-1, 2**40]], dtype=torch.int64)
    with Writer(tmp_path) as w:
        w.add_tensor("t/float", a, 3)
        w.add_tensor("t/int", b, 4)
    tensors = load_logdir(tmp_path)[ROOT]["tensor"]
    (step_a, got_a), = tensors["t/float"]
    (step_b, got_b), = tensors["t/int"]
    assert step_a == 3 and got_a.dtype == np.float32 and np.array_equal(got_a, a.numpy())
    assert step_b == 4 and got_b.dtype == np.int64 and np.array_equal(got_b, b.numpy())


@pytest.mark.parametrize(
    "values, kwargs",
    [
        (np.random.default_rng(0).normal(size=1000), {}),
        (torch.randn(300, generator=torch.Generator().manual_seed(1)), {"bins": "auto"}),
        (np.random.default_rng(2).uniform(-5, 5, size=(10, 20)), {"bins": 10}),
        (np.full(7, 3.0), {}),
        (np.random.default_rng(3).normal(size=500), {"max_bins": 30}),
    ],
    ids=["normal-default-bins", "tensor-auto", "2d-10-bins", "constant", "max_bins"],
)
def test_histogram_counts_sum_to_the_number_of_values_and_span_min_to_max(Writer, tmp_path, values, kwargs):
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    with Writer(tmp_path) as w:
        w.add_histogram("h", values, 5, **kwargs)

    (step, buckets), = load_logdir(tmp_path)[ROOT]["histograms"]["h"]
    assert step == 5 and buckets.ndim == 2 and buckets.shape[1] == 3
    assert buckets[:, 2].sum() == flat.size
    assert buckets[0, 0] == f32(flat.min()) and buckets[-1, 1] == f32(flat.max())
    assert np.all(buckets[:, 0] <= buckets[:, 1])
    if "max_bins" in kwargs:
        assert len(buckets) <= kwargs["max_bins"]

    (h,) = legacy(tmp_path).Histograms("h")
    hv = h.histogram_value
    assert h.step == 5 and hv.num == flat.size and sum(hv.bucket) == flat.size
    assert hv.min == pytest.approx(flat.min()) and hv.max == pytest.approx(flat.max())
    assert hv.sum == pytest.approx(flat.sum()) and hv.sum_squares == pytest.approx(flat @ flat)


def test_histogram_raw_reads_back_exactly(Writer, tmp_path):
    limits, counts = [1.0, 2.0, 3.0, 4.0], [0, 3, 5, 2]
    with Writer(tmp_path) as w:
        w.add_histogram_raw("raw", min=1.5, max=3.5, num=10, sum=24.0, sum_squares=61.0,
                            bucket_limits=limits, bucket_counts=counts, global_step=2)
    (h,) = legacy(tmp_path).Histograms("raw")
    hv = h.histogram_value
    assert (h.step, hv.min, hv.max, hv.num, hv.sum, hv.sum_squares) == (2, 1.5, 3.5, 10, 24.0, 61.0)
    assert list(hv.bucket_limit) == limits and list(hv.bucket) == counts
    (step, buckets), = load_logdir(tmp_path)[ROOT]["histograms"]["raw"]
    assert step == 2 and buckets[:, 2].tolist() == [3, 5, 2]
    assert buckets[0, 0] == 1.5 and buckets[-1, 1] == 3.5


def test_histogram_raw_with_mismatched_lengths_raises_value_error(Writer, tmp_path):
    with Writer(tmp_path) as w:
        with pytest.raises(ValueError):
            w.add_histogram_raw("raw", 0, 1, 2, 1, 1, bucket_limits=[1, 2], bucket_counts=[2], global_step=0)


# -------------------------------------------------------------------------------------------------
# images


def _image(data, tag):
    (step, (width, height, pngs)), = data[ROOT]["images"][tag]
    return step, width, height, pngs


@pytest.mark.parametrize(
    "tensor, dataformats, expected_rgb",
    [
        (IMG_HWC.transpose(2, 0, 1), "CHW", IMG_HWC),
        (torch.from_numpy(IMG_HWC.transpose(2, 0, 1).copy()), None, IMG_HWC),  # default dataformats CHW
        (IMG_HWC, "HWC", IMG_HWC),
        (IMG_HWC[:, :, 0], "HW", np.repeat(IMG_HWC[:, :, :1], 3, axis=2)),
        (IMG_HWC[:, :, 0].T, "WH", np.repeat(IMG_HWC[:, :, :1], 3, axis=2)),
        (IMG_HWC[None, :, :, 1], "CHW", np.repeat(IMG_HWC[:, :, 1:2], 3, axis=2)),  # one channel
        (FLOAT_LEVELS.reshape(2, 3), "HW", np.repeat((FLOAT_LEVELS * 255).astype(np.uint8).reshape(2, 3, 1), 3, 2)),
        (torch.from_numpy(np.stack([FLOAT_LEVELS.reshape(2, 3)] * 3)), "CHW",
         np.repeat((FLOAT_LEVELS * 255).astype(np.uint8).reshape(2, 3, 1), 3, 2)),
        (np.full((2, 3, 3), 2.0, np.float32), "HWC", np.full((2, 3, 3), 255, np.uint8)),  # clipped
    ],
    ids=["chw-u8", "chw-tensor-default", "hwc-u8", "hw-u8", "wh-u8", "1hw-u8", "hw-float", "chw-float",
         "float-clipped"],
)
def test_image_decodes_to_the_logged_pixels(Writer, tmp_path, tensor, dataformats, expected_rgb):
    kwargs = {} if dataformats is None else {"dataformats": dataformats}
    with Writer(tmp_path) as w:
        w.add_image("img", tensor, 3, **kwargs)
    step, width, height, pngs = _image(load_logdir(tmp_path), "img")
    assert (step, width, height, len(pngs)) == (3, 3, 2, 1)
    assert pngs[0].startswith(b"\x89PNG")
    np.testing.assert_array_equal(pixels(pngs[0]), rgba(expected_rgb))

    (ev,) = legacy(tmp_path).Images("img")
    assert (ev.step, ev.width, ev.height) == (3, 3, 2)
    np.testing.assert_array_equal(pixels(ev.encoded_image_string), rgba(expected_rgb))


def test_rgba_image_keeps_its_alpha(Writer, tmp_path):
    img = np.concatenate([IMG_HWC, np.array([[[0], [128], [255]], [[64], [32], [16]]], np.uint8)], axis=2)
    with Writer(tmp_path) as w:
        w.add_image("rgba", img, 0, dataformats="HWC")
    _, width, height, (png,) = _image(load_logdir(tmp_path), "rgba")
    assert (width, height) == (3, 2)
    np.testing.assert_array_equal(pixels(png), img)


def test_add_images_tiles_the_batch_like_torch(Writer, tmp_path):
    second = 255 - IMG_HWC
    batch_nchw = np.stack([IMG_HWC, second]).transpose(0, 3, 1, 2)
    expected = np.concatenate([IMG_HWC, second], axis=1)  # one row: [img0 | img1]
    ten = np.stack([IMG_HWC] * 10).transpose(0, 3, 1, 2)  # 10 > 8 columns: two rows, zero-padded
    expected_ten = np.zeros((4, 24, 3), np.uint8)
    expected_ten[:2, :] = np.concatenate([IMG_HWC] * 8, axis=1)
    expected_ten[2:, :6] = np.concatenate([IMG_HWC] * 2, axis=1)
    with Writer(tmp_path) as w:
        w.add_images("nchw", batch_nchw, 1)
        w.add_images("nchw_tensor_float", torch.from_numpy(batch_nchw.astype(np.float32) / 255), 1)
        w.add_images("nhwc", batch_nchw.transpose(0, 2, 3, 1), 1, dataformats="NHWC")
        w.add_images("ten", ten, 1)
    data = load_logdir(tmp_path)
    for tag in ("nchw", "nhwc"):
        step, width, height, (png,) = _image(data, tag)
        assert (step, width, height) == (1, 6, 2), tag
        np.testing.assert_array_equal(pixels(png), rgba(expected), err_msg=tag)
    _, width, height, (png,) = _image(data, "nchw_tensor_float")
    assert (width, height) == (6, 2)
    assert np.abs(pixels(png).astype(int) - rgba(expected)).max() <= 1
    _, width, height, (png,) = _image(data, "ten")
    assert (width, height) == (24, 4)
    np.testing.assert_array_equal(pixels(png), rgba(expected_ten))


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.add_image("bad", np.zeros((4, 5))),  # 2-d, default CHW
        lambda w: w.add_image("bad", np.zeros((1, 3, 4, 5))),  # 4-d, default CHW
        lambda w: w.add_image("bad", np.zeros((4, 5, 3)), dataformats="HW"),
        lambda w: w.add_images("bad", np.zeros((3, 4, 5))),  # 3-d, default NCHW
        lambda w: w.add_image_with_boxes("bad", np.zeros((4, 5)), np.array([[0, 0, 1, 1]])),
    ],
    ids=["image-2d-chw", "image-4d-chw", "image-3d-hw", "images-3d-nchw", "boxes-2d-chw"],
)
def test_wrong_image_shape_raises_value_error_naming_dataformats_and_writer_keeps_working(Writer, tmp_path, call):
    with Writer(tmp_path) as w:
        with pytest.raises(ValueError, match="dataformats"):
            call(w)
        w.add_scalar("after", 1.0, 0)
    data = load_logdir(tmp_path)
    assert data[ROOT]["scalars"]["after"] == [(0, 1.0)]
    assert "bad" not in data[ROOT].get("images", {})


def test_image_with_boxes_draws_red_box_outlines(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_image_with_boxes("boxes", np.zeros((3, 12, 12), np.float32), np.array([[2, 2, 8, 8]]), 0)
        w.add_image_with_boxes("labelled", torch.zeros(3, 40, 40), torch.tensor([[2, 20, 30, 38]]), 0,
                               labels=["cat"])
    data = load_logdir(tmp_path)
    _, width, height, (png,) = _image(data, "boxes")
    assert (width, height) == (12, 12)
    p = pixels(png)
    red, black = [255, 0, 0, 255], [0, 0, 0, 255]
    for y, x in [(1, 2), (5, 2), (5, 8), (9, 5), (1, 8)]:  # on the outline
        assert p[y, x].tolist() == red, (y, x)
    for y, x in [(5, 5), (0, 0), (11, 11), (5, 10)]:  # inside and outside
        assert p[y, x].tolist() == black, (y, x)
    _, width, height, (png,) = _image(data, "labelled")
    assert (width, height) == (40, 40)
    assert (pixels(png)[..., 0] > 0).sum() > (p[..., 0] > 0).sum()  # outline plus a label box


def test_add_figure_renders_the_figure_and_closes_it(Writer, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1), dpi=50)
    fig.add_subplot(111).plot([0, 1], [1, 0])
    figs = [plt.figure(figsize=(1, 1), dpi=40) for _ in range(2)]
    with Writer(tmp_path) as w:
        w.add_figure("fig", fig, 2)
        w.add_figure("figs", figs, 2)
    data = load_logdir(tmp_path)
    step, width, height, (png,) = _image(data, "fig")
    assert (step, width, height) == (2, 100, 50) and pixels(png).shape == (50, 100, 4)
    _, width, height, _ = _image(data, "figs")
    assert (width, height) == (80, 40)
    assert not plt.fignum_exists(fig.number)


def test_add_video_without_moviepy_warns_or_writes_a_gif(Writer, tmp_path):
    video = torch.rand(1, 4, 3, 8, 8)
    try:
        import moviepy.editor  # noqa: F401  (what torch's GIF encoder imports; gone in moviepy 2)
    except ImportError:
        with Writer(tmp_path) as w:
            with pytest.warns(UserWarning, match="pip install 'moviepy<2'"):
                w.add_video("v", video, 0, fps=4)  # skipped, like torch's (which prints a line)
            w.add_scalar("after", 1.0, 0)  # the run goes on
        data = load_logdir(tmp_path)[ROOT]
        assert data["scalars"]["after"] == [(0, 1.0)] and "v" not in data.get("images", {})
        return
    with Writer(tmp_path) as w:
        w.add_video("v", video, 0, fps=4)
    _, width, height, (gif,) = _image(load_logdir(tmp_path), "v")
    assert (width, height) == (8, 8) and gif.startswith(b"GIF8")


# -------------------------------------------------------------------------------------------------
# text, audio


def test_text_reads_back_under_tag_text_summary(Writer, tmp_path):
    texts = ["hello **markdown**", "ünïcødé λ 日本\nsecond line", ""]
    with Writer(tmp_path) as w:
        for step, text in enumerate(texts):
            w.add_text("notes", text, step)
    data = load_logdir(tmp_path)[ROOT]["text"]
    assert data == {"notes/text_summary": [(i, [t]) for i, t in enumerate(texts)]}


def test_audio_decodes_to_a_wav_with_the_sample_rate_and_length(Writer, tmp_path):
    n, rate = 1000, 16000
    sound = 0.5 * torch.sin(torch.arange(n, dtype=torch.float32) / 10)
    loud = np.linspace(-2, 2, 50)  # out of [-1, 1]: clipped
    with Writer(tmp_path) as w:
        w.add_audio("sine", sound.unsqueeze(0), 2, sample_rate=rate)  # (1, L)
        w.add_audio("loud", loud, 3)  # default sample rate 44100
    data = load_logdir(tmp_path)[ROOT]["audio"]
    (step, (wav,)), = data["sine"]
    got_rate, channels, width, frames = decode_wav(wav)
    assert (step, got_rate, channels, width, len(frames)) == (2, rate, 1, 2, n)
    assert np.abs(frames.astype(int) - (sound.numpy() * 32767).astype(int)).max() <= 1
    (step, (wav,)), = data["loud"]
    got_rate, _, _, frames = decode_wav(wav)
    assert (step, got_rate, len(frames)) == (3, 44100, 50)
    assert frames.min() >= -32768 and frames[0] <= -32767 and frames[-1] == 32767

    ev = {e.step: e for e in legacy(tmp_path).Audio("sine")}[2]
    assert (ev.sample_rate, ev.length_frames, ev.content_type) == (rate, n, "audio/wav")


# -------------------------------------------------------------------------------------------------
# pr curves, mesh


def test_pr_curve_is_a_6_by_num_thresholds_tensor_in_the_pr_curves_plugin(Writer, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    predictions = rng.random(100)
    with Writer(tmp_path) as w:
        w.add_pr_curve("pr", labels, predictions, 1, num_thresholds=11)
        w.add_pr_curve("pr_default", torch.from_numpy(labels), torch.from_numpy(predictions), 1)
    data = load_logdir(tmp_path)[ROOT]["pr_curves"]
    contents = load_contents(tmp_path)[ROOT]["pr_curves"]
    (step, curve), = data["pr"]
    assert step == 1 and curve.shape == (6, 11)
    tp, fp, tn, fn, precision, recall = curve
    assert tp[0] == labels.sum() and fp[0] == 100 - labels.sum()  # threshold 0: everything positive
    assert np.all(tp + fn == labels.sum()) and np.all(fp + tn == 100 - labels.sum())
    assert recall[0] == 1.0
    assert pr_pb2.PrCurvePluginData.FromString(contents["pr"]).num_thresholds == 11
    (_, curve), = data["pr_default"]
    assert curve.shape == (6, 127)
    assert pr_pb2.PrCurvePluginData.FromString(contents["pr_default"]).num_thresholds == 127


def test_pr_curve_raw_reads_back_exactly(Writer, tmp_path):
    k = 5
    tp, fp = np.array([5, 4, 3, 1, 0]), np.array([5, 2, 1, 0, 0])
    tn, fn = 5 - fp, 5 - tp
    precision = np.array([0.5, 0.66, 0.75, 1.0, 0.0])
    recall = tp / 5
    with Writer(tmp_path) as w:
        w.add_pr_curve_raw("raw", tp, fp, tn, fn, precision, recall, 4, num_thresholds=k)
    (step, curve), = load_logdir(tmp_path)[ROOT]["pr_curves"]["raw"]
    assert step == 4
    np.testing.assert_array_equal(curve, np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32))
    content = load_contents(tmp_path)[ROOT]["pr_curves"]["raw"]
    assert pr_pb2.PrCurvePluginData.FromString(content).num_thresholds == k


def test_mesh_writes_vertices_faces_colors_with_mesh_plugin_data(Writer, tmp_path):
    vertices = torch.tensor([[[1.0, 1, 1], [-1, -1, 1], [1, -1, -1], [-1, 1, -1]]])
    colors = torch.tensor([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 255]]], dtype=torch.int32)
    faces = torch.tensor([[[0, 2, 3], [0, 3, 1], [0, 1, 2], [1, 3, 2]]], dtype=torch.int32)
    config = {"camera": {"cls": "PerspectiveCamera", "fov": 75}}
    with Writer(tmp_path) as w:
        w.add_mesh("shape", vertices=vertices, colors=colors, faces=faces, config_dict=config, global_step=6)
        w.add_mesh("cloud", vertices=vertices, global_step=7)
    data = load_logdir(tmp_path)[ROOT]["mesh"]
    contents = load_contents(tmp_path)[ROOT]["mesh"]
    assert set(data) == {"shape_VERTEX", "shape_FACE", "shape_COLOR", "cloud_VERTEX"}
    for tag, tensor in [("shape_VERTEX", vertices), ("shape_FACE", faces), ("shape_COLOR", colors)]:
        (step, got), = data[tag]
        assert step == 6 and np.array_equal(got, tensor.numpy()), tag
        meta = mesh_pb2.MeshPluginData.FromString(contents[tag])
        assert meta.name == "shape" and list(meta.shape) == list(tensor.shape)
        assert mesh_pb2.MeshPluginData.ContentType.Name(meta.content_type) == tag.split("_")[1]
        assert json.loads(meta.json_config) == config
        assert meta.components == mesh_metadata.get_components_bitmask(
            [mesh_pb2.MeshPluginData.VERTEX, mesh_pb2.MeshPluginData.FACE, mesh_pb2.MeshPluginData.COLOR])
    (step, got), = data["cloud_VERTEX"]
    assert step == 7 and np.array_equal(got, vertices.numpy())
    meta = mesh_pb2.MeshPluginData.FromString(contents["cloud_VERTEX"])
    assert meta.components == mesh_metadata.get_components_bitmask([mesh_pb2.MeshPluginData.VERTEX])


# -------------------------------------------------------------------------------------------------
# hparams, custom scalars, graph, embedding


def _hparams_of(content: bytes) -> dict:
    """A session_start_info plugin content as ``{name: python value}`` (parsed with the hparams
    plugin's own helper; a bool stored as number 1.0 compares equal to True)."""
    ssi = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in ssi.hparams.items()}


HPARAMS = {"lr": 0.01, "batch": 32, "optimizer": "adam", "nesterov": True}


def test_add_hparams_writes_session_start_info_and_metrics_into_the_same_run(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_scalar("loss", 1.0, 0)
        w.add_hparams(HPARAMS, {"hp/acc": 0.75, "hp/loss": 0.125})
    assert {p.parent for p in all_event_files(tmp_path)} == {tmp_path}, "hparams went into a sub-run"
    data = load_logdir(tmp_path)
    assert set(data) == {ROOT}
    hp = data[ROOT]["hparams"]
    assert "_hparams_/session_start_info" in hp
    assert "_hparams_/experiment" not in hp  # TensorBoard derives the experiment from the runs
    contents = load_contents(tmp_path)[ROOT]["hparams"]
    assert _hparams_of(contents["_hparams_/session_start_info"]) == HPARAMS
    scalars = data[ROOT]["scalars"]
    assert [v for _, v in scalars["hp/acc"]] == [0.75] and [v for _, v in scalars["hp/loss"]] == [0.125]
    assert scalars["loss"] == [(0, 1.0)]


def test_add_hparams_metrics_are_scalars_at_global_step(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_hparams({"lr": 0.5}, {"m": 1.0, "n": torch.tensor(2.5)}, global_step=3)
    content = load_contents(tmp_path)[ROOT]["hparams"]["_hparams_/session_start_info"]
    assert hparams_metadata.parse_session_start_info_plugin_data(content).hparams["lr"].number_value == 0.5
    scalars = load_logdir(tmp_path)[ROOT]["scalars"]
    assert scalars["m"] == [(3, 1.0)] and scalars["n"] == [(3, 2.5)]


def test_add_hparams_with_run_name_writes_into_that_sub_run(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_scalar("loss", 1.0, 0)
        w.add_hparams({"lr": 0.1, "opt": "sgd"}, {"hp/acc": 0.5}, run_name="trial 1", global_step=4)
    data = load_logdir(tmp_path)
    assert "trial 1" in data
    assert _hparams_of(load_contents(tmp_path)["trial 1"]["hparams"]["_hparams_/session_start_info"]) == {
        "lr": 0.1, "opt": "sgd"}
    assert data["trial 1"]["scalars"]["hp/acc"] == [(4, 0.5)]
    assert "hparams" not in data[ROOT] and "hp/acc" not in data[ROOT]["scalars"]


def test_add_hparams_rejects_non_dicts_with_type_error(Writer, tmp_path):
    with Writer(tmp_path) as w:
        with pytest.raises(TypeError):
            w.add_hparams([("lr", 0.1)], {"m": 1.0})


def test_custom_scalars_layout_reads_back(Writer, tmp_path):
    layout = {
        "Losses": {"loss": ["Multiline", ["loss/train", "loss/val"]]},
        "Bands": {"acc": ["Margin", ["acc/mid", "acc/lo", "acc/hi"]]},
    }
    with Writer(tmp_path / "full") as w:
        w.add_custom_scalars(layout)
    with Writer(tmp_path / "multi") as w:
        w.add_custom_scalars_multilinechart(["a", "b"], category="C", title="T")
    with Writer(tmp_path / "margin") as w:
        w.add_custom_scalars_marginchart(["m", "lo", "hi"])

    def only_layout(run):
        (step, got), = load_logdir(tmp_path / run)[ROOT]["custom_scalars"]["custom_scalars__config__"]
        return got

    got = only_layout("full")
    cats = {c.title: c for c in got.category}
    assert set(cats) == {"Losses", "Bands"}
    (chart,) = cats["Losses"].chart
    assert chart.title == "loss" and list(chart.multiline.tag) == ["loss/train", "loss/val"]
    (chart,) = cats["Bands"].chart
    (series,) = chart.margin.series
    assert chart.title == "acc" and (series.value, series.lower, series.upper) == ("acc/mid", "acc/lo", "acc/hi")

    (cat,) = only_layout("multi").category
    assert cat.title == "C" and cat.chart[0].title == "T" and list(cat.chart[0].multiline.tag) == ["a", "b"]
    (cat,) = only_layout("margin").category
    assert (cat.title, cat.chart[0].title) == ("default", "untitled")
    assert cat.chart[0].margin.series[0].value == "m"


def test_add_graph_writes_the_traced_model(Writer, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with Writer(tmp_path) as w:
        w.add_graph(model, torch.zeros(1, 4))
    g = graph_def(tmp_path)
    assert g is not None, "no graph in the run"
    ops = [n.op for n in g.node]
    assert ops.count("aten::linear") == 2 and ops.count("aten::relu") == 1
    assert any("Linear[0]" in n.name for n in g.node)
    assert legacy(tmp_path).Graph() is not None


def test_add_embedding_writes_projector_files(Writer, tmp_path):
    mat = torch.tensor([[0.5, -1.25, 3.0], [1e-3, 2.0, -0.0], [7.0, 8.5, 9.25], [0.1, 0.2, 0.3]])
    labels = ["cat", "dog", "ünï", "42"]
    label_img = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    with Writer(tmp_path) as w:
        w.add_embedding(mat, metadata=labels, label_img=label_img, global_step=7, tag="emb/x")
        w.add_embedding(mat.numpy()[:2], metadata=[["a", 1], ["b", 2]], metadata_header=["name", "n"])

    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert len(config.embeddings) == 2
    first, second = config.embeddings
    assert first.tensor_name == "emb/x:00007"
    assert first.tensor_path == "00007/emb%2fx/tensors.tsv"
    assert first.metadata_path == "00007/emb%2fx/metadata.tsv"
    assert first.sprite.image_path == "00007/emb%2fx/sprite.png"
    assert list(first.sprite.single_image_dim) == [5, 5]
    assert second.tensor_name == "default:00000" and second.tensor_path == "00000/default/tensors.tsv"

    folder = tmp_path / "00007" / "emb%2fx"
    rows = [[float(x) for x in line.split("\t")] for line in (folder / "tensors.tsv").read_text().splitlines()]
    np.testing.assert_array_equal(np.array(rows, np.float32), mat.numpy())
    assert (folder / "metadata.tsv").read_text(encoding="utf-8").splitlines() == labels
    sprite = pixels((folder / "sprite.png").read_bytes())
    assert sprite.shape == (10, 10, 4)  # ceil(sqrt(4)) = 2 images a side
    top_left = (label_img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(sprite[:5, :5, :3].astype(int) - top_left).max() <= 1
    assert (tmp_path / "00000" / "default" / "metadata.tsv").read_text().splitlines() == ["name\tn", "a\t1", "b\t2"]


# -------------------------------------------------------------------------------------------------
# the writer works later, on another thread: what it writes is what the arguments were at the call


def _capture_cases():
    """name -> (log(w) returning a function that mutates the arguments in place, check(root))."""

    def histogram(w):
        values = np.arange(10.0)
        w.add_histogram("h", values, 0)
        return lambda: values.fill(-50.0)

    def check_histogram(root):
        (_, buckets), = load_logdir(root)[ROOT]["histograms"]["h"]
        assert buckets[0, 0] == 0.0 and buckets[-1, 1] == 9.0

    def image(w):
        img = torch.from_numpy(IMG_HWC.transpose(2, 0, 1).copy())
        w.add_image("img", img, 0)
        return lambda: img.zero_()

    def check_image(root):
        (_, (_, _, (png,))), = load_logdir(root)[ROOT]["images"]["img"]
        np.testing.assert_array_equal(pixels(png), rgba(IMG_HWC))

    def tensor(w):
        t = torch.arange(4.0)
        w.add_tensor("t", t, 0)
        return lambda: t.mul_(-1)

    def check_tensor(root):
        (_, got), = load_logdir(root)[ROOT]["tensor"]["t"]
        assert got.tolist() == [0.0, 1.0, 2.0, 3.0]

    def audio(w):
        clip = np.full(100, 0.5)
        w.add_audio("a", clip, 0, sample_rate=1000)
        return lambda: clip.fill(0.0)

    def check_audio(root):
        (_, (wav,)), = load_logdir(root)[ROOT]["audio"]["a"]
        assert decode_wav(wav)[3].min() > 0

    def histogram_raw_lists(w):
        limits, counts = [1.0, 2.0, 3.0], [1, 2, 3]
        w.add_histogram_raw("raw", 0.5, 3.0, 6, 12.0, 30.0, limits, counts, global_step=0)
        def mutate():
            counts[:] = [0, 0, 0]
            limits[:] = [7.0, 8.0, 9.0]
        return mutate

    def check_histogram_raw(root):
        (h,) = legacy(root).Histograms("raw")
        assert list(h.histogram_value.bucket) == [1, 2, 3] and list(h.histogram_value.bucket_limit) == [1, 2, 3]

    def pr_curve_raw_lists(w):
        parts = [[3, 1], [2, 0], [0, 2], [0, 2], [0.6, 1.0], [1.0, 0.3]]
        w.add_pr_curve_raw("pr", *parts, 0, num_thresholds=2)
        return lambda: [p.__setitem__(0, 99) for p in parts]

    def check_pr_curve_raw(root):
        (_, curve), = load_logdir(root)[ROOT]["pr_curves"]["pr"]
        assert curve[:, 0].tolist() == pytest.approx([3, 2, 0, 0, 0.6, 1.0])

    def layout(w):
        chart = ["Multiline", ["a", "b"]]
        w.add_custom_scalars({"cat": {"chart": chart}})
        return lambda: chart[1].append("c")

    def check_layout(root):
        (_, got), = load_logdir(root)[ROOT]["custom_scalars"]["custom_scalars__config__"]
        assert list(got.category[0].chart[0].multiline.tag) == ["a", "b"]

    def mesh_config(w):
        config = {"camera": {"fov": 75}}
        w.add_mesh("m", torch.zeros(1, 3, 3), config_dict=config, global_step=0)
        return lambda: config["camera"].__setitem__("fov", 10)

    def check_mesh_config(root):
        content = load_contents(root)[ROOT]["mesh"]["m_VERTEX"]
        assert json.loads(mesh_pb2.MeshPluginData.FromString(content).json_config) == {"camera": {"fov": 75}}

    def embedding(w):
        mat = np.eye(2, dtype=np.float32)
        rows = [["a", 1], ["b", 2]]
        header = ["name", "n"]
        w.add_embedding(mat, metadata=rows, metadata_header=header, global_step=1)
        def mutate():
            mat.fill(5.0)
            rows[0][0] = "zzz"
            header[0] = "changed"
        return mutate

    def check_embedding(root):
        folder = root / "00001" / "default"
        assert (folder / "tensors.tsv").read_text().split() == ["1.0", "0.0", "0.0", "1.0"]
        assert (folder / "metadata.tsv").read_text().splitlines() == ["name\tn", "a\t1", "b\t2"]

    return {
        "histogram": (histogram, check_histogram),
        "image": (image, check_image),
        "tensor": (tensor, check_tensor),
        "audio": (audio, check_audio),
        "histogram_raw-lists": (histogram_raw_lists, check_histogram_raw),
        "pr_curve_raw-lists": (pr_curve_raw_lists, check_pr_curve_raw),
        "custom_scalars-layout": (layout, check_layout),
        "mesh-config_dict": (mesh_config, check_mesh_config),
        "embedding-metadata": (embedding, check_embedding),
    }


@pytest.mark.parametrize("case", list(_capture_cases()))
def test_arguments_mutated_right_after_the_call_do_not_change_what_is_written(Writer, tmp_path, case):
    log, check = _capture_cases()[case]
    with Writer(tmp_path) as w:
        mutate = log(w)
        mutate()  # a training loop updates its tensors/buffers in place right after logging them
    check(tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_log_the_values_they_had_at_the_call(Writer, tmp_path):
    x = torch.full((), 2.5, device="cuda")
    h = torch.arange(10.0, device="cuda")
    img = torch.ones(3, 2, 3, device="cuda")
    with Writer(tmp_path) as w:
        w.add_scalar("s", x, 0)
        x.add_(1)  # in place, on the same stream, right after the call
        w.add_histogram("h", h, 0)
        h.fill_(-1)
        w.add_image("i", img, 0)
        img.zero_()
        w.add_scalar("s", x, 1)
        w.add_scalars("pair", {"a": x * 2}, 0)
    data = load_logdir(tmp_path)
    assert data[ROOT]["scalars"]["s"] == [(0, 2.5), (1, 3.5)]
    assert data["pair_a"]["scalars"]["pair"] == [(0, 7.0)]
    (_, buckets), = data[ROOT]["histograms"]["h"]
    assert buckets[0, 0] == 0.0 and buckets[-1, 1] == 9.0
    (_, (_, _, (png,))), = data[ROOT]["images"]["i"]
    assert (pixels(png) == 255).all()


def test_explicit_walltime_is_recorded(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_scalar("x", 1.0, 0, walltime=1234.5)
        w.add_text("t", "hi", 0, walltime=2345.25)
    (ev,) = legacy(tmp_path).Scalars("x")
    assert ev.wall_time == 1234.5
    (ev,) = legacy(tmp_path).Tensors("t/text_summary")
    assert ev.wall_time == 2345.25


@pytest.mark.parametrize("step", [np.int64(4), np.int32(4), torch.tensor(4), 4.0],
                         ids=["np.int64", "np.int32", "tensor", "float"])
def test_global_step_of_integer_like_types_is_accepted(Writer, tmp_path, step):
    with Writer(tmp_path) as w:
        w.add_scalar("x", 1.0, step)
        w.add_histogram("h", np.arange(3.0), step)
        w.add_scalars("m", {"a": 1.0}, step)
    data = load_logdir(tmp_path)
    assert data[ROOT]["scalars"]["x"] == [(4, 1.0)] and data[ROOT]["histograms"]["h"][0][0] == 4
    assert data["m_a"]["scalars"]["m"] == [(4, 1.0)]


def test_out_of_order_and_repeated_steps_are_all_kept_in_call_order(Writer, tmp_path):
    calls = [("loss", 0, 1.0), ("loss", 1, 2.0), ("val", 1, 5.0), ("loss", 2, 3.0), ("val", 0, 4.0),
             ("loss", 1, 2.5), ("loss", 3, 4.0)]
    with Writer(tmp_path) as w:
        for tag, step, value in calls:
            w.add_scalar(tag, value, step)
    scalars = load_logdir(tmp_path)[ROOT]["scalars"]
    for tag in ("loss", "val"):
        assert scalars[tag] == [(s, v) for t, s, v in calls if t == tag]
    assert [(e.step, e.value) for e in legacy(tmp_path).Scalars("loss")] == [(s, v) for t, s, v in calls if t == "loss"]


def test_a_value_that_fails_to_encode_is_reported_and_everything_else_is_written(Writer, tmp_path):
    """torch raises at the call; an asynchronous writer may raise there or at the next flush, but
    must not lose the error nor any other value."""
    w = Writer(tmp_path)
    w.add_scalar("before", 1.0, 0)
    raised_at_call = True
    try:
        w.add_histogram("bad", np.array([]), 0)  # torch: ValueError("The input has no element.")
    except ValueError:
        pass
    else:
        raised_at_call = False
    w.add_scalar("after", 2.0, 1)
    if not raised_at_call:
        with pytest.raises((ValueError, RuntimeError), match="add_histogram"):
            w.flush()
    w.add_scalar("later", 3.0, 2)
    w.flush()  # reported once; the writer goes on
    w.close()
    data = load_logdir(tmp_path)[ROOT]
    assert data["scalars"] == {"before": [(0, 1.0)], "after": [(1, 2.0)], "later": [(2, 3.0)]}
    assert "histograms" not in data


# -------------------------------------------------------------------------------------------------
# life cycle


def test_flush_makes_everything_logged_before_it_readable_without_close(Writer, tmp_path):
    w = Writer(tmp_path)
    try:
        for step in range(5):
            w.add_scalar("x", step * 1.5, step)
        w.add_scalars("pair", {"a": 1.0, "b": 2.0}, 0)
        w.add_image("img", IMG_HWC, 0, dataformats="HWC")
        w.add_text("t", "hi", 0)
        w.add_embedding(torch.eye(3), metadata=["a", "b", "c"], global_step=1)
        w.flush()
        assert (tmp_path / "projector_config.pbtxt").is_file()
        assert (tmp_path / "00001" / "default" / "metadata.tsv").read_text().splitlines() == ["a", "b", "c"]
        data = load_logdir(tmp_path)
        assert data[ROOT]["scalars"]["x"] == [(s, s * 1.5) for s in range(5)]
        assert data["pair_a"]["scalars"]["pair"] == [(0, 1.0)] and data["pair_b"]["scalars"]["pair"] == [(0, 2.0)]
        assert "img" in data[ROOT]["images"] and data[ROOT]["text"]["t/text_summary"] == [(0, ["hi"])]

        w.add_scalar("x", 100.0, 5)
        w.flush()
        assert load_logdir(tmp_path)[ROOT]["scalars"]["x"][-1] == (5, 100.0)
    finally:
        w.close()
    assert load_logdir(tmp_path)[ROOT]["scalars"]["x"] == [(s, s * 1.5) for s in range(5)] + [(5, 100.0)]


def test_flush_with_many_queued_values_writes_them_all(Writer, tmp_path):
    w = Writer(tmp_path, max_queue=3, flush_secs=1000)
    try:
        for step in range(2000):
            w.add_scalar("fast", step, step)
        w.flush()
        rows = load_logdir(tmp_path)[ROOT]["scalars"]["fast"]
        assert [s for s, _ in rows] == list(range(2000)) and [v for _, v in rows] == list(map(float, range(2000)))
    finally:
        w.close()


def _closed_calls():
    return {
        "add_scalar": lambda w: w.add_scalar("x", 1.0, 1),
        "add_scalars": lambda w: w.add_scalars("m", {"a": 1.0}, 1),
        "add_histogram": lambda w: w.add_histogram("h", np.arange(3.0), 1),
        "add_image": lambda w: w.add_image("i", IMG_HWC, 1, dataformats="HWC"),
        "add_text": lambda w: w.add_text("t", "x", 1),
        "add_hparams": lambda w: w.add_hparams({"lr": 1.0}, {"m": 1.0}),
        "add_embedding": lambda w: w.add_embedding(torch.zeros(2, 2), global_step=9),
        "add_custom_scalars": lambda w: w.add_custom_scalars({"c": {"t": ["Multiline", ["x"]]}}),
    }


@pytest.mark.parametrize("name", list(_closed_calls()))
def test_a_call_after_close_reopens_into_a_new_event_file_as_in_torch(Writer, tmp_path, name):
    w = Writer(tmp_path)
    w.add_scalar("x", 0.5, 0)
    w.close()
    before = {p: p.read_bytes() for p in all_event_files(tmp_path)}
    _closed_calls()[name](w)  # torch's _get_file_writer makes a new FileWriter
    assert w.file_writer is not None
    w.close()
    assert w.file_writer is None
    after = {p: p.read_bytes() for p in all_event_files(tmp_path)}
    assert {p: after[p] for p in before} == before  # the old files are untouched
    assert len(event_files(tmp_path)) == 2  # a new file in the run folder itself
    data = load_logdir(tmp_path)
    assert data[ROOT]["scalars"]["x"][0] == (0, 0.5)
    if name == "add_scalar":
        assert data[ROOT]["scalars"]["x"] == [(0, 0.5), (1, 1.0)]


def test_flush_and_close_after_close_are_harmless_no_ops(Writer, tmp_path):
    """Like torch: ``with SummaryWriter(...) as w: ...; w.close()`` must not blow up on exit."""
    with Writer(tmp_path) as w:
        w.add_scalar("x", 1.0, 0)
        w.close()
        before = {p: p.read_bytes() for p in all_event_files(tmp_path)}
        w.flush()
        w.close()
    assert {p: p.read_bytes() for p in all_event_files(tmp_path)} == before
    assert load_logdir(tmp_path)[ROOT]["scalars"]["x"] == [(0, 1.0)]


def test_context_manager_closes_the_writer(Writer, tmp_path):
    with Writer(tmp_path) as w:
        w.add_scalar("x", 1.0, 0)
    assert w.file_writer is None  # torch's test_summary_writer_ctx
    assert load_logdir(tmp_path)[ROOT]["scalars"]["x"] == [(0, 1.0)]


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each TFRecord in an event file's bytes."""
    out, i = [], 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        out.append((i, 8 + 4 + n + 4))
        i += 8 + 4 + n + 4
    assert i == len(data), "event file does not end on a record boundary"
    return out


@pytest.mark.parametrize("tail", ["garbage", "truncated-last-record", "header-only"])
def test_a_torn_tail_does_not_hide_the_records_before_it(Writer, tmp_path, tail):
    with Writer(tmp_path) as w:
        for step in range(6):
            w.add_scalar("x", step / 2, step)
            w.add_text("t", f"line {step}", step)
    (path,) = event_files(tmp_path)
    intact = path.read_bytes()
    before = load_logdir(tmp_path)
    assert before[ROOT]["scalars"]["x"] == [(s, s / 2) for s in range(6)]
    start, length = _records(intact)[-1]
    torn = {
        "garbage": b"\x07\x00garbage bytes\xff",
        "truncated-last-record": intact[start:start + length - 3],
        "header-only": intact[start:start + 10],
    }[tail]
    path.write_bytes(intact + torn)
    assert load_logdir(tmp_path) == before
    assert [(e.step, e.value) for e in legacy(tmp_path).Scalars("x")] == [(s, s / 2) for s in range(6)]
