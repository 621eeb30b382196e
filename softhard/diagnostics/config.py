"""Sweep configurations: a model, a target and an input law as a small JSON/TOML file.

    {
      "router":  {"type": "linear", "W": [[1, 0], [0, 0]], "b": [0, 0]},
      "experts": {"type": "linear", "B": [[0, 2], [0, 0]], "c": [0, 0]},
      "law":     {"type": "standard_gaussian", "d": 2},
      "target":  {"type": "self"},
      "taus":    {"geomspace": [0.01, 1.0, 16]},
      "n": 262144,
      "seed": 0
    }

Formats: JSON (`.json`) and TOML (`.toml`), chosen by the file's suffix; any
other suffix (`.yaml`, `.yml`, ...) is refused with a `ValueError`.

Routers: `linear` (W, b), `mlp` (W1, b1, W2, b2, activation). Experts:
`linear` (B, c), `mlp` (W1, b1, W2, b2, activation). Laws: `gaussian` (mean,
cov), `standard_gaussian` (d), `uniform` (low, high), `gaussian_mixture`
(weights, means, covs). Targets: `self` (the hard predictor of the model's own
router and experts, noise_std), `teacher` (router, experts, noise_std),
`linear` (w, c, noise_std). `taus` is a list of temperatures > 0 or
`{"geomspace": [lo, hi, T]}` (finite `0 < lo, hi`, integer `T >= 1`) or
`{"linspace": [lo, hi, T]}`. `n` is an integer >= 2, `seed` an integer in
`[0, 2**32)`; booleans are never taken for numbers (`"seed": true` is an error,
not 1). Every problem is reported as a `ValueError` naming the field.

Random initialisation. Instead of its weights, a router or expert bank (also
`target.router` / `target.experts`) may give `K` (number of experts, >= 2),
for `mlp` also `hidden` (`H >= 1`), and `"init": {"seed": S, "scale": s}`
(integer seed in `[0, 2**32)`, finite `s > 0`):

    "router":  {"type": "mlp", "K": 4, "hidden": 8, "activation": "relu",
                "init": {"seed": 0, "scale": 0.5}}

Every parameter (weights and biases) is then drawn i.i.d. N(0, s^2): one
`jax.random.normal(key(S), (P,), float32)` draw of all `P` parameters (float32,
so the same seed gives the same model with or without x64), times `s`, cut
into the arrays below in their order (row-major), with `d` the law's
dimension (`law.dim`):

    router  linear: W [K, d], b [K]             mlp: W1 [H, d], b1 [H], W2 [K, H], b2 [K]
    experts linear: B [K, d], c [K]             mlp: W1 [K, H, d], b1 [K, H], W2 [K, H], b2 [K]

Giving `init` together with any explicit weight, or `K` / `hidden` without
`init`, is an error.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..models import (
    Gaussian,
    GaussianMixture,
    LinearExperts,
    LinearRouter,
    LinearTarget,
    MLPExperts,
    MLPRouter,
    MoE,
    StandardGaussian,
    Teacher,
    Uniform,
)

__all__ = ["SweepConfig", "load_config", "parse_config"]

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
}


class SweepConfig(NamedTuple):
    model: MoE
    target: object  # Teacher or LinearTarget
    law: object
    taus: np.ndarray  # [T]
    n: int
    seed: int


def _need(cfg: dict, key: str, where: str):
    if not isinstance(cfg, dict):
        raise ValueError(f"config field `{where}` must be a table/object, got {type(cfg).__name__}")
    if key not in cfg:
        raise ValueError(
            f"config field `{where}.{key}` is missing"
            if where
            else f"config field `{key}` is missing"
        )
    return cfg[key]


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _int(value, field: str, minimum: int, maximum: int | None = None) -> int:
    """`value` as an integer in `[minimum, maximum)`; a bool is not an integer."""
    what = (
        f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum})"
    )
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (maximum is not None and value >= maximum)
    ):
        raise ValueError(f"config field `{field}` must be {what}, got {value!r}")
    return int(value)


def _number(value, field: str, what: str = "a finite number") -> float:
    """`value` as a finite float; bools and strings are not numbers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"config field `{field}` must be {what}, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"config field `{field}` must be {what}, got {value!r}")
    return v


def _has_bool(raw) -> bool:
    if isinstance(raw, (bool, np.bool_)):
        return True
    return isinstance(raw, (list, tuple)) and any(_has_bool(r) for r in raw)


def _array(cfg: dict, key: str, where: str, ndim: int) -> np.ndarray:
    raw = _need(cfg, key, where)
    if _has_bool(raw):
        raise ValueError(
            f"config field `{where}.{key}` must be numeric (booleans are not numbers), got {raw!r}"
        )
    try:
        a = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config field `{where}.{key}` must be numeric, got {raw!r}") from e
    if a.ndim != ndim:
        raise ValueError(
            f"config field `{where}.{key}` must be a {ndim}-D array, got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"config field `{where}.{key}` must be finite")
    return a


def _build(kind_map: dict, cfg: dict, where: str, **kw):
    kind = _need(cfg, "type", where)
    if not isinstance(kind, str) or kind not in kind_map:
        raise ValueError(
            f"config field `{where}.type` must be one of {sorted(kind_map)}, got {kind!r}"
        )
    try:
        return kind_map[kind](cfg, where, **kw)
    except ValueError as e:
        msg = str(e)
        if "config field" in msg:
            raise
        raise ValueError(f"config field `{where}`: {msg}") from e


def _activation(cfg, where):
    name = cfg.get("activation", "tanh")
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(
            f"config field `{where}.activation` must be one of {sorted(_ACTIVATIONS)}, got {name!r}"
        )
    return _ACTIVATIONS[name]


def _init(raw, where: str) -> tuple[int, float]:
    """`(seed, scale)` of an `init` table `{"seed": int, "scale": float > 0}`."""
    if not isinstance(raw, dict):
        raise ValueError(
            f'config field `{where}` must be a table {{"seed": int, "scale": float > 0}}, '
            f"got {raw!r}"
        )
    extra = sorted(set(raw) - {"seed", "scale"})
    if extra:
        raise ValueError(
            f"config field `{where}.{extra[0]}` is not a known field (known: ['scale', 'seed'])"
        )
    seed = _int(_need(raw, "seed", where), f"{where}.seed", 0, 2**32)
    scale = _number(_need(raw, "scale", where), f"{where}.scale", "a finite number > 0")
    if not scale > 0:
        raise ValueError(f"config field `{where}.scale` must be a finite number > 0, got {scale!r}")
    return seed, scale


def _weights(c: dict, w: str, d: int, ranks: dict, shapes, mlp: bool) -> list:
    """The parameter arrays of a router/expert bank: read from `c`, or drawn by `c["init"]`.

    `ranks` maps each weight name to its rank (read path); `shapes(K, H, d)` maps
    each name to its shape (init path, module docstring).
    """
    if not mlp and "hidden" in c:
        raise ValueError(f"config field `{w}.hidden` is only used by `mlp` with `{w}.init`")
    if "init" not in c:
        for extra in ("K", "hidden"):
            if extra in c:
                raise ValueError(
                    f"config field `{w}.{extra}` is only used with `{w}.init` "
                    f"(random initialisation); with explicit weights the shapes give it"
                )
        return [_array(c, name, w, r) for name, r in ranks.items()]
    given = [name for name in ranks if name in c]
    if given:
        raise ValueError(
            f"config field `{w}.init` cannot be combined with explicit weights "
            f"({', '.join(f'`{w}.{g}`' for g in given)}): give either `init` or every weight"
        )
    seed, scale = _init(c["init"], f"{w}.init")
    K = _int(_need(c, "K", w), f"{w}.K", 2)
    H = _int(_need(c, "hidden", w), f"{w}.hidden", 1) if mlp else None
    shapes = list(shapes(K, H, d).values())
    sizes = [int(np.prod(shape)) for shape in shapes]
    z = np.asarray(jax.random.normal(jax.random.key(seed), (sum(sizes),), jnp.float32), float)
    parts = np.split(z, np.cumsum(sizes)[:-1])  # one draw, cut in the documented field order
    return [scale * part.reshape(shape) for part, shape in zip(parts, shapes)]


def _linear(cls, names: tuple[str, str]):
    """Builder of a linear router (`W`, `b`) or expert bank (`B`, `c`)."""

    def build(c, w, *, d):
        ranks = {names[0]: 2, names[1]: 1}
        return cls(
            *_weights(c, w, d, ranks, lambda K, H, d: {names[0]: (K, d), names[1]: (K,)}, False)
        )

    return build


def _mlp(cls, first_rank: int):
    """Builder of an MLP router (`first_rank = 2`) or expert bank (3, one MLP per expert)."""
    ranks = {"W1": first_rank, "b1": first_rank - 1, "W2": 2, "b2": 1}

    def shapes(K, H, d):
        if first_rank == 2:  # router: W1 [H, d], b1 [H], W2 [K, H], b2 [K]
            return {"W1": (H, d), "b1": (H,), "W2": (K, H), "b2": (K,)}
        return {"W1": (K, H, d), "b1": (K, H), "W2": (K, H), "b2": (K,)}

    def build(c, w, *, d):
        return cls(*_weights(c, w, d, ranks, shapes, True), activation=_activation(c, w))

    return build


_ROUTERS = {
    "linear": _linear(LinearRouter, ("W", "b")),
    "mlp": _mlp(MLPRouter, 2),
}
_EXPERTS = {
    "linear": _linear(LinearExperts, ("B", "c")),
    "mlp": _mlp(MLPExperts, 3),
}


def _standard(c, w):
    return StandardGaussian(_int(_need(c, "d", w), f"{w}.d", 1))


_LAWS = {
    "gaussian": lambda c, w: Gaussian(_array(c, "mean", w, 1), _array(c, "cov", w, 2)),
    "standard_gaussian": _standard,
    "uniform": lambda c, w: Uniform(_array(c, "low", w, 1), _array(c, "high", w, 1)),
    "gaussian_mixture": lambda c, w: GaussianMixture(
        _array(c, "weights", w, 1), _array(c, "means", w, 2), _array(c, "covs", w, 3)
    ),
}


def _noise(c, w) -> float:
    v = c.get("noise_std", 0.0)
    what = "a finite number >= 0"
    if _number(v, f"{w}.noise_std", what) < 0:
        raise ValueError(f"config field `{w}.noise_std` must be {what}, got {v!r}")
    return float(v)


def _taus(raw) -> np.ndarray:
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in ("geomspace", "linspace"):
            raise ValueError(
                'config field `taus` must be a list or {"geomspace"|"linspace": [lo, hi, T]}'
            )
        kind, spec = next(iter(raw.items()))
        positive = kind == "geomspace"  # a geometric grid needs 0 < lo, hi
        form = (
            "[lo, hi, T] with finite lo, hi > 0 and integer T >= 1"
            if positive
            else "[lo, hi, T] with finite lo, hi and integer T >= 1"
        )
        if not (isinstance(spec, list) and len(spec) == 3):
            raise ValueError(f"config field `taus.{kind}` must be {form}, got {spec!r}")
        lo, hi = (_number(v, f"taus.{kind}", form) for v in spec[:2])
        if positive and not (lo > 0 and hi > 0):
            raise ValueError(f"config field `taus.{kind}` must be {form}, got {spec!r}")
        T = spec[2]
        if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"config field `taus.{kind}` must be {form}, got {spec!r}")
        taus = getattr(np, kind)(lo, hi, int(T))
    else:
        if _has_bool(raw):
            raise ValueError(
                f"config field `taus` must hold numbers (booleans are not numbers), got {raw!r}"
            )
        try:
            taus = np.asarray(raw, dtype=float)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config field `taus` must be numeric, got {raw!r}") from e
    if taus.ndim != 1 or taus.size == 0 or not np.all(np.isfinite(taus)) or np.any(taus <= 0):
        raise ValueError(
            f"config field `taus` must hold one or more finite temperatures > 0, got {taus}"
        )
    # the sweep runs in the default float dtype: a τ that rounds to 0 or a
    # subnormal there is not a temperature it can represent
    dtype = np.dtype(jnp.result_type(float))
    tiny = np.finfo(dtype).tiny
    if np.any(taus < tiny) or np.any(taus > np.finfo(dtype).max):
        raise ValueError(
            f"config field `taus` must hold temperatures in [{tiny:.3g}, "
            f"{np.finfo(dtype).max:.3g}] (the normal range of {dtype.name}), got {taus}"
        )
    return taus


def _output_shape(fn, x0, field: str) -> tuple:
    """`fn(x0)`'s shape, or a config error naming `field` when `fn` rejects `x0: [d]`."""
    try:
        return jax.eval_shape(fn, x0).shape
    except Exception as e:  # any shape error is a config error
        raise ValueError(
            f"config field `{field}` does not accept inputs of dimension {x0.shape[0]} "
            f"(law.dim): {e}"
        ) from e


def parse_config(cfg: dict) -> SweepConfig:
    """Validate a config mapping and build the objects it describes."""
    if not isinstance(cfg, dict):
        raise ValueError("a sweep config must be a JSON object / TOML table at the top level")
    known = {"router", "experts", "law", "target", "taus", "n", "seed"}
    extra = sorted(set(cfg) - known)
    if extra:
        raise ValueError(f"config field `{extra[0]}` is not a known field (known: {sorted(known)})")
    law = _build(_LAWS, _need(cfg, "law", ""), "law")
    router = _build(_ROUTERS, _need(cfg, "router", ""), "router", d=law.dim)
    experts = _build(_EXPERTS, _need(cfg, "experts", ""), "experts", d=law.dim)
    x0 = jnp.zeros(law.dim)
    K_r = _output_shape(router, x0, "router")
    K_e = _output_shape(experts, x0, "experts")
    if K_r != K_e:
        raise ValueError(
            f"config field `experts` has {K_e[0]} experts but `router` has {K_r[0]} logits"
        )
    tcfg = cfg.get("target", {"type": "self"})
    ttype = _need(tcfg, "type", "target")
    if ttype == "self":
        target = Teacher(router, experts, _noise(tcfg, "target"))
    elif ttype == "teacher":
        tr = _build(_ROUTERS, _need(tcfg, "router", "target"), "target.router", d=law.dim)
        te = _build(_EXPERTS, _need(tcfg, "experts", "target"), "target.experts", d=law.dim)
        Kt_r = _output_shape(tr, x0, "target.router")
        Kt_e = _output_shape(te, x0, "target.experts")
        if Kt_r != Kt_e:
            raise ValueError(
                f"config field `target.experts` has {Kt_e[0]} experts but `target.router` has "
                f"{Kt_r[0]} logits"
            )
        target = Teacher(tr, te, _noise(tcfg, "target"))
    elif ttype == "linear":
        w = _array(tcfg, "w", "target", 1)
        if w.shape != (law.dim,):
            raise ValueError(f"config field `target.w` must have length {law.dim}, got {w.shape}")
        c = _number(tcfg.get("c", 0.0), "target.c")
        target = LinearTarget(w, c, _noise(tcfg, "target"))
    else:
        raise ValueError(
            "config field `target.type` must be one of ['linear', 'self', 'teacher'], "
            f"got {ttype!r}"
        )
    taus = _taus(_need(cfg, "taus", ""))
    n = _int(cfg.get("n", 2**18), "n", 2)
    seed = _int(cfg.get("seed", 0), "seed", 0, 2**32)
    return SweepConfig(MoE(router, experts), target, law, taus, n, seed)


_FORMATS = {".json": "JSON", ".toml": "TOML"}

#: the largest config file `load_config` reads (a config of a K = 64, d = 4096
#: linear router written out in JSON is about 8 MB)
MAX_CONFIG_BYTES = 64 * 2**20


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read a `.json` or `.toml` sweep config and validate it (see the module docstring).

    The format follows the suffix: `.json` is JSON, `.toml` is TOML; any other
    suffix (`.yaml`, `.yml`, none) is a `ValueError` naming the supported formats.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"config file {path!r} has unsupported suffix {suffix or '(none)'!r}: "
            "supported formats are JSON (.json) and TOML (.toml)"
        )
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} is not a regular file")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"config file {path!r} holds {size} bytes; a sweep config is at most "
            f"{MAX_CONFIG_BYTES} bytes (weights that large belong in a model file, not a config)"
        )
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError as e:  # Python 3.10
            raise ValueError("TOML configs need Python >= 3.11 (tomllib); use JSON") from e
        with open(path, "rb") as fh:
            try:
                cfg = tomllib.load(fh)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"config file {path!r} is not valid TOML: {e}") from e
    else:
        with open(path) as fh:
            try:
                cfg = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"config file {path!r} is not valid JSON: {e}") from e
    return parse_config(cfg)
