"""Read a safetensors file straight into tensors, in parallel, verifying each piece as it lands.

:class:`TensorFile` opens a file and checks its header (and, given a manifest's ``tensor_hashes``
record, that record and the header's hash) before any tensor data is read. A read is planned as
chunks of up to ``_READ_CHUNK`` contiguous file bytes, each one ``preadv`` scattering them into
the destination tensors: fresh ones (huge pages for large ones, see :func:`_empty`) or tensors
the caller hands in, such as a model's own parameters. Above ``_PARALLEL`` bytes a few threads
each read their own contiguous stretch of the file, with their own file descriptor, so the kernel
reads ahead for each and a cold disk sees a few sequential streams. Each piece is hashed right
after it arrives, or, for files whose manifest records only the whole-file hash, every chunk in
file order. Nothing is ever unpickled; files that ``safetensors.torch.save_file`` wrote read too.

>>> import os, tempfile, torch
>>> from savegame.checkpoint.tensor_write import write_tensors
>>> path = os.path.join(tempfile.mkdtemp(), "r.safetensors")
>>> info = write_tensors(path, {"w": torch.arange(4.0)})
>>> read_tensors(path, expected=info)["w"]
tensor([0., 1., 2., 3.])
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import torch
import xxhash

from savegame.checkpoint.layout import FileInfo
from savegame.checkpoint.tensor_format import (_CODES, _HASH, _bytes_of, _check_little_endian, _check_record,
                                               _read_header)
from savegame.errors import CheckpointCorruptError

__all__ = ["TensorFile", "read_tensors"]

_READ_CHUNK = 8 << 20  # one preadv: syscalls vanish, and the bytes are still in cache when hashed
_READERS = 4  # threads, each reading its own stretch: 4 streams kept a cold disk busiest, even on 2 cores
_PARALLEL = 32 << 20  # below this many bytes one thread reads everything: threads cost more
_MAX_IOV = 512  # buffers per preadv (the kernel takes up to IOV_MAX, 1024 on Linux)
_HUGE = 8 << 20  # tensors this large get their own huge-page backed memory (see _empty)


def _empty(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor to read into. Large ones get private anonymous memory that asks for
    transparent huge pages: faulting in fresh memory 4 KiB at a time costs more than reading the
    file itself on many machines, and 2 MiB pages cut the faults 512-fold. Each tensor gets its own
    mapping, so memory is freed per tensor like torch's own."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _HUGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buf, dtype=dtype).view(shape)


def _reopen(fd: int) -> int | None:
    """A second descriptor of the same open file, with its own read-ahead state (Linux), or None."""
    try:
        new = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    a, b = os.fstat(fd), os.fstat(new)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(new)
        return None
    return new


class _Chunk:
    """One ``preadv``: contiguous file bytes scattered into the destinations' memory."""

    __slots__ = ("offset", "size", "parts", "given", "done")

    def __init__(self, offset: int) -> None:
        self.offset, self.size = offset, 0
        self.parts: list[tuple[memoryview, str, int, bool]] = []  # (view, tensor, piece, ends the piece)
        self.given: set[str] = set()  # tensors read into caller-given memory
        self.done = threading.Event()


def _plan_chunks(segments: list[tuple[int, memoryview, str, int, bool]]) -> list[_Chunk]:
    """Cut ``(file offset, view, tensor, piece, given)`` segments (in file order) into chunks of
    ``_READ_CHUNK`` bytes; neighbouring small tensors share one chunk."""
    chunks: list[_Chunk] = []
    current: _Chunk | None = None
    for offset, view, name, piece, given in segments:
        position = 0
        while position < len(view):
            room = 0
            if current is not None and current.offset + current.size == offset + position \
                    and len(current.parts) < _MAX_IOV:
                room = _READ_CHUNK - current.size
            if room <= 0:
                current, room = _Chunk(offset + position), _READ_CHUNK
                chunks.append(current)
            take = min(len(view) - position, room)
            current.parts.append((view[position:position + take], name, piece, position + take == len(view)))
            current.size += take
            if given:
                current.given.add(name)
            position += take
    return chunks


def _split(chunks: list[_Chunk], n: int, *, at_pieces: bool) -> list[list[_Chunk]]:
    """``n`` contiguous runs of about equal size; with ``at_pieces``, cut only where a piece ends
    (a piece is hashed by one thread, in order)."""
    total = sum(c.size for c in chunks)
    runs: list[list[_Chunk]] = [[]]
    done = 0
    for chunk in chunks:
        runs[-1].append(chunk)
        done += chunk.size
        if len(runs) < n and done * n >= total * len(runs) and (not at_pieces or chunk.parts[-1][3]):
            runs.append([])
    return [run for run in runs if run]


def _preadv_all(fd: int, parts: list[tuple[memoryview, str, int, bool]], offset: int, path: Path) -> None:
    views, i = [part[0] for part in parts], 0
    while i < len(views):
        got = os.preadv(fd, views[i:], offset)  # may return fewer bytes than asked
        if not got:
            raise CheckpointCorruptError(f"{path} is truncated: it ended inside tensor {parts[i][1]!r}.")
        offset += got
        while got:
            if got >= len(views[i]):
                got -= len(views[i])
                i += 1
            else:
                views[i], got = views[i][got:], 0


class TensorFile:
    """An open safetensors file whose header is parsed and checked; tensors are read on request,
    into memory the caller gives or fresh tensors, and verified while they are read.

    Verification follows what the caller knows about the file: ``tensor_hashes`` (a manifest's
    record, see :class:`TensorFileInfo`) checks the header at once and each piece right after it
    is read, so any subset of tensors can be read and trusted on its own; ``expected`` alone (the
    whole file's size and hash) makes every read cover the whole file, hashed in file order and
    checked at the end; neither reads unverified. The file stays open until :meth:`close`.

    >>> import tempfile, torch, os
    >>> from savegame.checkpoint.tensor_write import write_tensors
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> info = write_tensors(path, {"w": torch.ones(2), "b": torch.zeros(1)})
    >>> mine = torch.empty(2)
    >>> with TensorFile(path, expected=info, tensor_hashes=info.tensor_hashes) as f:
    ...     got = f.read({"w": mine})
    >>> got["w"] is mine, mine.tolist(), sorted(got)
    (True, [1.0, 1.0], ['w'])
    """

    def __init__(self, path: str | os.PathLike, *, expected: FileInfo | None = None,
                 tensor_hashes: Mapping[str, Any] | None = None) -> None:
        _check_little_endian()
        self.path = Path(path)
        self._file = open(self.path, "rb", buffering=0)
        try:
            self._fd = self._file.fileno()
            size = os.fstat(self._fd).st_size
            if expected is not None and size != expected.size:
                raise CheckpointCorruptError(
                    f"{self.path} has {size} bytes but the manifest recorded {expected.size}: the file was "
                    "truncated or altered. Restore it from a backup or use another checkpoint."
                )
            self._entries, self._data_start = _read_header(self._file, self.path, size)
            self._header = os.pread(self._fd, self._data_start, 0)
            if len(self._header) != self._data_start:
                raise CheckpointCorruptError(f"{self.path} is truncated: it ended inside its header.")
            self._expected = expected
            self._piece, self._pieces = None, None
            if tensor_hashes is not None:
                self._piece, self._pieces = _check_record(tensor_hashes, self._entries, self._header, self.path)
        except BaseException:
            self._file.close()
            raise
        spans = sorted((e["data_offsets"][0], name) for name, e in self._entries.items() if name != "__metadata__")
        self.names: list[str] = [name for _, name in spans]  # in file order

    @property
    def per_tensor(self) -> bool:
        """True if each tensor is verified on its own (the manifest records piece hashes)."""
        return self._pieces is not None

    def spec(self, name: str) -> tuple[torch.dtype, list[int]]:
        """``(dtype, shape)`` of a tensor, from the header."""
        e = self._entries[name]
        return _CODES[e["dtype"]], list(e["shape"])

    def read(self, targets: Mapping[str, torch.Tensor | None], *, touched: set[str] | None = None,
             fresh: Any = None) -> dict[str, torch.Tensor]:
        """Read the tensors named in ``targets``, each into the tensor it maps to (contiguous, on
        the CPU, of the file's dtype and shape) or, for None, a fresh one; return ``{name:
        tensor}`` in file order. A file verified as a whole is read whole: the tensors not named
        come back too, in fresh memory. ``fresh(dtype, shape)`` allocates those (default: huge
        pages for large ones). Each given tensor's name goes into ``touched`` just before its
        first byte is written, so a caller whose read fails knows which memory it changed.

        Raises :class:`CheckpointCorruptError` naming the file (and the tensor, with piece hashes)
        if a hash differs or the file ends early; ``OSError`` if the disk fails.
        """
        unknown = [name for name in targets if name not in self._entries or name == "__metadata__"]
        if unknown:
            raise KeyError(f"{self.path} holds no tensor named {unknown[0]!r}.")
        whole = self._pieces is None and self._expected is not None
        out: dict[str, torch.Tensor] = {}
        segments: list[tuple[int, memoryview, str, int, bool]] = []
        for name in self.names:
            if name not in targets and not whole:
                continue
            dtype, shape = self.spec(name)
            dest = targets.get(name)
            if dest is None:
                dest = (fresh or _empty)(shape, dtype)
            elif dest.dtype != dtype or list(dest.shape) != shape or dest.device.type != "cpu" \
                    or not dest.is_contiguous():
                raise ValueError(f"Cannot read tensor {name!r} ({dtype}, shape {shape}) of {self.path} into a "
                                 f"{dest.dtype} tensor of shape {list(dest.shape)} on {dest.device}; it must "
                                 "match and be contiguous on the CPU.")
            out[name] = dest
            begin, end = self._entries[name]["data_offsets"]
            if end == begin:
                continue
            view, step = _bytes_of(dest), self._piece or end - begin
            for piece, start in enumerate(range(0, end - begin, step)):
                segments.append((self._data_start + begin + start, view[start:start + step], name, piece,
                                 targets.get(name) is not None))
        file_hash = xxhash.xxh3_128(self._header) if whole else None
        self._read_chunks(_plan_chunks(segments), touched, file_hash)
        if file_hash is not None and f"{_HASH}:{file_hash.hexdigest()}" != self._expected.hash:
            raise CheckpointCorruptError(
                f"{self.path} does not match its recorded hash: expected {self._expected.hash}, found "
                f"{_HASH}:{file_hash.hexdigest()}. Its bytes were altered (disk or copy error). Restore it "
                "from a backup or use another checkpoint."
            )
        return out

    def _read_chunks(self, chunks: list[_Chunk], touched: set[str] | None, file_hash: Any) -> None:
        total = sum(c.size for c in chunks)
        runs = _split(chunks, _READERS if total >= _PARALLEL else 1, at_pieces=self._pieces is not None)
        errors: list[tuple[int, BaseException]] = []
        stop = threading.Event()
        if len(runs) <= 1:  # one thread: hash the whole file as we go
            self._work(0, runs[0] if runs else [], touched, errors, stop, file_hash, own_fd=False)
        else:
            # Each run is a contiguous stretch read by its own thread (and descriptor), so a cold
            # disk sees a few sequential streams. The whole-file hash, if that is what verifies,
            # follows the chunks in file order here, while the readers are ahead.
            threads = [threading.Thread(target=self._work, args=(i, run, touched, errors, stop, None),
                                        name="savegame-read", daemon=True) for i, run in enumerate(runs)]
            for thread in threads:
                thread.start()
            try:
                for chunk in chunks if file_hash is not None else ():
                    chunk.done.wait()
                    if errors:
                        break
                    for view, *_ in chunk.parts:
                        file_hash.update(view)
            except BaseException:
                stop.set()
                raise
            finally:
                for thread in threads:
                    thread.join()
        if errors:
            raise min(errors, key=lambda e: e[0])[1]  # the first in file order

    def _work(self, index: int, run: list[_Chunk], touched: set[str] | None,
              errors: list[tuple[int, BaseException]], stop: threading.Event, file_hash: Any, *,
              own_fd: bool = True) -> None:
        fd = (_reopen(self._fd) if own_fd else None) or self._fd
        hashers: dict[tuple[str, int], Any] = {}
        try:
            for chunk in run:
                if stop.is_set():
                    return
                if touched is not None and chunk.given:
                    touched.update(chunk.given)
                _preadv_all(fd, chunk.parts, chunk.offset, self.path)
                if self._pieces is not None:
                    for view, name, piece, last in chunk.parts:
                        hasher = hashers.get((name, piece))
                        if hasher is None:
                            hasher = hashers[name, piece] = xxhash.xxh3_128()
                        hasher.update(view)
                        if last:
                            self._check_piece(name, piece, hashers.pop((name, piece)).hexdigest())
                if file_hash is not None:
                    for view, *_ in chunk.parts:
                        file_hash.update(view)
                chunk.done.set()
        except BaseException as e:  # noqa: B036 - handed to the calling thread, which raises it
            errors.append((index, e))
            stop.set()
        finally:
            for chunk in run:
                chunk.done.set()  # never leave the file-order hasher waiting
            if fd != self._fd:
                os.close(fd)

    def _check_piece(self, name: str, piece: int, found: str) -> None:
        expected = self._pieces[name][piece]
        if found != expected:
            begin, end = self._entries[name]["data_offsets"]
            first = piece * self._piece
            raise CheckpointCorruptError(
                f"{self.path} does not match its manifest: tensor {name!r} (its bytes {first}-"
                f"{min(first + self._piece, end - begin)} of {end - begin}) hashes to {_HASH}:{found}, the "
                f"manifest recorded {_HASH}:{expected}. Its bytes were altered (disk or copy error). "
                "Restore the checkpoint from a backup or use another one."
            )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_tensors(path: str | os.PathLike, *, expected: FileInfo | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file into fresh CPU tensors, in one pass.

    With ``expected``, the file's size and xxh3-128 hash (computed while reading) must match,
    else :class:`CheckpointCorruptError` names the file and both values.

    >>> import tempfile, torch, os
    >>> from savegame.checkpoint.tensor_write import write_tensors
    >>> path = os.path.join(tempfile.mkdtemp(), "r.safetensors")
    >>> info = write_tensors(path, {"b": torch.tensor([True, False])})
    >>> read_tensors(path, expected=info)["b"].tolist()
    [True, False]
    """
    with TensorFile(path, expected=expected) as f:
        return f.read(dict.fromkeys(f.names))
