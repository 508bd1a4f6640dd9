"""Streaming safetensors reader and writer that hash the file in the same pass.

The ``safetensors`` library builds the whole file in memory before writing it; for a checkpoint
that doubles peak memory and adds a full copy. Here each tensor's bytes go straight from its
memory to ``os.write`` in large chunks, with writeback to disk started chunk by chunk, while
xxh3-128 hashes the same chunks on a helper thread: once for the whole file, and once per piece
(each tensor cut in ``_CHUNK``-byte pieces), so a reader can check one tensor without the rest.

Reading (:class:`TensorFile`), a few threads each read their own contiguous stretch of the file
with ``preadv`` (their own file descriptor, so the kernel reads ahead for each), straight into
the destination tensors: fresh ones (huge pages for large ones) or tensors the caller hands in,
such as a model's own parameters. Each piece is hashed right after it arrives, or, for files
whose manifest records only the whole-file hash, every chunk in file order. Files are
byte-compatible with ``safetensors.torch.load_file`` / ``save_file`` in both directions.
Nothing is ever unpickled.

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
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import xxhash

from savegame.checkpoint.codec import SAFETENSORS_DTYPES
from savegame.checkpoint.layout import FileInfo  # re-exported: size and hash of one file
from savegame.errors import CheckpointCorruptError, FormatVersionError

__all__ = ["FileInfo", "TensorFileInfo", "TensorFile", "write_tensors", "read_tensors", "read_header", "hash_file",
           "hash_tensors"]

_CHUNK = 64 << 20  # large enough that syscall overhead vanishes, small enough to overlap hashing
_READ_CHUNK = 8 << 20  # one preadv: syscalls vanish, and the bytes are still in cache when hashed
_READERS = 4  # threads, each reading its own stretch: 4 streams kept a cold disk busiest, even on 2 cores
_PARALLEL = 32 << 20  # below this many bytes one thread reads everything: threads cost more
_MAX_IOV = 512  # buffers per preadv (the kernel takes up to IOV_MAX, 1024 on Linux)
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


@dataclass(frozen=True, eq=False)
class TensorFileInfo(FileInfo):
    """What ``write_tensors`` returns: a :class:`FileInfo` (equal to ``hash_file``'s for the same
    file) that also carries ``tensor_hashes``, the record a manifest keeps beside the file's size
    and hash so that :class:`TensorFile` can check each tensor as it reads it:
    ``{"algorithm": "xxh3_128", "piece_bytes": n, "header": hex, "tensors": {name: [hex, ...]}}``,
    one hash per ``piece_bytes`` of each tensor (none for an empty one).

    >>> TensorFileInfo(size=8, hash="xxh3_128:00") == FileInfo(size=8, hash="xxh3_128:00")
    True
    """

    tensor_hashes: dict[str, Any] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileInfo):
            return NotImplemented
        return (self.size, self.hash) == (other.size, other.hash)

    __hash__ = FileInfo.__hash__


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The tensor's memory as a flat byte view, without copying (bfloat16/float8 included)."""
    return memoryview(t.detach().reshape(-1).view(torch.uint8).numpy())


class _Hasher:
    """xxh3-128 over a stream of chunks, computed on a helper thread (xxhash drops the GIL); with
    ``pieces``, each chunk's own hash is appended to that list too."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._h = xxhash.xxh3_128()
        self._pool = pool
        self._pending = None

    def update(self, chunk: memoryview, pieces: list[str] | None = None) -> None:
        self.wait()  # keeps chunk order; the previous chunk was hashed while the kernel copied
        self._pending = self._pool.submit(self._update, chunk, pieces)

    def _update(self, chunk: memoryview, pieces: list[str] | None) -> None:
        self._h.update(chunk)
        if pieces is not None:
            pieces.append(xxhash.xxh3_128_hexdigest(chunk))

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


def _header_bytes(entries: dict[str, Any]) -> bytes:
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(raw).to_bytes(8, "little") + raw


def write_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> TensorFileInfo:
    """Write ``tensors`` as a safetensors file, fsync it and return its size and hashes (the whole
    file's, and each tensor's pieces in ``tensor_hashes``, see :class:`TensorFileInfo`).

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
    pieces: dict[str, list[str]] = {name: [] for name in order}

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="savegame-hash") as pool:
            hasher, written = _Hasher(pool), 0
            for name, buf in [(None, memoryview(header))] + [(n, _bytes_of(prepared[n])) for n in order]:
                for start in range(0, len(buf), _CHUNK):
                    chunk = buf[start:start + _CHUNK]
                    hasher.update(chunk, pieces[name] if name is not None else None)
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
    record = {"algorithm": _HASH, "piece_bytes": _CHUNK, "header": xxhash.xxh3_128_hexdigest(header),
              "tensors": pieces}
    return TensorFileInfo(size=len(header) + offset, hash=digest, tensor_hashes=record)


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


def _check_record(record: Any, entries: dict[str, Any], header: bytes, path: Path) -> tuple[int, dict[str, list[str]]]:
    """Validate a manifest's ``tensor_hashes`` against this file and check the header's hash;
    returns ``(piece_bytes, {name: [hex, ...]})``."""
    def bad(what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{path} does not match the tensor hashes its manifest records: {what}. "
                                      "Restore the checkpoint from a backup or use another one.")

    try:
        algorithm, piece, header_hash, pieces = (record["algorithm"], record["piece_bytes"], record["header"],
                                                 record["tensors"])
        ok = algorithm == _HASH and type(piece) is int and piece > 0 and isinstance(pieces, dict)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise bad(f"the record is malformed: {str(record)[:200]}")
    names = {name for name in entries if name != "__metadata__"}
    if names != set(pieces):
        raise bad(f"the file holds tensors {sorted(names - set(pieces))[:5]} the record does not name, "
                  f"the record names {sorted(set(pieces) - names)[:5]} the file does not hold")
    if (found := xxhash.xxh3_128_hexdigest(header)) != header_hash:
        raise bad(f"its header hashes to {found}, the manifest recorded {header_hash}; the header was altered")
    for name in names:
        begin, end = entries[name]["data_offsets"]
        hashes = pieces[name]
        if not isinstance(hashes, list) or len(hashes) != -(-(end - begin) // piece):
            raise bad(f"tensor {name!r} has {end - begin} bytes, which the record does not cut in {piece}-byte pieces")
    return piece, pieces


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
    >>> path = os.path.join(tempfile.mkdtemp(), "r.safetensors")
    >>> info = write_tensors(path, {"b": torch.tensor([True, False])})
    >>> read_tensors(path, expected=info)["b"].tolist()
    [True, False]
    """
    with TensorFile(path, expected=expected) as f:
        return f.read(dict.fromkeys(f.names))


def hash_tensors(path: str | os.PathLike, *, piece_bytes: int = _CHUNK) -> dict[str, Any]:
    """The ``tensor_hashes`` record of an existing safetensors file, as ``write_tensors`` makes it
    (see :class:`TensorFileInfo`); e.g. to give an older checkpoint's manifest per-tensor hashes.

    >>> import tempfile, torch, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.safetensors")
    >>> write_tensors(path, {"x": torch.ones(3)}).tensor_hashes == hash_tensors(path)
    True
    """
    with TensorFile(path) as f:
        pieces: dict[str, list[str]] = {}
        for name in f.names:
            begin, end = f._entries[name]["data_offsets"]
            pieces[name] = [xxhash.xxh3_128_hexdigest(os.pread(f._fd, min(piece_bytes, end - begin - start),
                                                               f._data_start + begin + start))
                            for start in range(0, end - begin, piece_bytes)]
        return {"algorithm": _HASH, "piece_bytes": piece_bytes, "header": xxhash.xxh3_128_hexdigest(f._header),
                "tensors": pieces}


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
