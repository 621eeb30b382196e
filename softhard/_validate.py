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
    return _check_temperature_values(taus, name)


def _check_temperature_values(t, name: str):
    """Every concrete entry of `t` is a finite temperature > 0."""
    if is_concrete(t):
        v = np.asarray(t)
        if not (np.all(v > 0) and np.all(np.isfinite(v))):
            raise ValueError(f"`{name}` must hold finite temperatures > 0, got {v}")
    return t


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


def check_kind(value, name: str, choices) -> str:
    """`value` must be one of `choices` (a string option such as `kind` or `which`)."""
    if value not in tuple(choices):
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {opts}, got {value!r}")
    return value


def float_dtype(*xs):
    """The floating dtype of `xs`; Python scalars stay weak (float32 arrays stay float32)."""
    return jnp.result_type(*xs, float)


def check_cov(cov, name: str = "cov"):
    """`cov` must be a finite symmetric positive-definite matrix `[d, d]`."""
    cov = jnp.asarray(cov)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a square covariance matrix [d, d], got shape {cov.shape}"
        )
    if is_concrete(cov):
        c = np.asarray(cov, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"`{name}` must be finite, got {c}")
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-12):
            raise ValueError(f"`{name}` must be symmetric, got {c}")
        if np.linalg.eigvalsh(c).min() <= 0:
            raise ValueError(f"`{name}` must be positive definite, got {c}")
    return cov


def check_vector(v, d: int, name: str, *, nonzero: bool = False):
    """`v` must be a finite vector `[d]` (and not all zero when `nonzero`)."""
    v = jnp.asarray(v)
    if v.shape != (d,):
        raise ValueError(f"`{name}` must have shape [d] = ({d},), got shape {v.shape}")
    if is_concrete(v):
        a = np.asarray(v)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite, got {a}")
        if nonzero and not np.any(a != 0):
            raise ValueError(f"`{name}` must be a non-zero vector, got {a}")
    return v


def check_square(M, name: str = "M"):
    """`M` must be a finite symmetric matrix `[d, d]`."""
    M = jnp.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
        raise ValueError(f"`{name}` must be a square symmetric matrix [d, d], got shape {M.shape}")
    if is_concrete(M):
        a = np.asarray(M, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite, got {a}")
        if not np.allclose(a, a.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(a).max())):
            raise ValueError(f"`{name}` must be symmetric, got {a}")
    return M


def _check_scalar(x, name: str, *, strict: bool):
    """`x` must be a finite scalar `> 0` (`strict`) or `>= 0` (checked when concrete)."""
    what = "> 0" if strict else ">= 0"
    if jnp.shape(x) != ():
        raise ValueError(f"`{name}` must be a scalar {what}, got shape {jnp.shape(x)}")
    if is_concrete(x):
        v = float(np.asarray(x))
        if not ((v > 0 if strict else v >= 0) and np.isfinite(v)):
            raise ValueError(f"`{name}` must be a finite number {what}, got {v!r}")
    return x


def check_positive(x, name: str):
    """`x` must be a finite scalar > 0 (checked when concrete)."""
    return _check_scalar(x, name, strict=True)


def check_nonnegative(x, name: str):
    """`x` must be a finite scalar >= 0 (checked when concrete)."""
    return _check_scalar(x, name, strict=False)


def check_count(n, name: str, minimum: int = 1) -> int:
    """`n` must be a Python/NumPy integer (not a bool) >= `minimum`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {n!r}")
    return int(n)


def check_key(key, name: str = "key"):
    """`key` must be given: a `jax.random` key (no default key is ever used)."""
    if key is None:
        raise ValueError(f"`{name}` must be a jax.random key (no default key is used)")
    return key


def check_tau_grid(tau, name: str = "tau"):
    """`tau` must be a scalar or a 1-D array `[T]` of finite temperatures > 0."""
    tau = jnp.asarray(tau)
    if tau.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array [T], got shape {tau.shape}")
    return _check_temperature_values(tau, name)


def check_k(k, K: int | None = None, name: str = "k", *, allow_all: bool = False) -> int:
    """`k` must be an integer (not a bool) with `1 <= k < K` (`<= K` with `allow_all`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"`{name}` must be an integer >= 1 (experts per input), got {k!r}")
    if K is not None and not (int(k) <= K if allow_all else int(k) < K):
        bound = f"<= K = {K}" if allow_all else f"< K = {K}"
        raise ValueError(f"`{name}` must be {bound} for logits with K = {K} experts, got {k!r}")
    return int(k)
