"""Read a TensorBoard log directory back with TensorBoard's own readers, for the tests in tests/log.

``load_logdir`` goes through ``plugin_event_multiplexer`` -- the loader TensorBoard itself serves
the dashboards from (every record migrated by ``data_compat``/``dataclass_compat``, so a scalar
written as ``simple_value`` and one written as a ``scalars`` tensor read back the same) -- with
every reservoir unlimited, so nothing is sampled away. ``legacy`` is the older
``event_accumulator.EventAccumulator`` that user scripts call (``.Scalars(tag)``, ``.Images(tag)``...).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util

ROOT = "."  # the multiplexer's name for the run written directly into the log directory

# legacy reader: keep every item of every kind (0 = unlimited)
LEGACY_KEEP_ALL = {
    event_accumulator.COMPRESSED_HISTOGRAMS: 0,
    event_accumulator.IMAGES: 0,
    event_accumulator.AUDIO: 0,
    event_accumulator.SCALARS: 0,
    event_accumulator.HISTOGRAMS: 0,
    event_accumulator.TENSORS: 0,
}


def event_files(directory) -> list[Path]:
    """The event files directly inside ``directory`` (not in its sub-runs), sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and "tfevents" in p.name)


def all_event_files(directory) -> list[Path]:
    """Every event file under ``directory``, sub-runs included."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and "tfevents" in p.name)


def _multiplexer(logdir) -> plugin_event_multiplexer.EventMultiplexer:
    mux = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=plugin_event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE,
        tensor_size_guidance={},  # every plugin falls back to TENSORS: 0 = keep all
    )
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mux


def _decode(plugin: str, tensor_proto):
    """A plugin's tensor in the form a test can compare."""
    if plugin == "scalars":
        return float(tensor_util.make_ndarray(tensor_proto))
    if plugin == "images":  # [width, height, png, png, ...]
        width, height, *pngs = tensor_proto.string_val
        return int(width), int(height), list(pngs)
    if plugin == "audio":  # [wav, wav, ...] (labels projected out by dataclass_compat)
        return list(tensor_proto.string_val)
    if plugin == "text":
        return [s.decode("utf-8") for s in tensor_util.make_ndarray(tensor_proto).reshape(-1)]
    if plugin == "custom_scalars":
        return layout_pb2.Layout.FromString(tensor_proto.string_val[0])
    if plugin in ("graphs", "graph_run_metadata", "graph_run_metadata_graph", "graph_keras_model",
                  "graph_tagged_run_metadata"):
        return bytes(tensor_proto.string_val[0])
    if plugin == "hparams":
        return None  # the data is the summary metadata's content: see ``load_contents``
    return tensor_util.make_ndarray(tensor_proto)


def _tensor_tags(mux):
    """``(run, tag, accumulator, metadata)`` for every tensor-style tag of every run, runs sorted."""
    for run in sorted(mux.Runs()):
        acc = mux.GetAccumulator(run)
        for tag in acc.Tags()[plugin_event_accumulator.TENSORS]:
            yield run, tag, acc, acc.SummaryMetadata(tag)


def load_logdir(logdir) -> dict:
    """``{run: {plugin: {tag: [(step, value), ...]}}}`` for every run under ``logdir``.

    ``run`` is TensorBoard's run name (``"."`` for ``logdir`` itself, ``"sub"`` for ``logdir/sub``);
    wall times are dropped. For ``hparams`` the value is the tag's plugin content (bytes)."""
    mux = _multiplexer(logdir)
    out: dict = {run: {} for run in sorted(mux.Runs())}
    for run, tag, acc, meta in _tensor_tags(mux):
        plugin = meta.plugin_data.plugin_name
        if plugin == "hparams":
            rows = [(ev.step, bytes(meta.plugin_data.content)) for ev in acc.Tensors(tag)]
        else:
            rows = [(ev.step, _decode(plugin, ev.tensor_proto)) for ev in acc.Tensors(tag)]
        out[run].setdefault(plugin, {})[tag] = rows
    return out


def load_contents(logdir) -> dict:
    """``{run: {plugin: {tag: content_bytes}}}``: each tag's plugin content (its first metadata)."""
    mux = _multiplexer(logdir)
    out: dict = {run: {} for run in sorted(mux.Runs())}
    for run, tag, _, meta in _tensor_tags(mux):
        out[run].setdefault(meta.plugin_data.plugin_name, {})[tag] = bytes(meta.plugin_data.content)
    return out


def graph_def(run_dir):
    """The run's GraphDef as TensorBoard's graph dashboard gets it, or None."""
    acc = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc.Graph() if acc.Tags()["graph"] else None


def legacy(run_dir) -> event_accumulator.EventAccumulator:
    """The legacy ``EventAccumulator`` over one run directory, everything kept, already reloaded."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance=LEGACY_KEEP_ALL)
    acc.Reload()
    return acc


def pixels(png: bytes) -> np.ndarray:
    """A PNG decoded to an ``H x W x 4`` uint8 RGBA array (so grey/RGB/RGBA encodings of the
    same picture compare equal, and alpha still counts)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA")).copy()


def decode_wav(data: bytes) -> tuple[int, int, int, np.ndarray]:
    """``(sample_rate, channels, sample_width_bytes, frames as int16 array)`` of a WAV file."""
    with wave.open(io.BytesIO(data), "rb") as w:
        frames = w.readframes(w.getnframes())
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), np.frombuffer(frames, "<i2").copy()


def runs_and_tags(data: dict) -> dict:
    """``{plugin: {(run, tag), ...}}`` from a ``load_logdir`` result."""
    out: dict = {}
    for run, plugins in data.items():
        for plugin, tags in plugins.items():
            out.setdefault(plugin, set()).update((run, tag) for tag in tags)
    return out
