"""Results files: CSV, JSON, LaTeX table fragments and figures, written atomically.

Every writer writes to a hidden temporary file (`.tmp-*`) in the target
directory and renames it over the destination (`os.replace`), so an
interrupted run never leaves a half-written table, and a second run over the
same directory replaces the results file by file. Files get the mode
`0o666 & ~umask`, as `open` would give them (not `mkstemp`'s 0600).

Provenance: `meta` (e.g. `{"seed": 0, "run_id": "…"}`) is recorded in every
file: constant trailing columns of a CSV (so `csv` and `np.genfromtxt` read
it unchanged), a trailing `%` comment of a LaTeX fragment, the figure's
metadata. `output_lock` serialises runs into one folder (`fcntl.flock` on
`.softhard.lock`: a second run refuses with a clear message) and removes the
temporary files that a killed run left behind.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import math
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "write_atomic",
    "write_csv",
    "write_json",
    "write_latex",
    "save_figure",
    "to_jsonable",
    "new_run_id",
    "output_lock",
    "check_writable",
    "figure_format",
    "TMP_PREFIX",
    "LOCK_NAME",
]

TMP_PREFIX = ".tmp-"
LOCK_NAME = ".softhard.lock"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_run_id() -> str:
    """A fresh run id (12 hex digits), recorded in every file of one run."""
    return uuid.uuid4().hex[:12]


def check_writable(path: str | os.PathLike, what: str) -> str:
    """`path` can be written as a file (before any computation): its folder exists or can be made.

    Raises a `ValueError` naming `what` (e.g. `--csv`) when `path` is a
    directory or its folder is read-only or not a folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"`{what}` {path!r} is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(path))
    parent = directory
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"`{what}` {path!r}: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`{what}` {path!r}: folder {parent!r} is not writable")
    return path


def _check_out_dir(directory: str, what: str) -> str:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"`{what}` {directory!r} exists and is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError(f"`{what}` {directory!r} cannot be created: {e.strerror}") from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"`{what}` {directory!r} is not writable")
    return directory


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, what: str = "out"):
    """Hold an exclusive lock on the output folder `directory` for one run.

    Creates the folder if needed; a second run into the same folder (another
    process) raises a `ValueError` at once rather than mixing its files with
    ours. On entry, hidden temporary files left by a killed run are removed.
    """
    import fcntl

    directory = _check_out_dir(os.fspath(directory), what)
    lock_path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as e:
        raise ValueError(
            f"`{what}` {directory!r}: cannot create the lock file: {e.strerror}"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(
                f"`{what}` {directory!r} is in use by another softhard run (pid {holder}); "
                "wait for it to finish or choose another folder"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in glob.glob(os.path.join(glob.escape(directory), TMP_PREFIX + "*")):
            with contextlib.suppress(OSError):
                os.remove(stale)
        yield directory
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: str | os.PathLike, data: str | bytes) -> str:
    """Write `data` to `path` through a temporary file and a rename; returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp gives 0600
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def to_jsonable(obj):
    """NumPy/JAX scalars and arrays to plain Python (NaN/inf to None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def write_json(path, payload) -> str:
    """Pretty JSON, atomically."""
    return write_atomic(path, json.dumps(to_jsonable(payload), indent=2) + "\n")


def _columns_to_rows(columns: Mapping[str, Sequence]) -> tuple[list[str], list[list]]:
    names = list(columns)
    arrays = [np.asarray(columns[c]) for c in names]
    n = {a.shape[0] for a in arrays}
    if len(n) != 1:
        raise ValueError(f"all columns must have the same length, got {dict(zip(names, n))}")
    rows = [[a[i].item() for a in arrays] for i in range(arrays[0].shape[0])]
    return names, rows


def _with_meta(columns: Mapping[str, Sequence], meta) -> dict:
    """`columns` plus one constant column per `meta` entry (seed, run id)."""
    columns = dict(columns)
    if meta:
        n = len(np.asarray(next(iter(columns.values()))))
        for k, v in meta.items():
            if k in columns:
                raise ValueError(f"`meta` key {k!r} clashes with a column")
            columns[k] = [v] * n
    return columns


def _meta_line(meta) -> str:
    return " ".join(f"{k}={v}" for k, v in (meta or {}).items())


def write_csv(path, columns: Mapping[str, Sequence], *, meta=None) -> str:
    """A CSV with a header row from `{name: [rows]}`, atomically.

    `meta` (e.g. `{"seed": 0, "run_id": "…"}`) adds constant trailing columns.
    """
    names, rows = _columns_to_rows(_with_meta(columns, meta))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for r in rows:
        w.writerow([repr(float(v)) if isinstance(v, float) else v for v in r])
    return write_atomic(path, buf.getvalue())


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def write_latex(
    path, columns: Mapping[str, Sequence], *, headers=None, formats=None, meta=None
) -> str:
    """A LaTeX `tabular` fragment (booktabs rules), atomically.

    Args:
        columns: `{name: [rows]}`.
        headers: optional `{name: LaTeX header}`.
        formats: optional `{name: format spec}` (e.g. `".4f"`); default `".4g"`.
        meta: optional provenance, written as a trailing `% key=value …` comment.
    """
    names, rows = _columns_to_rows(columns)
    headers = headers or {}
    formats = formats or {}
    lines = [r"\begin{tabular}{" + "r" * len(names) + "}", r"\toprule"]
    lines.append(" & ".join(headers.get(c, _tex_escape(c)) for c in names) + r" \\")
    lines.append(r"\midrule")
    for r in rows:
        cells = []
        for c, v in zip(names, r):
            if isinstance(v, float) and not math.isfinite(v):
                cells.append("--")
            elif isinstance(v, (float, int)) and not isinstance(v, bool):
                cells.append(format(v, formats.get(c, ".4g")))
            else:
                cells.append(_tex_escape(str(v)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if meta:
        lines.append("% softhard " + _meta_line(meta))
    lines.append("")
    return write_atomic(path, "\n".join(lines))


_META_KEY = {"png": "Description", "pdf": "Subject", "svg": "Description"}


def figure_format(path, what: str = "path") -> str:
    """The figure format named by `path`'s suffix (`.png`, `.pdf`, `.svg`, …), or a ValueError."""
    from matplotlib.backend_bases import FigureCanvasBase

    supported = sorted(FigureCanvasBase.get_supported_filetypes())
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in supported:
        raise ValueError(
            f"`{what}` {os.fspath(path)!r} has no figure suffix matplotlib can write; use one of "
            + ", ".join("." + e for e in supported)
        )
    return ext


def save_figure(fig, path, *, dpi: int = 120, meta=None) -> str:
    """Save a matplotlib figure atomically, in the format its suffix names (`.png`, `.pdf`, …).

    `meta` is recorded in the file's metadata where the format has a field for it.
    """
    fmt = figure_format(path)
    buf = io.BytesIO()
    extra = {"metadata": {_META_KEY[fmt]: "softhard " + _meta_line(meta)}}
    if not meta or fmt not in _META_KEY:
        extra = {}
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", **extra)
    return write_atomic(path, buf.getvalue())
