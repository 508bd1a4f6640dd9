"""TensorBoard logging: ``SummaryWriter`` (torch's API, off the training thread) and its parts.

``SummaryWriter`` is imported on first use, so the parts that only read event files (``reader``,
``records``) load without torch.
"""

__all__ = ["SummaryWriter"]


def __getattr__(name: str):
    if name == "SummaryWriter":
        from .writer import SummaryWriter

        return SummaryWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
