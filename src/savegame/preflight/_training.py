"""What the preflight checks that train a copy share: the seed their runs start from, dropout
off while overfitting, and whether a loss is a cross-entropy."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn import functional as F

SEED = 0  # every training run of these checks starts from this torch seed


def _dropout_off(model: nn.Module) -> nn.Module:
    """Dropout modules in eval mode (regularization off), everything else (BatchNorm) in train mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return model


def _is_cross_entropy(loss_fn: Any) -> bool:
    return isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is F.cross_entropy
