"""Streaming safetensors reader and writer that hash the file in the same pass.

The ``safetensors`` library builds the whole file in memory before writing it; for a checkpoint
that doubles peak memory and adds a full copy. Here each tensor's bytes go straight from its
memory to ``os.write`` in large chunks, with writeback to disk started chunk by chunk, while
xxh3-128 hashes the same chunks on a helper thread. Reading, a few threads ``preadv`` straight
into freshly allocated tensors (huge pages for large ones) while the chunks are hashed in file
order. Files are byte-compatible with ``safetensors.torch.load_file`` / ``save_file`` in both
directions. Nothing is ever unpickled.

>>> import tempfile, torch, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> info = write_tensors(path, {"w": torch.arange(4.0)})
>>> read_tensors(path, expected=info)["w"]
tensor([0., 1., 2., 3.])
"""

from __future__ import annotations

import json
import math
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import torch
import xxhash

from savegame.checkpoint.codec import SAFETENSORS_DTYPES
from savegame.checkpoint.layout import FileInfo  # re-exported: size and hash of one file
from savegame.errors import CheckpointCorruptError, FormatVersionError

__all__ = ["FileInfo", "write_tensors", "read_tensors", "read_header", "hash_file"]

_CHUNK = 64 << 20  # large enough that syscall overhead vanishes, small enough to overlap hashing
_READ_CHUNK = 16 << 20  # unit of the parallel reads: several per tensor keep all readers busy
_READERS = max(2, min(4, os.cpu_count() or 1))  # parallel preads read a cold disk ~2x faster
_HUGE = 8 << 20  # tensors this large get their own huge-page backed memory (see _empty)
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_CODES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}
_HASH = "xxh3_128"


def _check_little_endian() -> None:
    if sys.byteorder != "little":
        raise NotImplementedError(
            "savegame writes and reads safetensors files straight from tensor memory, which is only "
            "correct on little-endian machines; this machine is big-endian and is not supported."
        )


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The tensor's memory as a flat byte view, without copying (bfloat16/float8 included)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


class _Hasher:
    """xxh3-128 over a stream of chunks, computed on a helper thread (xxhash drops the GIL)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._h = xxhash.xxh3_128()
        self._pool = pool
        self._pending = None

    def update(self, chunk: memoryview) -> None:
        self.wait()  # keeps chunk order; the previous chunk was hashed while the kernel copied
        self._pending = self._pool.submit(self._h.update, chunk)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def hexdigest(self) -> str:
        self.wait()
        return f"{_HASH}:{self._h.hexdigest()}"


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a just-written range to disk now instead of all at once at fsync time, so the
    disk works while we copy the next chunk. On Linux, FADV_DONTNEED starts writeback of dirty
    pages (and keeps a checkpoint from flushing the training data out of the page cache)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # only a hint; some file systems refuse it
            pass


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


def _pread_into(fd: int, view: memoryview, offset: int, path: Path, name: str) -> None:
    filled = 0
    while filled < len(view):  # preadv may return fewer bytes than asked
        got = os.preadv(fd, [view[filled:]], offset + filled)
        if not got:
            raise CheckpointCorruptError(f"{path} is truncated: it ended inside tensor {name!r}.")
        filled += got


def _header_bytes(entries: dict[str, Any]) -> bytes:
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(raw).to_bytes(8, "little") + raw


def write_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> FileInfo:
    """Write ``tensors`` as a safetensors file, fsync it and return its size and hash.

    Tensors must be dense CPU tensors of a safetensors dtype; non-contiguous ones are copied.
    Larger dtypes come first so every tensor stays aligned for zero-copy readers. A failed
    write removes the partial file and re-raises the ``OSError``.

    >>> import tempfile, torch, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> write_tensors(path, {"a": torch.zeros(2, dtype=torch.bfloat16)}, metadata={"k": "v"}).size
    92
    """
    _check_little_endian()
    prepared: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"Tensor names must be strings other than '__metadata__', but got {name!r}.")
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.layout != torch.strided:
            raise TypeError(f"Tensor {name!r} must be a dense CPU torch.Tensor, but got {type(t).__name__} "
                            f"on {getattr(t, 'device', '?')}; call .cpu() / .to_dense() first.")
        if t.dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"Tensor {name!r} has dtype {t.dtype}, which safetensors cannot store.")
        prepared[name] = t.detach().resolve_conj().resolve_neg().contiguous()
    order = sorted(prepared, key=lambda n: -prepared[n].element_size())  # stable: keeps input order
    entries: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError(f"safetensors metadata must map str to str, but got {dict(metadata)!r}.")
        entries["__metadata__"] = dict(metadata)
    offset = 0
    for name in order:
        t = prepared[name]
        nbytes = t.numel() * t.element_size()
        entries[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = _header_bytes(entries)

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="savegame-hash") as pool:
            hasher, written = _Hasher(pool), 0
            for buf in [memoryview(header)] + [_bytes_of(prepared[n]) for n in order]:
                for start in range(0, len(buf), _CHUNK):
                    chunk = buf[start:start + _CHUNK]
                    hasher.update(chunk)
                    length = len(chunk)
                    while chunk:  # os.write may write less than asked
                        chunk = chunk[os.write(fd, chunk):]
                    _start_writeback(fd, written, length)
                    written += length
            digest = hasher.hexdigest()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)
    return FileInfo(size=len(header) + offset, hash=digest)


def _looks_like(first: bytes) -> str | None:
    if first.startswith(b"PK\x03\x04"):
        return "a torch.save file (a zip archive holding a pickle)"
    if first[:1] == b"\x80" and first[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle / legacy torch.save file"
    return None


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse and validate a safetensors header; return ``(entries, data_start)``.

    ``entries`` maps tensor names (and ``__metadata__``, if any) to their header entries.

    >>> import tempfile, torch, os
    >>> path = os.path.join(tempfile.mkdtemp(), "h.safetensors")
    >>> _ = write_tensors(path, {"x": torch.ones(3)})
    >>> read_header(path)[0]["x"]["shape"]
    [3]
    """
    with open(path, "rb", buffering=0) as f:
        return _read_header(f, Path(path), os.fstat(f.fileno()).st_size)


def _read_header(f: Any, path: Path, size: int) -> tuple[dict[str, Any], int]:
    def bad(what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{path} is not a valid safetensors file: {what}. "
                                      "The file is damaged; restore it from a backup or use another checkpoint.")

    first = f.read(8)
    if kind := _looks_like(first):
        raise FormatVersionError(
            f"{path} is not a safetensors file: this looks like {kind}. savegame never unpickles "
            "files because unpickling can run arbitrary code; to read weights someone else saved "
            "with torch.save, use savegame.import_weights(...)."
        )
    if len(first) < 8:
        raise bad(f"it is truncated ({size} bytes; even an empty safetensors file has more)")
    n = int.from_bytes(first, "little")
    if n > _MAX_HEADER:
        raise bad(f"its first 8 bytes announce a {n}-byte header, more than any safetensors header")
    if n > size - 8:
        raise bad(f"it is truncated: the header alone needs {n + 8} bytes, the file has {size}")
    try:
        entries = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"its header is not valid JSON ({e})") from e
    if not isinstance(entries, dict):
        raise bad("its header is not a JSON object")
    spans = []
    for name, e in entries.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _CODES[e["dtype"]], e["shape"], e["data_offsets"]
            ok = all(type(d) is int and d >= 0 for d in shape) and type(begin) is type(end) is int
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"the header entry for {name!r} is malformed or has an unknown dtype: {str(e)[:200]}")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise bad(f"tensor {name!r} has {end - begin} bytes but shape {shape} of {e['dtype']}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise bad(f"tensor {name!r} starts at byte {begin} of the data, expected {position}")
        position = end
    if 8 + n + position > size:
        raise bad(f"it is truncated: the header describes {8 + n + position} bytes, the file has {size}")
    if 8 + n + position < size:
        raise bad(f"it has {size - 8 - n - position} unexpected bytes after the last tensor")
    return entries, 8 + n


def read_tensors(path: str | os.PathLike, *, expected: FileInfo | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file into fresh CPU tensors, in one pass.

    With ``expected``, the file's size and xxh3-128 hash (computed while reading) must match,
    else :class:`CheckpointCorruptError` names the file and both values.

    >>> import tempfile, torch, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.safetensors")
    >>> info = write_tensors(path, {"b": torch.tensor([True, False])})
    >>> read_tensors(path, expected=info)["b"].tolist()
    [True, False]
    """
    _check_little_endian()
    path = Path(path)
    with open(path, "rb", buffering=0) as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        if expected is not None and size != expected.size:
            raise CheckpointCorruptError(
                f"{path} has {size} bytes but the manifest recorded {expected.size}: the file was "
                "truncated or altered. Restore it from a backup or use another checkpoint."
            )
        entries, data_start = _read_header(f, path, size)
        spans = sorted((e["data_offsets"][0], name) for name, e in entries.items() if name != "__metadata__")
        out: dict[str, torch.Tensor] = {}
        chunks: list[tuple[int, memoryview, str]] = []  # (file offset, destination), in file order
        for begin, name in spans:
            e = entries[name]
            out[name] = t = _empty(e["shape"], _CODES[e["dtype"]])
            buf = _bytes_of(t)
            for start in range(0, len(buf), _READ_CHUNK):
                chunks.append((data_start + begin + start, buf[start:start + _READ_CHUNK], name))
        hasher = xxhash.xxh3_128() if expected is not None else None
        if hasher:
            f.seek(0)
            hasher.update(f.read(data_start))
        # Several readers keep more requests in flight than one sequential reader; the chunks are
        # hashed in file order as they arrive, so verification costs no second pass.
        with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="savegame-read") as pool:
            futures = [pool.submit(_pread_into, fd, view, offset, path, name) for offset, view, name in chunks]
            try:
                for future, (_, view, _) in zip(futures, chunks):
                    future.result()
                    if hasher:
                        hasher.update(view)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    if expected is not None and f"{_HASH}:{hasher.hexdigest()}" != expected.hash:
        raise CheckpointCorruptError(
            f"{path} does not match its recorded hash: expected {expected.hash}, found "
            f"{_HASH}:{hasher.hexdigest()}. Its bytes were altered (disk or copy error). Restore it "
            "from a backup or use another checkpoint."
        )
    return out


def hash_file(path: str | os.PathLike) -> FileInfo:
    """Size and xxh3-128 hash of any file, read in large chunks.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.txt")
    >>> _ = open(path, "wb").write(b"hi")
    >>> hash_file(path).size
    2
    """
    h, size = xxhash.xxh3_128(), 0
    buf = bytearray(_CHUNK)
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buf):
            h.update(memoryview(buf)[:got])
            size += got
    return FileInfo(size=size, hash=f"{_HASH}:{h.hexdigest()}")
