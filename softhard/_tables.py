"""JSON-ready dicts and readable tables for result NamedTuples.

Two functions that a `NamedTuple` result type adopts by assignment in its
class body (one line each)::

    class RiskSweep(NamedTuple):
        soft: Estimate  # [T]
        ...
        to_dict = _tables.to_dict
        __repr__ = _tables.table_repr

`to_dict(result)` maps every field to plain Python: arrays to (nested)
lists, an `Estimate` to `{"value": …, "stderr": …}`, a nested NamedTuple to
its own dict, NaN/inf to `None`. `table_repr(result)` prints one row per
field (`value ± stderr` for an `Estimate`, short arrays in full, long ones as
shape and range), so a notebook cell shows a table rather than a wall of
arrays. Values that are not concrete (tracers inside `jit`) print as their type.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["to_dict", "table_repr", "jsonable", "format_value"]

#: arrays with at most this many entries print in full in a table
SHOW_ENTRIES = 8


def _is_estimate(x) -> bool:
    return type(x).__name__ == "Estimate" and getattr(x, "_fields", None) == ("value", "stderr")


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def jsonable(x):
    """`x` as plain Python for `json.dumps` (arrays to lists, NaN/inf to None)."""
    if x is None or isinstance(x, (str, bool)):
        return x
    if _is_estimate(x):
        return {"value": jsonable(x.value), "stderr": jsonable(x.stderr)}
    if _is_namedtuple(x):
        return {f: jsonable(getattr(x, f)) for f in x._fields}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    try:
        a = np.asarray(x)
    except Exception:  # a tracer or an opaque object
        return repr(x)
    if a.dtype.kind in "fc":
        a = a.astype(np.float64)
        return _nan_to_none(a.tolist())
    if a.dtype.kind in "iub":
        return a.tolist()
    return repr(x)


def _nan_to_none(v):
    if isinstance(v, list):
        return [_nan_to_none(e) for e in v]
    return v if math.isfinite(v) else None


def to_dict(self) -> dict:
    """The fields of a result NamedTuple as a JSON-ready dict (see the module docstring)."""
    return {f: jsonable(getattr(self, f)) for f in self._fields}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def format_value(x) -> str:
    """One table cell: `value ± stderr` for an `Estimate`, an array in full or as a summary."""
    if x is None or isinstance(x, (str, bool, int, np.integer)):
        return str(x)
    if _is_estimate(x):
        try:
            v, s = np.asarray(x.value, np.float64), np.asarray(x.stderr, np.float64)
        except Exception:
            return f"Estimate({type(x.value).__name__})"
        if v.size <= SHOW_ENTRIES:
            cells = [f"{_fmt(a)} ± {_fmt(b)}" for a, b in zip(v.ravel(), s.ravel())]
            return cells[0] if v.ndim == 0 else "[" + ", ".join(cells) + "]"
        return f"{_summary(v)}, stderr ≤ {_fmt(float(np.nanmax(s)))}"
    if _is_namedtuple(x):
        return type(x).__name__ + "(" + ", ".join(_inline(x)) + ")"
    if isinstance(x, (list, tuple)) and all(isinstance(e, str) for e in x):
        return "; ".join(x) if x else "()"
    if isinstance(x, (float, np.floating)):
        return _fmt(float(x))
    try:
        a = np.asarray(x)
    except Exception:  # a tracer
        return type(x).__name__
    if a.dtype.kind not in "fiub":
        return repr(x) if len(repr(x)) <= 60 else repr(x)[:57] + "..."
    if a.ndim == 0:
        return _fmt(float(a)) if a.dtype.kind == "f" else str(a.item())
    if a.size <= SHOW_ENTRIES:
        body = ", ".join(_fmt(float(e)) if a.dtype.kind == "f" else str(e) for e in a.ravel())
        return "[" + body + "]"
    return _summary(a)


def _inline(x) -> list[str]:
    """The scalar fields of a nested result, `name=cell` (arrays and sub-results left out)."""
    cells = []
    for f in x._fields:
        v = getattr(x, f)
        inner = v.value if _is_estimate(v) else v
        if isinstance(v, str) or (not _is_namedtuple(v) or _is_estimate(v)) and np.ndim(inner) == 0:
            cells.append(f"{f}={format_value(v)}")
    return cells


def _summary(a: np.ndarray) -> str:
    shape = "×".join(str(s) for s in a.shape)
    if a.size == 0:
        return f"[{shape}] (empty)"
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    if finite.size == 0:
        return f"[{shape}] all non-finite"
    return f"[{shape}] in [{_fmt(float(finite.min()))}, {_fmt(float(finite.max()))}]"


def table_repr(self) -> str:
    """A readable two-column table of a result NamedTuple: field, value (± stderr)."""
    names = list(self._fields)
    width = max(len(n) for n in names) if names else 0
    lines = [type(self).__name__]
    for n in names:
        cell = format_value(getattr(self, n)).replace("\n", " ")
        lines.append(f"  {n:<{width}}  {cell}")
    return "\n".join(lines)
