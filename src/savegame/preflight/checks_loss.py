"""Loss checks: the loss can be computed, is a scalar on the graph, compares shapes that match,
and starts near chance (cs231n: "look for correct loss at chance performance").

>>> import torch
>>> from savegame.preflight.setup import Setup
>>> _ = torch.manual_seed(0)
>>> data = [(torch.randn(64, 4), torch.randint(0, 10, (64,)))]
>>> setup = Setup.build(torch.nn.Linear(4, 10), torch.nn.CrossEntropyLoss(), data)
>>> check_loss_at_init(setup).status, check_loss_at_init(setup).numbers["formula"]
('pass', 'ln(10)')
>>> check_loss_target_shapes(setup).status
'pass'
>>> biased = torch.nn.Linear(4, 10)
>>> with torch.no_grad():
...     _ = biased.bias.zero_().index_fill_(0, torch.tensor([3]), 25.0)  # a bias of 25 on one class
>>> init = check_loss_at_init(Setup.build(biased, torch.nn.CrossEntropyLoss(), data))
>>> init.status, init.numbers["ratio"] > FAIL_RATIO
('fail', True)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .report import CheckResult
from .setup import Setup, explain_error

# Losses that compare output and target element by element, so mismatched shapes broadcast.
_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
                          F.binary_cross_entropy_with_logits)
# Karpathy's "verify loss @ init" and cs231n's "look for correct loss at chance performance":
WARN_RATIO = 1.5  # a loss at init above 1.5x chance is worth a look (a warning)...
FAIL_RATIO = 3.0  # ...and above 3x chance it fails: e.g. a final-layer bias of 25 on 10 classes is ~9.8x


def check_loss_target_shapes(setup: Setup) -> CheckResult:
    """The loss on the first batch can be computed, is a scalar connected to the graph, and the
    output and target shapes match where the loss would silently broadcast them."""
    name = "loss/target shapes"
    model = setup.fresh_model()
    batch = setup.batches[0]
    output = target = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if setup.forward is None:
                x, target = setup.split(batch)
                output = model(x)
                loss = setup.loss_fn(output, target)
            else:
                loss = setup.forward(model, batch)
        except Exception as error:  # noqa: BLE001 - the point of this check is to say why, in words
            head, _, hint = explain_error(error).partition(" — ")
            return CheckResult(name, "fail", f"computing the loss on the first batch raised {head}",
                               fix=hint or "run the model and the loss on one batch by hand to see the full "
                                           "traceback", numbers={"error": type(error).__name__})
    size_warning = any("target size" in str(w.message) for w in caught)
    numbers: dict[str, Any] = {}
    if isinstance(output, torch.Tensor):
        numbers["output_shape"] = list(output.shape)
    if isinstance(target, torch.Tensor):
        numbers["target_shape"] = list(target.shape)
    if not isinstance(loss, torch.Tensor):
        return CheckResult(name, "fail", f"the loss is a {type(loss).__name__}, not a tensor, so nothing can "
                           "be backpropagated", fix="return the loss tensor itself: no .item(), float() or "
                                                    ".tolist() on it", numbers=numbers)
    numbers["loss_shape"] = list(loss.shape)
    if loss.numel() != 1:
        return CheckResult(name, "fail", f"the loss has shape {tuple(loss.shape)}, not a single number",
                           fix="reduce it: reduction='mean' in the loss, or loss.mean()", numbers=numbers)
    if not any(p.requires_grad for p in model.parameters()):
        return CheckResult(name, "fail", "no parameter of the model requires grad (the whole model is frozen), "
                           "so training cannot change it", fix="unfreeze what should train: "
                           "model.requires_grad_(True), or requires_grad=True on those layers", numbers=numbers)
    if not loss.requires_grad:
        where = "the model's output" if isinstance(output, torch.Tensor) and not output.requires_grad else "the loss"
        return CheckResult(name, "fail", f"{where} is not connected to the graph: no gradient can reach the "
                           "parameters", fix="remove .detach(), .item(), .numpy() or torch.no_grad() in forward "
                           "(and in the loss)", numbers=numbers)
    if isinstance(output, torch.Tensor) and isinstance(target, torch.Tensor) and output.shape != target.shape:
        known = isinstance(setup.loss_fn, _ELEMENTWISE) or setup.loss_fn in _ELEMENTWISE_FUNCTIONS
        try:
            broadcast = tuple(torch.broadcast_shapes(output.shape, target.shape))
        except RuntimeError:
            broadcast = None
        grows = broadcast is not None and math.prod(broadcast) > max(output.numel(), target.numel())
        if known or size_warning or (target.is_floating_point() and grows):
            numbers["broadcast_shape"] = list(broadcast) if broadcast else None
            spread = (f", which broadcast to {broadcast}: every output is compared with every target"
                      if grows else "")
            fix = (f"make them match: out.squeeze(-1) for a {tuple(output.shape)} output, or "
                   f"target.unsqueeze(-1)" if output.dim() == target.dim() + 1 and output.shape[-1] == 1
                   else "reshape the output or the target so they have the same shape")
            return CheckResult(name, "fail" if known or size_warning else "warn",
                               f"the output has shape {tuple(output.shape)} but the target "
                               f"{tuple(target.shape)}{spread}", fix=fix, numbers=numbers)
    shapes = (f"; output {tuple(output.shape)}, target {tuple(target.shape)}"
              if isinstance(output, torch.Tensor) and isinstance(target, torch.Tensor) else "")
    return CheckResult(name, "pass", f"the loss is a scalar connected to the graph{shapes}", numbers=numbers)


def check_loss_at_init(setup: Setup) -> CheckResult:
    """The loss of the untrained model against chance: ln C for C-class cross-entropy, ln 2 for
    binary cross-entropy, the predict-the-mean loss for regression. Up to ``WARN_RATIO`` times
    chance passes, up to ``FAIL_RATIO`` times warns, above fails."""
    name = "loss at init"
    model = setup.fresh_model()
    with torch.no_grad():
        measured = sum(float(setup.loss(model, b)) for b in setup.batches) / len(setup.batches)
        pairs = _outputs(setup, model)
    numbers: dict[str, Any] = {"loss": _g(measured)}
    if not math.isfinite(measured):
        return CheckResult(name, "fail", f"the loss of the untrained model is {measured}",
                           fix="look for NaN/inf in the data (see 'data'), log of 0 in the loss (use "
                               "CrossEntropyLoss/BCEWithLogitsLoss on logits instead of log of probabilities), "
                               "or division by zero in forward", numbers=numbers)
    chance = _chance(setup, pairs)
    if chance is None:
        return CheckResult(name, "skip", f"the loss at init is {measured:.4g}; no chance level is known for "
                           "this loss and data", numbers=numbers)
    expected, formula, kind = chance
    numbers.update(expected=_g(expected), formula=formula, kind=kind)
    if expected <= 1e-12:
        return CheckResult(name, "skip", f"the loss at init is {measured:.4g}; the chance level is 0 "
                           "(constant targets?)", numbers=numbers)
    ratio = measured / expected
    numbers["ratio"] = _g(ratio)
    said = f"the loss at init is {measured:.4g}; chance is {formula} = {expected:.4g}"
    if kind == "classification" and _probabilities(pairs):
        return CheckResult(name, "warn", f"{said}, but the outputs are probabilities (each row sums to 1)",
                           fix="CrossEntropyLoss applies log-softmax itself: return logits (remove the final "
                               "softmax)", numbers=numbers)
    if ratio <= WARN_RATIO:
        below = " (below chance: a pretrained model?)" if ratio < 0.5 else ""
        return CheckResult(name, "pass", said + below, numbers=numbers)
    cause, fix = _diagnose(model, pairs, kind)
    if ratio > FAIL_RATIO:
        return CheckResult(name, "fail", f"{said}: {ratio:.1f}x chance, more than {FAIL_RATIO:g}x; {cause}",
                           fix=fix, numbers=numbers)
    return CheckResult(name, "warn", f"{said}: {ratio:.1f}x chance; {cause}", fix=fix, numbers=numbers)


# -- the pieces -------------------------------------------------------------------------------

def _outputs(setup: Setup, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(output, target) of each cached batch, or [] when they cannot be told apart."""
    if not setup.splittable:
        return []
    pairs = []
    for batch in setup.batches:
        x, y = setup.split(batch)
        try:
            out = model(x)
        except Exception:  # noqa: BLE001 - the user's forward may be the only way to run this model
            return []
        if isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor):
            pairs.append((out.detach(), y))
    return pairs


def _chance(setup: Setup, pairs: list) -> tuple[float, str, str] | None:
    """(expected loss, how it was worked out, kind) from the user's own loss on a chance prediction."""
    loss_fn = setup.loss_fn
    if not pairs or not callable(loss_fn):
        return None
    out, y = pairs[0]
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or loss_fn in (F.cross_entropy, F.nll_loss) or (
            not y.is_floating_point() and out.dim() >= 2 and y.dim() == out.dim() - 1 and out.shape[1] > 1):
        # Uniform logits (or uniform log-probabilities for NLL) cost ln C whatever the labels.
        log_probs = isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss
        fill = -math.log(out.shape[1]) if log_probs else 0.0
        make, formula, kind = (lambda o, t: torch.full_like(o, fill)), f"ln({out.shape[1]})", "classification"
    elif isinstance(loss_fn, (nn.BCEWithLogitsLoss, nn.BCELoss)) or loss_fn in (
            F.binary_cross_entropy_with_logits, F.binary_cross_entropy):
        fill = 0.5 if isinstance(loss_fn, nn.BCELoss) or loss_fn is F.binary_cross_entropy else 0.0
        make, formula, kind = (lambda o, t: torch.full_like(o, fill)), "ln(2)", "binary"
    elif y.is_floating_point():
        # Regression: the best constant is the targets' mean (its MSE is their variance).
        make = lambda o, t: t.mean(dim=0, keepdim=True).expand_as(t).to(o.dtype)  # noqa: E731
        formula = "the targets' variance" if isinstance(loss_fn, nn.MSELoss) or loss_fn is F.mse_loss \
            else "the predict-the-mean loss"
        kind = "regression"
    else:
        return None
    try:
        with torch.no_grad():
            expected = sum(float(loss_fn(make(o, t), t)) for o, t in pairs) / len(pairs)
    except Exception:  # noqa: BLE001 - an unusual loss: no chance level, not a failure
        return None
    return (expected, formula, kind) if math.isfinite(expected) else None


def _probabilities(pairs: list) -> bool:
    out = pairs[0][0]
    if out.dim() < 2 or not out.is_floating_point():
        return False
    sums = out.sum(dim=1)
    return bool((out >= 0).all() and (out <= 1).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-3))


def _final_bias(model: nn.Module, width: int) -> torch.Tensor | None:
    """The bias of the last layer (in registration order) with ``width`` outputs, if any."""
    found = None
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.numel() == width:
            found = bias
    return found


def _diagnose(model: nn.Module, pairs: list, kind: str) -> tuple[str, str]:
    """The likely cause of a loss far above chance, and its fix."""
    out = torch.cat([o.reshape(o.shape[0], -1) if o.dim() > 1 else o.reshape(-1, 1) for o, _ in pairs]).double()
    y = torch.cat([t.reshape(-1) for _, t in pairs]).double()
    width = pairs[0][0].shape[1] if pairs[0][0].dim() > 1 else 1
    bias = _final_bias(model, width)
    big_bias = bias is not None and float(bias.detach().abs().max()) > 1
    if kind == "regression":
        o_mean, y_mean, y_std = float(out.mean()), float(y.mean()), float(y.std(unbiased=False))
        if abs(o_mean - y_mean) > max(y_std, 1e-12):
            return (f"the outputs average {o_mean:.3g} but the targets {y_mean:.3g} (std {y_std:.3g})",
                    f"initialise the final layer's bias to the targets' mean ({y_mean:.3g}), or standardise "
                    "the targets" + (" (the final layer's bias is large)" if big_bias else ""))
        return (f"the outputs vary more than the targets (std {float(out.std()):.3g} vs {y_std:.3g})",
                "scale down the final layer's weights at init, or standardise the targets")
    if big_bias:
        return (f"the final layer's bias is large (max |b| = {float(bias.detach().abs().max()):.3g})",
                "initialise the final layer's bias to 0, or to the log of the class priors "
                "(log of each class's share of the labels)")
    if float(out.std()) > 3:
        return (f"the outputs at init are large (std {float(out.std()):.3g})",
                "normalise the inputs (see 'input scale') or scale down the final layer's weights at init")
    favoured = out.mean(dim=0)
    return (f"the outputs at init favour some classes (mean logits from {float(favoured.min()):.3g} to "
            f"{float(favoured.max()):.3g})",
            "initialise the final layer's bias to 0, and check that the final activation and the loss go "
            "together (logits with CrossEntropyLoss/BCEWithLogitsLoss)")


def _g(value: float) -> float:
    return value if not math.isfinite(value) else float(f"{value:.4g}")
