"""The media and structured kinds of ``SummaryWriter``: distributions, pr curves, images, figures,
video, audio, text, mesh, hparams, graphs, embeddings and custom scalars.

``SummaryKinds`` is a mixin: ``SummaryWriter`` (``writer.py``) inherits these methods and brings
what they use (``_job``, ``_queue``, ``log_dir``, ``_hparams_logged``, ``_warned``, ``_projector``).
Each call checks its arguments and copies them to the host on the caller, and queues the building
of its summary for the log thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..messages import warn
from ..optional import require
from ._writer_base import _summary, _when_open
from .checks import check_audio, check_histogram, check_image, check_same_length, check_step, check_subrun
from .convert import (default_bins, embedding_folder_name, maybe_numpy, summary_event, to_list,
                      to_numpy, to_tensor)
from .eventfile import subfolder
from .host import resolve, scalar_on_host, tensor_on_host


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


class SummaryKinds:
    """torch's ``add_*`` methods beyond scalars and raw tensors, for ``SummaryWriter`` to inherit."""

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
                warn(f"SummaryWriter({self.log_dir!r}): {error}. Videos are skipped until then "
                     "(this warning is shown once per writer).", UserWarning)
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
            check_subrun("add_hparams", str(run_name))
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
