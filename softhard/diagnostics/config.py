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

Routers: `linear` (W, b), `mlp` (W1, b1, W2, b2, activation). Experts:
`linear` (B, c), `mlp` (W1, b1, W2, b2, activation). Laws: `gaussian` (mean,
cov), `standard_gaussian` (d), `uniform` (low, high), `gaussian_mixture`
(weights, means, covs). Targets: `self` (the hard predictor of the model's own
router and experts, noise_std), `teacher` (router, experts, noise_std),
`linear` (w, c, noise_std). `taus` is a list or `{"geomspace"|"linspace": [lo,
hi, T]}`. Every problem is reported as a `ValueError` naming the field.
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


def _array(cfg: dict, key: str, where: str, ndim: int) -> np.ndarray:
    raw = _need(cfg, key, where)
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


def _build(kind_map: dict, cfg: dict, where: str):
    kind = _need(cfg, "type", where)
    if kind not in kind_map:
        raise ValueError(
            f"config field `{where}.type` must be one of {sorted(kind_map)}, got {kind!r}"
        )
    try:
        return kind_map[kind](cfg, where)
    except ValueError as e:
        msg = str(e)
        if "config field" in msg:
            raise
        raise ValueError(f"config field `{where}`: {msg}") from e


def _activation(cfg, where):
    name = cfg.get("activation", "tanh")
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"config field `{where}.activation` must be one of {sorted(_ACTIVATIONS)}, got {name!r}"
        )
    return _ACTIVATIONS[name]


def _mlp(cls, first_rank: int):
    """Builder of an MLP router (`first_rank = 2`) or expert bank (3, one MLP per expert)."""

    def build(c, w):
        return cls(
            _array(c, "W1", w, first_rank),
            _array(c, "b1", w, first_rank - 1),
            _array(c, "W2", w, 2),
            _array(c, "b2", w, 1),
            activation=_activation(c, w),
        )

    return build


_ROUTERS = {
    "linear": lambda c, w: LinearRouter(_array(c, "W", w, 2), _array(c, "b", w, 1)),
    "mlp": _mlp(MLPRouter, 2),
}
_EXPERTS = {
    "linear": lambda c, w: LinearExperts(_array(c, "B", w, 2), _array(c, "c", w, 1)),
    "mlp": _mlp(MLPExperts, 3),
}


def _standard(c, w):
    d = _need(c, "d", w)
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"config field `{w}.d` must be a positive integer, got {d!r}")
    return StandardGaussian(d)


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
    if not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"config field `{w}.noise_std` must be a number >= 0, got {v!r}")
    return float(v)


def _taus(raw) -> np.ndarray:
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in ("geomspace", "linspace"):
            raise ValueError(
                'config field `taus` must be a list or {"geomspace"|"linspace": [lo, hi, T]}'
            )
        kind, spec = next(iter(raw.items()))
        if not (
            isinstance(spec, list) and len(spec) == 3 and isinstance(spec[2], int) and spec[2] >= 1
        ):
            raise ValueError(
                f"config field `taus.{kind}` must be [lo, hi, T] with integer T >= 1, got {spec!r}"
            )
        taus = getattr(np, kind)(float(spec[0]), float(spec[1]), spec[2])
    else:
        try:
            taus = np.asarray(raw, dtype=float)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config field `taus` must be numeric, got {raw!r}") from e
    if taus.ndim != 1 or taus.size == 0 or not np.all(np.isfinite(taus)) or np.any(taus <= 0):
        raise ValueError(
            f"config field `taus` must hold one or more finite temperatures > 0, got {taus}"
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
    router = _build(_ROUTERS, _need(cfg, "router", ""), "router")
    experts = _build(_EXPERTS, _need(cfg, "experts", ""), "experts")
    law = _build(_LAWS, _need(cfg, "law", ""), "law")
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
        tr = _build(_ROUTERS, _need(tcfg, "router", "target"), "target.router")
        te = _build(_EXPERTS, _need(tcfg, "experts", "target"), "target.experts")
        target = Teacher(tr, te, _noise(tcfg, "target"))
    elif ttype == "linear":
        w = _array(tcfg, "w", "target", 1)
        if w.shape != (law.dim,):
            raise ValueError(f"config field `target.w` must have length {law.dim}, got {w.shape}")
        target = LinearTarget(w, float(tcfg.get("c", 0.0)), _noise(tcfg, "target"))
    else:
        raise ValueError(
            "config field `target.type` must be one of ['linear', 'self', 'teacher'], "
            f"got {ttype!r}"
        )
    taus = _taus(_need(cfg, "taus", ""))
    n = cfg.get("n", 2**18)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"config field `n` must be an integer >= 2, got {n!r}")
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError(f"config field `seed` must be an integer, got {seed!r}")
    return SweepConfig(MoE(router, experts), target, law, taus, n, seed)


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read a `.json` or `.toml` sweep config and validate it (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} does not exist")
    if path.endswith(".toml"):
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
            except json.JSONDecodeError as e:
                raise ValueError(f"config file {path!r} is not valid JSON: {e}") from e
    return parse_config(cfg)
