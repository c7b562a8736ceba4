"""Atomic file writes: every file emlib writes and later trusts is all old or all new.

A file is written to a temporary file in the same folder, flushed to disk and
renamed onto its name, so that a crash (or kill -9) leaves the previous file
intact and a reader never sees half a file. A full disk raises DiskFullError,
which names the file and says that the previous one is kept. Files get the mode
`open()` would give them (0o666 less the umask). Checkpoints, config.json,
summary.json, model cards, weights, results CSVs and split manifests all go
through `atomic_write`.
"""
import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path


class DiskFullError(OSError):
    """The disk filled up while a file was written atomically; the previous file is untouched."""

    def __init__(self, path: Path, kept: str | None = None):
        if kept is None:
            kept = "the previous checkpoint is kept" if path.suffix == ".pt" else f"the previous {path.name} is kept"
            if not path.exists():
                kept = "nothing was written"
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; {kept} (free some space, then continue with --resume)", str(path))

    def __str__(self):
        return self.strerror


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an exception it was raised from or during, is ENOSPC / EDQUOT
    (torch.save reports a full disk as a RuntimeError raised while handling the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def naming_a_full_disk(path, kept: str | None = None):
    """Turn a full disk (ENOSPC / EDQUOT) inside the block into DiskFullError naming `path`
    (for the writes that are not atomic: a lock file, a log row appended)."""
    try:
        yield
    except OSError as err:
        if _is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(Path(path), kept) from err
        raise


def atomic_write(path, write_fn) -> None:
    """Write a file atomically: `write_fn(file)` (a binary file) into a temp file in the
    same folder, fsync, `os.replace` onto `path`, fsync the folder. A crash leaves the
    old file; a full disk raises DiskFullError naming `path`. The temp file is named
    `.<name>.<random>.tmp` (a run removes those that killed runs left behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_a_full_disk(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_disk_full(err):
            raise DiskFullError(path) from err
        raise
    _fsync_dir(path.parent)


def write_text(path, text: str) -> None:
    """Write `text` (UTF-8) atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path, data, indent: int = 2, sort_keys: bool = True) -> None:
    """Write `data` as JSON (indented, keys sorted, a final newline), atomically."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every OS / filesystem allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
