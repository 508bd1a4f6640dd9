"""Host copies of a state's tensors, in buffers kept from one save to the next.

An asynchronous save must copy every tensor before ``save()`` returns (training goes on changing
the originals), and the write then runs from the copies. Allocating that much memory at every save
costs page faults, and for CUDA tensors only pinned memory copies at full speed and off the
default stream. :class:`HostBuffers` keeps one buffer per tensor name: the next snapshot of the
same name, shape and dtype copies into it, so a run holds one host copy of its state, allocated
once. CUDA tensors are copied into pinned buffers on a side stream; :meth:`synchronize` waits for
those copies (the snapshot calls it before handing the tensors to the writer).

A buffer is reused only once the write that read it has ended: the owner (the ``Checkpointer``)
waits for the save in flight before it takes the next snapshot.

>>> import torch
>>> buffers = HostBuffers()
>>> first = buffers.copy("w", torch.ones(3))
>>> second = buffers.copy("w", torch.zeros(3))
>>> first.data_ptr() == second.data_ptr(), second.tolist()
(True, [0.0, 0.0, 0.0])
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HostBuffers"]


class HostBuffers:
    """One reusable host buffer per tensor name (see the module docstring)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._used: set[str] = set()  # the names this snapshot copied; the others are dropped after it
        self._streams: dict[Any, Any] = {}  # device -> the side stream its copies run on
        self._pending: list[Any] = []  # streams with copies in flight

    def copy(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous CPU copy of ``tensor``, in the buffer kept for ``name`` when it fits."""
        tensor = tensor.detach().resolve_conj().resolve_neg()  # raw bytes must mean what they say
        buffer = self._buffers.get(name)
        cuda = tensor.device.type == "cuda"
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype \
                or (cuda and not buffer.is_pinned()):
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=cuda)
            self._buffers[name] = buffer
        self._used.add(name)
        if cuda:
            stream = self._streams.get(tensor.device)
            if stream is None:
                stream = self._streams[tensor.device] = torch.cuda.Stream(device=tensor.device)
            # the side stream must see the values the training stream has computed so far
            stream.wait_stream(torch.cuda.current_stream(tensor.device))
            with torch.cuda.stream(stream):
                buffer.copy_(tensor, non_blocking=True)
            tensor.record_stream(stream)  # the caching allocator keeps it until the copy is done
            if stream not in self._pending:
                self._pending.append(stream)
        else:
            buffer.copy_(tensor)
        return buffer

    def synchronize(self) -> None:
        """Wait for the copies in flight on side streams, and let go of the buffers of names this
        snapshot no longer has (a tensor renamed or dropped from the state)."""
        for stream in self._pending:
            stream.synchronize()
        self._pending.clear()
        for name in set(self._buffers) - self._used:
            del self._buffers[name]
        self._used.clear()

    @property
    def nbytes(self) -> int:
        """The host memory the buffers hold."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())
