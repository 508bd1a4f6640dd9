"""TensorBoard logging: ``SummaryWriter`` (torch's API, off the training thread) and its parts."""

from .writer import SummaryWriter

__all__ = ["SummaryWriter"]
