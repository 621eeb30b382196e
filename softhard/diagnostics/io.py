"""Results files: CSV, JSON, LaTeX table fragments and figures, written atomically.

Every writer writes to a temporary file in the target directory and renames
it over the destination (`os.replace`), so an interrupted run never leaves a
half-written table, and a second run over the same directory replaces the
results file by file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["write_atomic", "write_csv", "write_json", "write_latex", "save_figure", "to_jsonable"]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> str:
    """Write `data` to `path` through a temporary file and a rename; returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
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


def write_csv(path, columns: Mapping[str, Sequence]) -> str:
    """A CSV with a header row from `{name: [rows]}`, atomically."""
    names, rows = _columns_to_rows(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for r in rows:
        w.writerow([repr(float(v)) if isinstance(v, float) else v for v in r])
    return write_atomic(path, buf.getvalue())


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def write_latex(path, columns: Mapping[str, Sequence], *, headers=None, formats=None) -> str:
    """A LaTeX `tabular` fragment (booktabs rules), atomically.

    Args:
        columns: `{name: [rows]}`.
        headers: optional `{name: LaTeX header}`.
        formats: optional `{name: format spec}` (e.g. `".4f"`); default `".4g"`.
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
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return write_atomic(path, "\n".join(lines))


def save_figure(fig, path, *, dpi: int = 120) -> str:
    """Save a matplotlib figure as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())
