"""``savegame.SummaryWriter``: torch's ``SummaryWriter`` API, without slowing the training loop.

Swap the import and a script keeps working: the same constructor, methods, arguments and
defaults, the same TensorBoard dashboards. What changes is where the work happens. A call records
its arguments (a scalar in ~1 µs, a CUDA tensor with an asynchronous copy, never a device sync) and
returns; a background thread builds the summaries with tensorboard's own protos and writes them.

Intended differences from torch's writer:

- ``add_hparams`` without ``run_name`` puts the hyperparameters in *this* run, beside its curves
  (torch makes a sub-run per call); every scalar of the run is then a metric in the HPARAMS tab.
- A ``Run``'s writer (``run.writer``) stays closed once the run has finished: a call then raises
  :class:`~savegame.errors.WriterClosedError`. The run has released its folder (another process
  may be resuming it) and a resume moves any event file that no checkpoint recorded aside. A
  writer of your own reopens as torch's does: a call after ``close()`` starts a new event file in
  the same ``log_dir``, and the next ``close()`` closes it again.
- ``add_video`` without ``moviepy<2`` warns once per writer (a ``UserWarning`` with the
  ``pip install``) and writes nothing; torch prints a line per call and writes an empty image.
- Under ``torch.distributed`` only rank 0 writes (``rank_zero_only=True``); other ranks' calls
  return at once.
- A ``log_dir`` removed under an open writer stays removed: the log thread never recreates it, and
  reports it as any write failure (a ``RuntimeWarning`` at once, then
  :class:`~savegame.errors.LogWriteError` from the next ``flush()``, ``close()`` or ``add_*``
  that queues a job), once; what is logged meanwhile is lost. torch's ``add_embedding`` makes the
  folder again, and its other calls write on into the deleted files without a word.
- ``flush()`` returns when everything logged before it is in the files. Data reaches the OS a few
  times a second, so a SIGKILL loses at most a fraction of a second (``flush_secs`` bounds the
  time between fsyncs); ``max_queue`` is accepted and unused: the caller never waits for a queue.

>>> import tempfile, torch
>>> from savegame import SummaryWriter
>>> with SummaryWriter(tempfile.mkdtemp()) as writer:
...     for step in range(3):
...         writer.add_scalar("loss/train", 1.0 / (step + 1), step)
...     writer.add_histogram("weights", torch.randn(100), 2)
"""

from __future__ import annotations

import functools
import os
import socket
import time
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import LogWriteError, WriterClosedError
from . import lifecycle
from .checks import (check_audio, check_histogram, check_image, check_same_length, check_step, check_tag,
                     check_walltime)
from ..optional import require
from .convert import (default_bins, embedding_folder_name, maybe_numpy, summary_event, to_list,
                      to_numpy, to_tensor)
from .eventfile import subfolder
from .host import resolve, scalar_on_host, tensor_on_host
from .worker import Job, LogWorker

# Past this many unwritten items the caller waits for the log thread (memory stays bounded).
MAX_BACKLOG = 500_000

_OPEN, _CLOSED, _SILENT = "open", "closed", "silent"


def _when_open(method: Callable) -> Callable:
    """Make ``method`` reopen the writer after ``close()`` (as torch's), raise for a finished
    ``Run``'s writer, and return at once on a silent (non-zero) rank, before it copies or checks
    anything."""
    name = method.__name__

    @functools.wraps(method)
    def checked(self: "SummaryWriter", *args: Any, **kwargs: Any) -> Any:
        if self._state is not _OPEN and not self._reopen(name):
            return None
        return method(self, *args, **kwargs)

    return checked


class _FileWriterView:
    """torch's ``FileWriter`` methods that user code reaches for: events and summaries it built
    itself go through the log thread like everything else."""

    def __init__(self, writer: SummaryWriter) -> None:
        self._writer = writer

    def get_logdir(self) -> str:
        return self._writer.log_dir

    def add_summary(self, summary: Any, global_step: int | None = None, walltime: float | None = None) -> None:
        summary = type(summary).FromString(summary.SerializeToString())  # a private copy
        self._writer._job("add_summary()", global_step, walltime, build=lambda: summary)

    def add_event(self, event: Any, step: int | None = None, walltime: float | None = None) -> None:
        event = type(event).FromString(event.SerializeToString())
        self._writer._job("add_event()", step, walltime, build=lambda: [event])

    def flush(self) -> None:
        self._writer.flush()


def _read_projector_config(root: Path) -> Any:
    """The run's projector config so far (a resumed run adds to it), or None."""
    path = root / "projector_config.pbtxt"
    if not path.is_file():
        return None
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    try:
        return text_format.Parse(path.read_text(), ProjectorConfig())
    except text_format.ParseError as error:
        raise ValueError(f"{path} is not a projector config ({error}); move it away so "
                         "add_embedding can write a new one") from None


def _summary():
    # tensorboard's protos come in through torch's summary builders: the same bytes torch writes.
    from torch.utils.tensorboard import summary
    return summary


class SummaryWriter:
    """Writes TensorBoard event files for one run folder; a drop-in for torch's ``SummaryWriter``.

    Args:
        log_dir: the run folder (default ``runs/<date>_<host><comment>``, as torch's).
        comment: appended to the default ``log_dir``.
        purge_step: as torch's (a START event that TensorBoard's legacy loader honours). A ``Run``
            does better: it cuts the files back to the checkpoint it resumes from.
        max_queue: accepted for compatibility; the caller never waits for a small queue.
        flush_secs: the longest time between fsyncs of the event files.
        filename_suffix: appended to every event file name.
        rank_zero_only: under ``torch.distributed``, only rank 0 writes.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, comment: str = "",
                 purge_step: int | None = None, max_queue: int = 10, flush_secs: float = 120,
                 filename_suffix: str = "", *, rank_zero_only: bool = True) -> None:
        if not log_dir:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = str(log_dir)
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self._state = _OPEN
        self._worker: LogWorker | None = None
        self._run_owned = False
        self._hparams_logged = False  # the first add_hparams goes into this run, later ones beside
        self._warned: set[str] = set()  # one-time warnings already given (a missing moviepy)
        if rank_zero_only and _rank() != 0:
            self._state = _SILENT
            return
        self._start(handle_sigterm=True)

    @classmethod
    def _for_run(cls, log_dir: Path, *, restart_step: int, hparams_logged: bool) -> "SummaryWriter":
        """A ``Run``'s writer. Every file it makes starts with a ``SessionLog.START`` at
        ``restart_step`` (see ``LogWorker``). The Run flushes it at each checkpoint and handles
        SIGTERM itself (saving flushes), so this writer installs no handler."""
        writer = cls.__new__(cls)
        writer.log_dir, writer.purge_step, writer.max_queue = str(log_dir), None, 10
        writer.flush_secs, writer.filename_suffix = 120, ""
        writer._state, writer._worker = _OPEN, None
        writer._run_owned, writer._hparams_logged, writer._warned = True, hparams_logged, set()
        if _rank() != 0:
            writer._state = _SILENT
        else:
            writer._start(handle_sigterm=False, restart_step=restart_step)
        return writer

    def _start(self, *, handle_sigterm: bool, restart_step: int | None = None) -> None:
        """Make the folder and its event file (as torch's constructor does) and the log thread."""
        root = Path(self.log_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._worker = LogWorker(root, flush_secs=self.flush_secs, filename_suffix=self.filename_suffix,
                                 restart_step=restart_step)
        self._queue = self._worker.queue
        self._file_writer = _FileWriterView(self)
        self._projector = _read_projector_config(root)  # grown by each add_embedding
        self._state = _OPEN
        lifecycle.track(self)
        if handle_sigterm:
            lifecycle.install_sigterm_flush()
        if self.purge_step is not None:
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog
            step = check_step("SummaryWriter", self.purge_step)
            self._job("purge_step", None, None, build=lambda: [
                Event(step=step, file_version="brain.Event:2"),
                Event(step=step, session_log=SessionLog(status=SessionLog.START))])
            self.purge_step = None

    def get_logdir(self) -> str:
        return self.log_dir

    # -- scalars: the hot path ---------------------------------------------------------------
    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, new_style: bool = False,
                   double_precision: bool = False) -> None:
        """Log one value. A Python float costs about a microsecond; a CUDA tensor is copied to the
        host asynchronously. NaN and inf are written as they are."""
        if self._state is not _OPEN and not self._reopen("add_scalar"):
            return
        if type(tag) is not str:
            check_tag("add_scalar", tag)
        if type(global_step) is not int:
            global_step = check_step("add_scalar", global_step)
        if new_style or double_precision:
            value = tensor_on_host(scalar_value)
            return self._job(f"add_scalar({tag!r})", global_step, walltime, tag=tag, build=
                             lambda: _summary().scalar(tag, resolve(value), new_style=new_style,
                                                       double_precision=double_precision))
        if type(scalar_value) is not float:
            scalar_value = scalar_on_host(scalar_value, tag)
        queue = self._queue
        queue.append((None, tag, scalar_value, global_step,
                      time.time() if walltime is None else check_walltime("add_scalar", walltime)))
        if len(queue) > MAX_BACKLOG:
            self._wait_for_backlog()

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any],
                    global_step: int | None = None, walltime: float | None = None) -> None:
        """Several curves in one chart: each ``tag`` goes to the sub-run ``<main_tag>_<tag>``."""
        if self._state is not _OPEN and not self._reopen("add_scalars"):
            return
        check_tag("add_scalars", main_tag)
        step = check_step("add_scalars", global_step)
        walltime = time.time() if walltime is None else check_walltime("add_scalars", walltime)
        prefix = main_tag.replace("/", "_") + "_"
        for tag, value in tag_scalar_dict.items():
            self._queue.append((prefix + str(tag), main_tag, scalar_on_host(value, main_tag), step, walltime))

    @_when_open
    def add_tensor(self, tag: str, tensor: Any, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        value = tensor_on_host(tensor)
        self._job(f"add_tensor({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().tensor_proto(tag, resolve(value)))

    # -- distributions -----------------------------------------------------------------------
    @_when_open
    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      bins: Any = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        if isinstance(bins, str) and bins == "tensorflow":
            bins = default_bins()
        check_histogram(tag, values)
        host = tensor_on_host(values)
        self._job(f"add_histogram({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().histogram(tag, to_numpy(resolve(host)), bins, max_bins=max_bins))

    @_when_open
    def add_histogram_raw(self, tag: str, min: float, max: float, num: int, sum: float,
                          sum_squares: float, bucket_limits: Any, bucket_counts: Any,
                          global_step: int | None = None, walltime: float | None = None) -> None:
        if len(bucket_limits) != len(bucket_counts):
            raise ValueError(f"add_histogram_raw({tag!r}): bucket_limits has {len(bucket_limits)} entries "
                             f"and bucket_counts {len(bucket_counts)}; they must be equally long")
        limits, counts = tensor_on_host(bucket_limits), tensor_on_host(bucket_counts)
        self._job(f"add_histogram_raw({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().histogram_raw(tag, min, max, num, sum, sum_squares,
                                                   to_list(resolve(limits)), to_list(resolve(counts))))

    @_when_open
    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, global_step: int | None = None,
                     num_thresholds: int = 127, weights: Any = None, walltime: float | None = None) -> None:
        check_same_length("add_pr_curve", tag, labels=labels, predictions=predictions, weights=weights)
        labels, predictions = tensor_on_host(labels), tensor_on_host(predictions)
        weights = tensor_on_host(weights)
        self._job(f"add_pr_curve({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().pr_curve(tag, to_numpy(resolve(labels)), to_numpy(resolve(predictions)),
                                              num_thresholds, maybe_numpy(resolve(weights))))

    @_when_open
    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any, false_positive_counts: Any,
                         true_negative_counts: Any, false_negative_counts: Any, precision: Any,
                         recall: Any, global_step: int | None = None, num_thresholds: int = 127,
                         weights: Any = None, walltime: float | None = None) -> None:
        parts = [tensor_on_host(x) for x in (true_positive_counts, false_positive_counts,
                                             true_negative_counts, false_negative_counts, precision, recall)]
        self._job(f"add_pr_curve_raw({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().pr_curve_raw(tag, *[to_numpy(resolve(p)) for p in parts],
                                                  num_thresholds, weights))

    # -- images, figures, video, audio, text, mesh -------------------------------------------
    @_when_open
    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "CHW") -> None:
        self._image("add_image", tag, img_tensor, global_step, walltime, dataformats)

    @_when_open
    def add_images(self, tag: str, img_tensor: Any, global_step: int | None = None,
                   walltime: float | None = None, dataformats: str = "NCHW") -> None:
        self._image("add_images", tag, img_tensor, global_step, walltime, dataformats)

    def _image(self, method: str, tag: str, img: Any, step: Any, walltime: Any, dataformats: str) -> None:
        check_image(method, tag, img, dataformats)
        host = tensor_on_host(img)
        self._job(f"{method}({tag!r})", step, walltime, tag=tag, build=
                  lambda: _summary().image(tag, to_numpy(resolve(host)), dataformats=dataformats))

    @_when_open
    def add_image_with_boxes(self, tag: str, img_tensor: Any, box_tensor: Any,
                             global_step: int | None = None, walltime: float | None = None,
                             rescale: int = 1, dataformats: str = "CHW", labels: Any = None) -> None:
        check_image("add_image_with_boxes", tag, img_tensor, dataformats)
        if labels is not None:
            labels = [labels] if isinstance(labels, str) else list(labels)
            if len(labels) != box_tensor.shape[0]:
                labels = None  # as torch: labels that don't match the boxes are dropped
        img, boxes = tensor_on_host(img_tensor), tensor_on_host(box_tensor)
        self._job(f"add_image_with_boxes({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().image_boxes(tag, to_numpy(resolve(img)), to_numpy(resolve(boxes)),
                                                 rescale=rescale, dataformats=dataformats, labels=labels))

    @_when_open
    def add_figure(self, tag: str, figure: Any, global_step: int | None = None, close: bool = True,
                   walltime: float | None = None) -> None:
        """Render a matplotlib figure (or a list of them) now, on the caller (matplotlib is not
        thread-safe), and log the pixels as an image."""
        require("matplotlib", "add_figure", "matplotlib")
        from torch.utils.tensorboard._utils import figure_to_image
        if isinstance(figure, list):
            self.add_image(tag, figure_to_image(figure, close), global_step, walltime, dataformats="NCHW")
        else:
            self.add_image(tag, figure_to_image(figure, close), global_step, walltime, dataformats="CHW")

    @_when_open
    def add_video(self, tag: str, vid_tensor: Any, global_step: int | None = None, fps: int = 4,
                  walltime: float | None = None) -> None:
        """A GIF, encoded by moviepy 1.x (``moviepy.editor``). Without it the video is skipped with
        one ``UserWarning`` per writer naming the install (torch prints a line per call and writes
        an empty image): a missing optional package never ends a training run."""
        shape = tuple(getattr(vid_tensor, "shape", ()))
        if len(shape) != 5:
            raise ValueError(f"add_video({tag!r}): expected a 5-d tensor (N, T, C, H, W), got shape {shape}")
        try:
            require("moviepy.editor", "add_video", "'moviepy<2'")
        except ImportError as error:
            if "moviepy" not in self._warned:
                self._warned.add("moviepy")
                warnings.warn(f"SummaryWriter({self.log_dir!r}): {error}. Videos are skipped until then "
                              "(this warning is shown once per writer).", UserWarning, stacklevel=3)
            return
        host = tensor_on_host(vid_tensor)
        self._job(f"add_video({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().video(tag, to_numpy(resolve(host)), fps))

    @_when_open
    def add_audio(self, tag: str, snd_tensor: Any, global_step: int | None = None,
                  sample_rate: int = 44100, walltime: float | None = None) -> None:
        check_audio(tag, snd_tensor)
        host = tensor_on_host(snd_tensor)
        self._job(f"add_audio({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().audio(tag, to_numpy(resolve(host)), sample_rate=sample_rate))

    @_when_open
    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        if not isinstance(text_string, str):
            raise TypeError(f"add_text({tag!r}): text_string must be a str, got {type(text_string).__name__}")
        self._job(f"add_text({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().text(tag, text_string))

    @_when_open
    def add_mesh(self, tag: str, vertices: Any, colors: Any = None, faces: Any = None,
                 config_dict: Any = None, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        v, c, f = tensor_on_host(vertices), tensor_on_host(colors), tensor_on_host(faces)
        config_dict = tensor_on_host(config_dict)
        self._job(f"add_mesh({tag!r})", global_step, walltime, tag=tag, build=
                  lambda: _summary().mesh(tag, to_tensor(resolve(v)), to_tensor(resolve(c)),
                                          to_tensor(resolve(f)), config_dict))

    # -- hparams, graph, embedding, custom scalars -------------------------------------------
    @_when_open
    def add_hparams(self, hparam_dict: dict, metric_dict: dict, hparam_domain_discrete: Any = None,
                    run_name: str | None = None, global_step: int | None = None) -> None:
        """Hyperparameters for the HPARAMS dashboard.

        Without ``run_name`` they go into this run, with the ``metric_dict`` values as scalars
        beside its curves; TensorBoard then lists every scalar of the run as a metric (latest
        value), so the metrics follow training. With ``run_name``, as torch: a sub-run holding
        the hparams and the metrics (``hparam_domain_discrete`` only applies there)."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("add_hparams(): hparam_dict and metric_dict must be dicts, got "
                            f"{type(hparam_dict).__name__} and {type(metric_dict).__name__}")
        experiment, start, end = _summary().hparams(hparam_dict, metric_dict, hparam_domain_discrete)
        if run_name:
            self._job("add_hparams()", global_step, None, file_key=run_name, build=lambda: [
                summary_event(experiment), summary_event(start), summary_event(end)])
        elif not self._hparams_logged:
            self._hparams_logged = True
            self._job("add_hparams()", global_step, None, build=lambda: [summary_event(start)])
        else:
            # TensorBoard keeps the first hparams record of a run: a second set (torch's
            # one-call-per-trial loop) becomes a sub-run of its own, as torch does for every call
            run_name = str(time.time())
            self._job("add_hparams()", global_step, None, file_key=run_name,
                      build=lambda: [summary_event(start)])
        for name, value in metric_dict.items():
            self._queue.append((run_name or None, name, scalar_on_host(value, name),
                                check_step("add_hparams", global_step), time.time()))

    @_when_open
    def add_graph(self, model: Any, input_to_model: Any = None, verbose: bool = False,
                  use_strict_trace: bool = True) -> None:
        """Trace ``model`` now (on the caller, it runs the model) and log its graph."""
        from tensorboard.compat.proto.event_pb2 import Event, TaggedRunMetadata
        from torch.utils.tensorboard._pytorch_graph import graph
        graph_def, step_stats = graph(model, input_to_model, verbose, use_strict_trace)
        self._job("add_graph()", None, None, build=lambda: [
            Event(graph_def=graph_def.SerializeToString()),
            Event(tagged_run_metadata=TaggedRunMetadata(tag="step1",
                                                        run_metadata=step_stats.SerializeToString()))])

    @_when_open
    def add_onnx_graph(self, prototxt: str) -> None:
        """The graph of an ONNX model file (needs the ``onnx`` package)."""
        require("onnx", "add_onnx_graph", "onnx")
        from tensorboard.compat.proto.event_pb2 import Event
        from torch.utils.tensorboard._onnx_graph import load_onnx_graph
        graph_def = load_onnx_graph(prototxt)
        self._job("add_onnx_graph()", None, None, build=lambda: [Event(graph_def=graph_def.SerializeToString())])

    @property
    def file_writer(self) -> "_FileWriterView | None":
        """For code written against torch's internals (``writer.file_writer.add_summary(...)``);
        None after ``close()``, as torch's."""
        if self._state is _CLOSED:
            return None
        view = getattr(self, "_file_writer", None)
        if view is None:  # a silent rank never started: its view's calls return at once
            view = self._file_writer = _FileWriterView(self)
        return view

    def _get_file_writer(self) -> "_FileWriterView":
        """torch's accessor: reopens the writer after ``close()``, as torch's does."""
        if self._state is not _OPEN:
            self._reopen("_get_file_writer")
        return self.file_writer

    @_when_open
    def add_embedding(self, mat: Any, metadata: Any = None, label_img: Any = None,
                      global_step: int | None = None, tag: str = "default",
                      metadata_header: Any = None) -> None:
        """Points for TensorBoard's projector: ``<step>/<tag>/`` files plus ``projector_config.pbtxt``."""
        shape = tuple(getattr(mat, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"add_embedding({tag!r}): mat must be 2-d (points, features), got shape {shape}")
        if metadata is not None and len(metadata) != shape[0]:
            raise ValueError(f"add_embedding({tag!r}): {len(metadata)} metadata rows for {shape[0]} points")
        if label_img is not None and label_img.shape[0] != shape[0]:
            raise ValueError(f"add_embedding({tag!r}): {label_img.shape[0]} label images for {shape[0]} points")
        step = check_step("add_embedding", global_step)
        host_mat, host_img = tensor_on_host(mat), tensor_on_host(label_img)
        metadata, metadata_header = tensor_on_host(metadata), tensor_on_host(metadata_header)
        metadata = list(metadata) if metadata is not None else None
        self._job(f"add_embedding({tag!r})", None, None, tag=tag, build=
                  lambda: self._write_embedding(resolve(host_mat), metadata, resolve(host_img),
                                                step, tag, metadata_header))

    def _write_embedding(self, mat, metadata, label_img, step, tag, metadata_header) -> None:
        from google.protobuf import text_format
        from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
        from torch.utils.tensorboard import _embedding

        subdir = f"{str(step).zfill(5)}/{embedding_folder_name(tag)}"
        save_path = str(subfolder(Path(self.log_dir), subdir))  # never remakes a removed log_dir
        if metadata is not None:
            _embedding.make_tsv(metadata, save_path, metadata_header=metadata_header)
        if label_img is not None:
            _embedding.make_sprite(label_img, save_path)
        _embedding.make_mat(to_numpy(mat), save_path)
        if self._projector is None:
            self._projector = ProjectorConfig()
        info = _embedding.get_embedding_info(metadata, label_img, subdir, step, tag)
        self._projector.embeddings.extend([info])
        _embedding.write_pbtxt(self.log_dir, text_format.MessageToString(self._projector))

    @_when_open
    def add_custom_scalars(self, layout: dict) -> None:
        layout = tensor_on_host(layout)
        self._job("add_custom_scalars()", None, None, build=lambda: _summary().custom_scalars(layout))

    @_when_open
    def add_custom_scalars_multilinechart(self, tags: list, category: str = "default",
                                          title: str = "untitled") -> None:
        self.add_custom_scalars({category: {title: ["Multiline", tags]}})

    @_when_open
    def add_custom_scalars_marginchart(self, tags: list, category: str = "default",
                                       title: str = "untitled") -> None:
        if len(tags) != 3:
            raise ValueError(f"add_custom_scalars_marginchart(): expected 3 tags (value, lower, upper), got {len(tags)}")
        self.add_custom_scalars({category: {title: ["Margin", tags]}})

    # -- lifetime ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Return once everything logged so far is in the event files."""
        if self._state is _OPEN:
            self._worker.flush()
            self._raise_worker_error()

    def close(self) -> None:
        """Write everything, close the files and stop the log thread. A second close is a no-op."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSED
        lifecycle.untrack(self)
        try:
            self._worker.flush(fsync=True)
        finally:
            self._worker.stop()
        self._raise_worker_error()

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _job(self, what: str, step: Any, walltime: Any, *, build: Callable[[], Any],
             tag: Any = None, file_key: str | None = None) -> None:
        """Queue ``build`` for the log thread; a step of None leaves the event without one."""
        method = what.split("(")[0]
        if self._state is not _OPEN and not self._reopen(method):
            return None
        self._raise_worker_error()
        if tag is not None:
            check_tag(method, tag)
        if step is not None:
            step = check_step(method, step)
        when = time.time() if walltime is None else check_walltime(method, walltime)
        self._queue.append(Job(file_key, step, when, build, what if step is None else f"{what} at step {step}"))

    def _reopen(self, method: str) -> bool:
        """A call after ``close()``: reopen as torch's writer does (a new event file in the same
        folder), and return True; False on a silent rank. A finished ``Run``'s writer raises."""
        if self._state is _SILENT:
            return False
        if self._run_owned:
            self._not_open(method)
        self._start(handle_sigterm=True)  # only writers of one's own reopen; they flush on SIGTERM
        return True

    def _not_open(self, method: str) -> None:
        """Return on a silent rank; raise for a closed writer that must not reopen (a Run's)."""
        if self._state is _SILENT:
            return None
        raise WriterClosedError(
            f"SummaryWriter({self.log_dir!r}).{method}() was called after its Run finished. A Run's "
            "writer does not reopen (torch's would): the run has released its folder, which another "
            "process may be resuming, and a resume would move a file written now aside. Log before "
            "the run ends, or open a SummaryWriter of your own on another folder.")

    def _raise_worker_error(self) -> None:
        worker = self._worker
        if worker is not None and worker.error is not None:
            message, worker.error = worker.error, None
            raise LogWriteError(f"SummaryWriter({self.log_dir!r}): {message}")

    def _wait_for_backlog(self) -> None:
        self._worker.wake()
        while len(self._queue) > MAX_BACKLOG // 2:
            if not self._worker.alive:
                self._raise_worker_error()
                raise LogWriteError(f"SummaryWriter({self.log_dir!r}): the log thread stopped; "
                                    "nothing more can be written")
            time.sleep(0.001)

    def _add_host_scalar(self, tag: str, value: Any, step: int) -> None:
        """``add_scalar`` for a value already made safe by ``scalar_on_host`` (``run.log``)."""
        check_tag("run.log", tag)
        self._queue.append((None, tag, value, check_step("run.log", step), time.time()))
        if len(self._queue) > MAX_BACKLOG:
            self._wait_for_backlog()

    def _writes(self) -> bool:
        """False after close() and on a silent rank."""
        return self._state is _OPEN

    def _embedding_count(self) -> int:
        """Entries in the projector config (after a flush: of every add_embedding so far)."""
        projector = getattr(self, "_projector", None)  # a silent rank never started
        return len(projector.embeddings) if projector is not None else 0

    def _max_step(self) -> int | None:
        """The largest step written so far (after a flush: of everything logged)."""
        return self._worker.max_step if self._worker is not None else None

    def _flush_for_signal(self) -> None:
        if self._state is _OPEN:
            self._worker.flush(fsync=True, timeout=10, wake=False)

    def _orphan(self) -> None:
        """In a forked child: the log thread is the parent's; this copy stays silent."""
        self._state = _SILENT

    def _flush_for_checkpoint(self) -> dict[str, int]:
        """Write and fsync everything logged so far; the committed size of each event file."""
        if self._state is not _OPEN:
            return {}
        self._worker.flush(fsync=True)
        return self._worker.offsets()


# -- helpers ---------------------------------------------------------------------------------

def _rank() -> int:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)
