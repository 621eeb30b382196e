"""Estimates with standard errors, and streaming moments over sample chunks.

`Estimate(value, stderr)` is the result type of every population estimator.
`stream_moments` evaluates a per-sample function chunk by chunk inside one
`lax.fori_loop` and merges means and centred second moments with Chan et al.'s
pairwise update, so memory does not grow with `N` and the float32 path keeps
its accuracy over millions of samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Estimate", "stream_moments", "moments_to_estimate", "DEFAULT_CHUNK_ELEMENTS"]

#: working-set target per chunk (elements of the largest per-chunk intermediate)
DEFAULT_CHUNK_ELEMENTS = 1 << 21


class Estimate(NamedTuple):
    """A Monte Carlo estimate of a population quantity.

    Attributes:
        value: the estimate; scalar or any shape (e.g. `[T]` over temperatures).
        stderr: its standard error, same shape as `value`.
    """

    value: jax.Array  # [...]
    stderr: jax.Array  # [...], same shape as value


class _Moments(NamedTuple):
    n: jax.Array  # scalar count
    mean: jax.Array  # [...]
    m2: jax.Array  # [...] sum of squared deviations


def _chunk_moments(values: jax.Array) -> _Moments:
    # values: [..., n] -> moments over the last (sample) axis
    n = values.shape[-1]
    mean = jnp.mean(values, axis=-1)
    m2 = jnp.sum((values - mean[..., None]) ** 2, axis=-1)
    return _Moments(jnp.asarray(n, mean.dtype), mean, m2)


def _merge(a: _Moments, b: _Moments) -> _Moments:
    n = a.n + b.n
    delta = b.mean - a.mean
    frac = b.n / jnp.maximum(n, 1)
    mean = a.mean + delta * frac
    m2 = a.m2 + b.m2 + delta**2 * a.n * frac
    return _Moments(n, mean, m2)


def moments_to_estimate(m: _Moments) -> Estimate:
    """Mean and standard error `sqrt(s² / n)` from merged moments."""
    var = m.m2 / jnp.maximum(m.n - 1, 1)
    return Estimate(m.mean, jnp.sqrt(var / m.n))


def chunk_size_for(n: int, per_sample_elements: int, chunk_size: int | None = None) -> int:
    """A chunk length that keeps `chunk × per_sample_elements` near the working-set target."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}")
        return min(int(chunk_size), n)
    c = max(256, DEFAULT_CHUNK_ELEMENTS // max(1, per_sample_elements))
    return min(c, n)


def stream_moments(fn: Callable, arrays: tuple, chunk: int):
    """Means and standard errors of per-sample values, streamed over chunks.

    Args:
        fn: `fn(*chunk_arrays) -> pytree` of arrays whose *last* axis is the
            sample axis of the chunk (e.g. `[n]` or `[T, n]`).
        arrays: tuple of arrays sharing the leading sample axis `N`.
        chunk: chunk length (static).

    Returns:
        a pytree like `fn`'s output with `Estimate(value, stderr)` leaves
        (sample axis reduced).
    """
    N = arrays[0].shape[0]
    chunk = min(int(chunk), N)
    n_full, rem = divmod(N, chunk)

    def moments_of(chunk_arrays):
        out = fn(*chunk_arrays)
        return jax.tree.map(_chunk_moments, out)

    def slice_chunk(i):
        return tuple(jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk, axis=0) for a in arrays)

    first = moments_of(slice_chunk(0))

    def body(i, acc):
        return jax.tree.map(_merge, acc, moments_of(slice_chunk(i)), is_leaf=_is_moments)

    acc = jax.lax.fori_loop(1, n_full, body, first)
    if rem:
        tail = tuple(a[n_full * chunk :] for a in arrays)
        acc = jax.tree.map(_merge, acc, moments_of(tail), is_leaf=_is_moments)
    return jax.tree.map(moments_to_estimate, acc, is_leaf=_is_moments)


def _is_moments(x) -> bool:
    return isinstance(x, _Moments)
