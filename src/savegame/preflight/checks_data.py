"""Data checks: what the first batches hold, before any training.

``check_data`` returns up to four results: "data" (shapes, dtypes, value ranges, NaN/inf), "input
scale" (unnormalised inputs), "label range" (labels against the model's number of outputs) and
"class balance". ``image_grid`` gives the first batch as images for TensorBoard.

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> data = [(torch.randn(32, 4), torch.randint(0, 3, (32,)))]
>>> setup = Setup.build(torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), data)
>>> [(c.name, c.status) for c in check_data(setup)]
[('data', 'pass'), ('input scale', 'pass'), ('label range', 'pass'), ('class balance', 'pass')]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .report import CheckResult
from .setup import Setup

_CLASSIFICATION_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_BINARY_LOSSES = (nn.BCELoss, nn.BCEWithLogitsLoss)


def check_data(setup: Setup) -> list[CheckResult]:
    """Shapes, dtypes, ranges and NaN/inf of the first batches; input scale; label range; balance."""
    if not setup.splittable:
        return [CheckResult("data", "skip", "the batches are not (inputs, targets) pairs, so their values "
                            "cannot be inspected", fix="pass keys=(input_key, target_key) for dict batches")]
    pairs = [setup.split(b) for b in setup.batches]
    inputs = [t for x, _ in pairs for t in _tensors(x)]
    targets = [y for _, y in pairs if isinstance(y, torch.Tensor)]
    results = [_check_values(pairs, inputs, targets)]
    if results[0].status == "fail":
        return results            # NaN or mismatched sizes: the statistics below would mislead
    scale = _check_scale(inputs)
    if scale is not None:
        results.append(scale)
    results.extend(_check_labels(setup, pairs, targets))
    return results


def image_grid(setup: Setup, n: int = 16) -> torch.Tensor | None:
    """The first batch's first ``n`` inputs as a float ``(N, C, H, W)`` tensor scaled to [0, 1] on
    the CPU, when the inputs look like images (4-d with 1 or 3 channels); ``None`` otherwise."""
    if not setup.splittable:
        return None
    x, _ = setup.split(setup.batches[0])
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
        return None
    images = x[:n].detach().float().cpu()
    low, high = images.min(), images.max()
    # Min-max over the grid: normalised inputs (mean 0, std 1) are not displayable as is.
    return (images - low) / (high - low) if high > low else torch.zeros_like(images)


# -- the pieces -------------------------------------------------------------------------------

def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [v for v in x.values() if isinstance(v, torch.Tensor)]
    if isinstance(x, (list, tuple)):
        return [v for v in x if isinstance(v, torch.Tensor)]
    return []


def _describe(t: torch.Tensor) -> str:
    if t.numel() == 0:
        return f"{tuple(t.shape)} {_dtype(t)} (empty)"
    f = t.detach().double()
    finite = f[torch.isfinite(f)]
    if finite.numel() == 0:
        return f"{tuple(t.shape)} {_dtype(t)} (no finite values)"
    if not (t.is_floating_point() or t.is_complex()):
        return f"{tuple(t.shape)} {_dtype(t)} in [{int(finite.min())}, {int(finite.max())}]"
    return (f"{tuple(t.shape)} {_dtype(t)} in [{_g(finite.min())}, {_g(finite.max())}], "
            f"mean {_g(finite.mean())} std {_g(finite.std(unbiased=False))}")


def _check_values(pairs: list, inputs: list[torch.Tensor], targets: list[torch.Tensor]) -> CheckResult:
    x0, y0 = pairs[0]
    first_inputs = _tensors(x0)
    message = ("inputs " + ", ".join(_describe(t) for t in first_inputs) if first_inputs
               else f"inputs of type {type(x0).__name__}")
    if isinstance(y0, torch.Tensor):
        message += "; targets " + _describe(y0)
    numbers: dict[str, Any] = {
        "input_shape": [list(t.shape) for t in first_inputs], "input_dtype": [_dtype(t) for t in first_inputs],
        "target_shape": list(y0.shape) if isinstance(y0, torch.Tensor) else None,
        "target_dtype": _dtype(y0) if isinstance(y0, torch.Tensor) else None,
    }
    if inputs and inputs[0].numel() and inputs[0].is_floating_point():
        f = inputs[0].detach().double()
        numbers.update(input_min=_g(f.min()), input_max=_g(f.max()),
                       input_mean=_g(f.mean()), input_std=_g(f.std(unbiased=False)))
    bad = {where: sum(int((~torch.isfinite(t)).sum()) for t in group if t.is_floating_point() or t.is_complex())
           for where, group in (("inputs", inputs), ("targets", targets))}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        numbers["nonfinite"] = bad
        where = " and ".join(f"{n} NaN/inf values in the {k}" for k, n in bad.items())
        return CheckResult("data", "fail", f"{where} of the first batches; {message}",
                           fix="clean the data: look for division by zero, log of 0 or missing values in "
                               "the dataset or its transforms (torch.nan_to_num, or drop those rows)",
                           numbers=numbers)
    # Inputs and targets of different lengths get broadcast or silently truncated by some losses.
    x_len = first_inputs[0].shape[0] if first_inputs and first_inputs[0].dim() else None
    y_len = y0.shape[0] if isinstance(y0, torch.Tensor) and y0.dim() else None
    if x_len is not None and y_len is not None and x_len != y_len:
        return CheckResult("data", "fail", f"a batch has {x_len} inputs but {y_len} targets; {message}",
                           fix="make the dataset return one target per input (check collate_fn and "
                               "the target tensor's first dimension)", numbers=numbers)
    return CheckResult("data", "pass", message, numbers=numbers)


def _check_scale(inputs: list[torch.Tensor]) -> CheckResult | None:
    if not inputs:
        return None
    x = inputs[0]
    if x.dtype == torch.uint8:
        return CheckResult("input scale", "warn", f"the inputs are uint8 (raw pixels 0-255, max {int(x.max())})",
                           fix="convert to float and scale: x.float() / 255, then normalise with the "
                               "dataset's mean and std (transforms.ToTensor + transforms.Normalize)",
                           numbers={"input_dtype": "uint8", "input_max": int(x.max())})
    if not x.is_floating_point() or x.numel() < 2:
        return None               # token ids and other integer inputs have no scale to judge
    f = x.detach().double()
    mean, std, low, high = (_g(v) for v in (f.mean(), f.std(unbiased=False), f.min(), f.max()))
    numbers = {"input_mean": mean, "input_std": std, "input_min": low, "input_max": high}
    measured = f"mean {mean}, std {std}, range [{low}, {high}]"
    if low >= 0 and 20 < high <= 255 and bool((f == f.round()).all()):
        return CheckResult("input scale", "warn", f"the inputs look like raw 0-255 pixels ({measured})",
                           fix="divide by 255 and normalise with the dataset's mean and std "
                               "(transforms.Normalize(mean, std))", numbers=numbers)
    if x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1:
        # Tabular features on wildly different scales: the large ones dominate the first layer.
        stds = f.std(dim=0, unbiased=False)
        stds = stds[stds > 0]
        if stds.numel() > 1 and stds.max() / stds.min() > 100:
            numbers["feature_std_ratio"] = _g(stds.max() / stds.min())
            return CheckResult("input scale", "warn", f"the input features have very different scales "
                               f"(per-feature std from {_g(stds.min())} to {_g(stds.max())})",
                               fix="standardise each feature: (x - x.mean(0)) / x.std(0) over the "
                                   "training set (sklearn StandardScaler)", numbers=numbers)
    if abs(mean) > 5 or std > 10 or 0 < std < 0.01:
        return CheckResult("input scale", "warn", f"the inputs are far from normalised ({measured}); "
                           "expected mean near 0 and std near 1",
                           fix="standardise the inputs: (x - mean) / std with the training set's statistics",
                           numbers=numbers)
    return CheckResult("input scale", "pass", measured, numbers=numbers)


def _check_labels(setup: Setup, pairs: list, targets: list[torch.Tensor]) -> list[CheckResult]:
    if not targets:
        return []
    y = torch.cat([t.reshape(-1) for t in targets]).detach().cpu()
    if isinstance(setup.loss_fn, _BINARY_LOSSES) or setup.loss_fn in (F.binary_cross_entropy,
                                                                      F.binary_cross_entropy_with_logits):
        return _check_binary(y)
    classes = _classes(setup, pairs[0])
    if classes is None or y.is_floating_point() or y.dtype == torch.bool:
        return []                  # regression, or soft/one-hot targets: no labels to range-check
    ignore = getattr(setup.loss_fn, "ignore_index", -100)
    y = y[y != ignore].long()
    if y.numel() == 0:
        return []
    low, high = int(y.min()), int(y.max())
    numbers = {"classes": classes, "label_min": low, "label_max": high}
    if low < 0 or high >= classes:
        bad = int(((y < 0) | (y >= classes)).sum())
        fix = ("labels start at 1: subtract 1 so they run 0..C-1" if low >= 1 and high == classes
               else f"make the final layer output {high + 1} classes, or remap the labels to 0..{classes - 1}")
        return [CheckResult("label range", "fail", f"labels run from {low} to {high} ({bad} out of range) but the "
                            f"model outputs {classes} classes, so valid labels are 0..{classes - 1}",
                            fix=fix, numbers=numbers)]
    results = [CheckResult("label range", "pass", f"labels {low}..{high} within the model's {classes} classes",
                           numbers=numbers)]
    return results + [_check_balance(torch.bincount(y, minlength=classes), classes)]


def _check_binary(y: torch.Tensor) -> list[CheckResult]:
    f = y.double()
    low, high = _g(f.min()), _g(f.max())
    numbers = {"target_min": low, "target_max": high}
    if low < 0 or high > 1:
        return [CheckResult("label range", "fail", f"binary targets run from {low} to {high}; "
                            "BCE losses need targets in [0, 1]", fix="map the targets to 0/1 (e.g. (y > 0).float())",
                            numbers=numbers)]
    results = [CheckResult("label range", "pass", f"binary targets in [{low}, {high}]", numbers=numbers)]
    if bool(((f == 0) | (f == 1)).all()):
        results.append(_check_balance(torch.bincount(f.long(), minlength=2), 2))
    return results


def _check_balance(counts: torch.Tensor, classes: int) -> CheckResult:
    total = int(counts.sum())
    top = int(counts.argmax())
    share = float(counts[top]) / max(total, 1)
    # A fair share is 1/C; with few samples a class may lead by chance, so the bar stays high.
    limit = 0.9 if classes <= 3 else max(0.5, min(0.9, 3 / classes))
    shown = {str(i): int(c) for i, c in enumerate(counts.tolist()[:20]) if c}
    numbers = {"counts": shown, "largest_class": top, "largest_share": round(share, 4), "samples": total}
    if total >= 8 and share > limit:
        return CheckResult("class balance", "warn", f"class {top} is {share:.0%} of the {total} labels in the "
                           f"first batches (a fair share is {1 / classes:.0%})",
                           fix="if the loader is not shuffled, pass shuffle=True (sorted data gives one-class "
                               "batches); if the data is imbalanced, weight the loss (CrossEntropyLoss(weight=...)) "
                               "or resample (WeightedRandomSampler)", numbers=numbers)
    return CheckResult("class balance", "pass", f"largest class {top} is {share:.0%} of {total} labels",
                       numbers=numbers)


def _classes(setup: Setup, batch: Any) -> int | None:
    """The model's number of classes when this is classification (integer targets with a
    cross-entropy-like loss or a (B, C) output), else ``None``."""
    x, y = batch
    if not isinstance(y, torch.Tensor) or y.is_floating_point():
        return None
    try:
        with torch.no_grad():
            out = setup.fresh_model()(x)
    except Exception:  # noqa: BLE001 - the loss checks report a model that cannot run
        return None
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        return None
    known = isinstance(setup.loss_fn, _CLASSIFICATION_LOSSES) or setup.loss_fn in (F.cross_entropy, F.nll_loss)
    # (B, C) output with (B,) targets, or (B, C, T) with (B, T): class dimension 1, as torch's losses use.
    if known or (y.dim() == out.dim() - 1 and out.shape[0] == y.shape[0] and out.shape[1] > 1):
        return int(out.shape[1])
    return None


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _g(value: Any) -> float:
    """A short float for messages and JSON (4 significant digits)."""
    v = float(value)
    return v if not math.isfinite(v) else float(f"{v:.4g}")
