"""Checks at the public boundary, done in Python before tracing.

Every check is skipped for traced values (inside `jit`/`vmap`/`grad`), where
shapes are still checked but values cannot be; a `ValueError` always names the
argument and the expected form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values we can inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_tau(tau, name: str = "tau"):
    """`tau` must be a real scalar > 0 (checked when concrete)."""
    shape = jnp.shape(tau)
    if shape != ():
        raise ValueError(f"`{name}` must be a scalar temperature, got shape {shape}")
    if is_concrete(tau):
        t = float(np.asarray(tau))
        if not t > 0 or not np.isfinite(t):
            raise ValueError(f"`{name}` must be a finite temperature > 0, got {t!r}")
    return tau


def check_taus(taus, name: str = "taus"):
    """`taus` must be a 1-D array `[T]` of temperatures > 0."""
    taus = jnp.asarray(taus)
    if taus.ndim != 1 or taus.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array [T], got shape {taus.shape}")
    if is_concrete(taus):
        t = np.asarray(taus)
        if not (np.all(t > 0) and np.all(np.isfinite(t))):
            raise ValueError(f"`{name}` must hold finite temperatures > 0, got {t}")
    return taus


def check_logits(logits, name: str = "logits"):
    """`logits` must be `[N, K]` with K >= 2."""
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, K], got shape {logits.shape}")
    if logits.shape[1] < 2:
        raise ValueError(f"`{name}` needs K >= 2 experts, got shape {logits.shape}")
    return logits


def check_x(x, name: str = "x"):
    """`x` must be a 2-D batch `[N, d]` of inputs."""
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, d], got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one sample, got shape {x.shape}")
    return x


def check_xy(x, y):
    """`x: [N, d]` and `y: [N]` with matching N."""
    x = check_x(x)
    y = jnp.asarray(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"`y` must have shape [N] = ({x.shape[0]},) to match `x`, got {y.shape}")
    return x, y


def check_finite_params(tree, name: str) -> None:
    """Raise if any concrete floating leaf of `tree` holds NaN or inf."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in leaves:
        if not hasattr(leaf, "dtype") or not is_concrete(leaf):
            continue
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        if not bool(np.all(np.isfinite(np.asarray(leaf)))):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"`{name}` has NaN or inf in parameter `{name}{where}`")


def check_width(w, name: str = "w"):
    """Widths must be >= 0: a scalar or a 1-D array `[W]`."""
    w = jnp.asarray(w)
    if w.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array [W], got shape {w.shape}")
    if is_concrete(w) and not bool(np.all(np.asarray(w) >= 0)):
        raise ValueError(f"`{name}` must be >= 0, got {np.asarray(w)}")
    return w


def check_delta(delta, name: str = "delta"):
    """`0 < delta < 1/2`."""
    if jnp.shape(delta) != ():
        raise ValueError(f"`{name}` must be a scalar in (0, 1/2), got shape {jnp.shape(delta)}")
    if is_concrete(delta):
        d = float(np.asarray(delta))
        if not 0.0 < d < 0.5:
            raise ValueError(f"`{name}` must lie in (0, 1/2), got {d!r}")
    return delta
