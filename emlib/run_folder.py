"""The run folder (`output_dir`) of a pretraining or fine-tuning run, and its files.

The contract, read by `emlib.sweep`, `emlib.results` and `emlib.bioimageio`:

    .lock            held (flock) while a run writes into the folder: one run per folder
    config.json      written first, once every check of the run has passed
    checkpoint.pt    atomic; resumable; never holds NaN/inf weights
    log.csv, ...     CSV logs, one row per step or epoch (validation.csv: the validation
                     scores); on resume, rows written after the checkpoint (and a row
                     torn by a crash) are dropped
    summary.json     written last, and only when the run finishes

`plan_run` decides, before anything in the folder changes, whether a run resumes;
`start_run_folder` / `finish_run_folder` write the first and last file. A
checkpoint is refused on resume when it holds NaN/inf, its config differs
(`check_config_matches`) or it was trained on other data (`data_fingerprint` of the
item lists, `content_fingerprint` of the files' bytes; `check_data_matches`); a
refused resume leaves the folder as it was. Every file is written atomically
(`emlib.atomic`).

Renamed files. A run folder written before a file was renamed keeps its old file:
`run_file` finds it, and a resumed run renames it (`start_run_folder`).

    val.csv -> validation.csv   pretraining's validation log (before the rename,
                                e.g. the real-data sweep's results/)
"""
import contextlib
import csv
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from emlib import atomic, session
from emlib.config import upgrade
from emlib.finite import check_finite_weights, nonfinite_tensors

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to an exclusively created file
    fcntl = None

LOCK_NAME = ".lock"
RENAMED_FILES = {"val.csv": "validation.csv"}  # old name -> name; see the module docstring
CHECKPOINT_ADVICE = "move it away (or restore a copy of the run folder), then run again without --resume to start over"


class RunFolderLockedError(RuntimeError):
    """Another run is writing into the same run folder."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, corrupt, or not a checkpoint of this run kind."""


# ----------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def lock_run_folder(output_dir, enabled: bool = True, holder: str = "run"):
    """Hold an exclusive lock on a run folder (`output_dir/.lock`) for the whole run.

    A second run into the same folder raises RunFolderLockedError instead of
    interleaving its files with the first. The lock is an flock on the file: the
    OS releases it when the process dies, even by kill -9; a clean exit also
    removes the file (and the folder, when the run created it and left it empty).
    `enabled=False` (ranks other than 0) does nothing. `holder` names what holds the
    lock in the message ("run"; the sweep locks its runs folder as a "sweep").
    """
    if not enabled:
        yield
        return
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder: give a folder for the {holder}'s files")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _acquire_lock(path, holder)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: a waiting run then sees a new file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a run that failed before writing anything


def _acquire_lock(path: Path, holder: str = "run") -> int:
    advice = "wait for it to finish, or use another output_dir" if holder == "run" else "wait for it to finish"

    def busy():
        with contextlib.suppress(OSError, ValueError):
            process = path.read_text().strip()
            return RunFolderLockedError(f"{path.parent} is in use by another {holder} (process {process}; lock file {path}): "
                                        f"{advice}")
        return RunFolderLockedError(f"{path.parent} is in use by another {holder} (lock file {path}): {advice}")

    if fcntl is None:  # no flock: an exclusively created file (left behind by a killed run: delete it)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise busy() from None
        _write_pid(fd, path)
        return fd
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy() from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and flock: try again
            os.ftruncate(fd, 0)
            _write_pid(fd, path)
            return fd
        os.close(fd)


def _write_pid(fd: int, path: Path) -> None:
    """The holder's process id into the lock file; a full disk names the file (and the run does not start)."""
    try:
        with atomic.naming_a_full_disk(path, kept="the run did not start"):
            os.write(fd, str(os.getpid()).encode())
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


# ----------------------------------------------------------------------------- the contract: first and last file


def plan_run(output_dir, resume: bool, overwrite: bool = False, announce: bool = True) -> bool:
    """Decide, before anything in `output_dir` changes, whether the run resumes.

    Returns True when `resume` and output_dir/checkpoint.pt exists. `resume` without
    a checkpoint says so (one line, when `announce`) and starts fresh. A fresh run
    into a folder holding a finished run (summary.json) raises ValueError unless
    `overwrite`.
    """
    output_dir = Path(output_dir)
    if resume and (output_dir / "checkpoint.pt").is_file():
        return True
    if resume and announce:
        session.note(f"resume: no checkpoint in {output_dir}; starting a new run")
    if (output_dir / "summary.json").exists() and not overwrite:
        raise ValueError(f"output_dir {output_dir} holds a finished run (summary.json): continue it with --resume "
                         "(e.g. with more epochs), replace it with --overwrite, or choose another output_dir")
    return False


def remove_stale_temp_files(output_dir) -> list:
    """Delete the temp files that killed runs left in `output_dir` (`.checkpoint.pt.*.tmp`
    of atomic writes, `*.tmp` of other writers); returns their names. Call it with
    the run folder's lock held."""
    folder = Path(output_dir)
    removed = []
    for path in sorted(set(folder.glob(".*.tmp")) | set(folder.glob("*.tmp"))):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            path.unlink()
            removed.append(path.name)
    return removed


def start_run_folder(output_dir, config: dict) -> None:
    """Mark a run folder as running: create it, remove stale temp files and an old
    summary.json, give files of a renamed kind their current name, write config.json.

    Call it only once every check of the run (config, checkpoint, data) has passed,
    so that a refused run leaves the folder as it was.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(output_dir)
    for old, new in RENAMED_FILES.items():
        if (output_dir / old).is_file() and not (output_dir / new).exists():
            os.replace(output_dir / old, output_dir / new)  # a resumed run goes on with its log
    (output_dir / "summary.json").unlink(missing_ok=True)
    atomic.write_json(output_dir / "config.json", config)


def run_file(output_dir, name: str) -> Path:
    """The path of file `name` in a run folder; in a folder written before the file was
    renamed (RENAMED_FILES), its old file when only that one is there."""
    path = Path(output_dir) / name
    old = next((Path(output_dir) / o for o, n in RENAMED_FILES.items() if n == name), None)
    return old if old is not None and old.is_file() and not path.exists() else path


def finish_run_folder(output_dir, summary: dict) -> None:
    """Mark a run as finished: its summary.json, written atomically and last."""
    atomic.write_json(Path(output_dir) / "summary.json", summary)


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, state: dict) -> None:
    """Save a checkpoint dict atomically. Keep it to tensors, numbers, strings,
    lists and dicts (no pickled objects) so that it loads with weights_only=True.

    A state holding any NaN/inf floating-point tensor (weights, buffers, optimiser
    moments) is refused with NonFiniteWeightsError naming the tensor; the previous
    checkpoint stays as it was.
    """
    path = Path(path)
    if path.is_file():
        kept = "the previous checkpoint is kept (the run diverged: continue from it with --resume and a lower lr, or without amp)"
    else:
        kept = "there is no earlier checkpoint (the run diverged before its first one: start again with a lower lr, or without amp)"
    check_finite_weights(state, f"refusing to write {path}; {kept}")
    atomic.atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu", required=()) -> dict:
    """Load a checkpoint written by `save_checkpoint` (weights_only=True, never pickle).

    `required`: keys the checkpoint dict must have. An empty, truncated or corrupt
    file, or one of another structure, raises CheckpointError naming the path and
    what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes; a crash or a full disk?): {CHECKPOINT_ADVICE}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # permissions and the like: the message names the file already
    except pickle.UnpicklingError:
        # torch's own message here suggests weights_only=False: never do that with a file you did not write.
        raise CheckpointError(f"checkpoint {path} is corrupt, or holds objects other than tensors, numbers, strings, "
                              f"lists and dicts (which are never unpickled): {CHECKPOINT_ADVICE}") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for truncated archives
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}): {CHECKPOINT_ADVICE}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an emlib checkpoint (it holds a {type(state).__name__}, not a dict): {CHECKPOINT_ADVICE}")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this kind of run (no {', '.join(missing)}): {CHECKPOINT_ADVICE}")
    bad = nonfinite_tensors(state)  # save_checkpoint never writes them: another writer, or a damaged file
    if bad:
        name, count, size = bad[0]
        raise CheckpointError(f"checkpoint {path} holds NaN/inf: {name} has {count} NaN/inf value(s) of {size}"
                              f"{f' (and {len(bad) - 1} more tensor(s))' if len(bad) > 1 else ''}: {CHECKPOINT_ADVICE}")
    return state


@contextlib.contextmanager
def checkpoint_fits(path):
    """Turn an error while loading a checkpoint's contents into the run's objects
    (missing keys, other shapes) into one CheckpointError naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this run ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]}): {CHECKPOINT_ADVICE}") from None


# ----------------------------------------------------------------------------- checks on resume


def config_differences(saved: dict, current: dict, may_grow=("epochs",), ignore=()) -> list[str]:
    """The fields that differ between a checkpoint's config and the current one.

    Fields in `may_grow` may increase (train longer); fields in `ignore` may change
    freely (device, workers, output folder, ...). Returns "field: saved -> current"
    strings, empty when compatible.
    """
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        old, new = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if _same(old, new):
            continue
        if key in may_grow and grows(old, new):
            continue
        diffs.append(f"{key}: {old!r} -> {new!r}")
    return diffs


def check_config_matches(saved: dict, current: dict, path="checkpoint", may_grow=("epochs",), ignore=()) -> None:
    """Raise ValueError listing the differing fields when a checkpoint cannot be resumed
    (the saved config's renamed fields are read under their new names: `emlib.config.upgrade`)."""
    diffs = config_differences(upgrade(saved), current, may_grow=may_grow, ignore=ignore)
    if diffs:
        raise ValueError(f"cannot resume from {path}: its config differs in " + "; ".join(diffs) + " (use a new output_dir or the original config)")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def grows(old, new) -> bool:
    """Whether a may-grow field's new value is at least its old one (None: unbounded)."""
    if new is None:  # None = unbounded (e.g. max_steps)
        return True
    return old is not None and isinstance(old, (int, float)) and isinstance(new, (int, float)) and new >= old


def data_fingerprint(datasets) -> str:
    """A sha256 of what `datasets` (a list) hold, to refuse resuming on other data.

    Each dataset is unwrapped through `.dataset` (Subset, crops, repeats, seeded
    samples); Subset `indices` on the way count, and at the bottom its item list:
    `sources` (the source image of each item), else `files`, else `ids`, else only
    its length.
    """
    parts = [_item_list(dataset) for dataset in datasets]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _item_list(dataset) -> list:
    parts = []
    for _ in range(100):
        indices = getattr(dataset, "indices", None)
        if indices is not None:
            parts.append(["indices", [int(i) for i in indices]])
        for name in ("sources", "files", "ids"):
            items = getattr(dataset, name, None)
            if items is not None and not isinstance(items, (str, bytes)):
                parts.append([name, [str(item) for item in items]])
                return parts
        inner = getattr(dataset, "dataset", None)
        if inner is None or isinstance(inner, (str, bytes)) or not hasattr(inner, "__len__"):
            parts.append(["length", len(dataset)])
            return parts
        dataset = inner
    raise ValueError("data_fingerprint: datasets nested more than 100 deep")


def content_fingerprint(folder, files=None) -> str:
    """A sha256 of the relative path, size and bytes of each file under `folder` (`files`:
    relative paths; default every file whose path has no hidden part), to refuse resuming
    on data with the same names but other pixels. It reads every file once."""
    folder = Path(folder)
    if files is None:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    digest = hashlib.sha256()
    for relative in files:
        path = folder / relative
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def check_data_matches(saved: str | None, current: str, path, data_root=None) -> None:
    """Raise ValueError when a checkpoint was trained on other data than the run now
    sees (fingerprints differ). Checkpoints without a fingerprint pass."""
    if saved is not None and saved != current:
        raise ValueError(f"cannot resume from {path}: the data differs from the data it was trained on "
                         f"(fingerprint {saved[:12]} -> {current[:12]}; data_root={data_root!r}): point data_root "
                         "at the original data, or start a new run in another output_dir")


# ----------------------------------------------------------------------------- CSV logs


class CSVLogger:
    """Append rows to a CSV file, flushed row by row.

    On resume pass `resume_step`: rows whose `step_key` is beyond the checkpoint's
    step (written after the last checkpoint by the interrupted run) are dropped, so
    the log matches a run that was never interrupted. Without `resume_step` an
    existing file is replaced. Rows that do not parse (a torn last row, from a crash
    in the middle of an append) are dropped.
    """

    def __init__(self, path, fieldnames, resume_step: int | None = None, step_key: str = "step"):
        self.path, self.fieldnames = Path(path), list(fieldnames)
        rows = rows_up_to(self.path, step_key, resume_step) if resume_step is not None and self.path.exists() else []
        write_rows(self.path, rows, self.fieldnames)

    def log(self, row: dict) -> None:
        """Append one row (missing fields are left empty, floats written with 7 significant digits)."""
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"{self.path.name}: unknown log column(s) {sorted(unknown)}")
        row = {k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in row.items()}
        with atomic.naming_a_full_disk(self.path, kept="the rows before are kept"), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames).writerow(row)


def complete_rows(path) -> list:
    """The complete rows of a CSV file as dicts of strings: a row with too few or too
    many cells (torn by a crash mid-append) is skipped."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [row for row in reader if None not in row and None not in row.values()]


def rows_up_to(path, key: str, last: int) -> list:
    """The complete rows of a CSV log whose integer `key` column is at most `last`
    (what a run resumed from its checkpoint at step / epoch `last` keeps)."""
    kept = []
    for row in complete_rows(path):
        with contextlib.suppress(KeyError, ValueError):
            if int(float(row[key])) <= last:
                kept.append(row)
    return kept


def write_rows(path, rows, columns) -> None:
    """Replace a CSV file by a header and `rows` (cells missing from a row left empty), atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in columns} for row in rows)
    atomic.write_text(path, text.getvalue())


def keep_rows_up_to(path, key: str, last: int, columns) -> None:
    """Drop the rows of a CSV log written after the checkpoint at `key` = `last` (and
    torn rows); a missing file stays missing."""
    if Path(path).is_file():
        write_rows(path, rows_up_to(path, key, last), columns)


def _float_row(row: dict) -> dict | None:
    """The row's cells as floats (empty cells NaN); None when a cell does not parse."""
    try:
        return {k: float(v) if v != "" else np.nan for k, v in row.items()}
    except ValueError:
        return None


def read_log(path) -> dict:
    """A log CSV as {column: np.ndarray of floats} (empty cells become NaN; rows that
    do not parse, such as a row torn by a crash, are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file not found: {path}")
    rows = [r for r in map(_float_row, complete_rows(path)) if r is not None]
    columns = rows[0].keys() if rows else []
    return {c: np.array([r[c] for r in rows], dtype=float) for c in columns}


def run_status(run_dir) -> str:
    """`finished` (summary.json), `unfinished` (checkpoint.pt, no summary) or `new`."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        return "finished"
    if (run_dir / "checkpoint.pt").exists():
        return "unfinished"
    return "new"
