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

__all__ = [
    "Estimate",
    "stream_moments",
    "sharded_stream_moments",
    "sample_axis_sharding",
    "moments_to_estimate",
    "DEFAULT_CHUNK_ELEMENTS",
]

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


def _stream_local_moments(fn: Callable, arrays: tuple, chunk: int):
    """Merged `_Moments` of `fn` over `arrays`, chunk by chunk (one device)."""
    N = arrays[0].shape[0]
    chunk = min(int(chunk), N)
    n_full, rem = divmod(N, chunk)

    def moments_of(chunk_arrays):
        return jax.tree.map(_chunk_moments, fn(*chunk_arrays))

    def slice_chunk(i):
        return tuple(jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk, axis=0) for a in arrays)

    acc = moments_of(slice_chunk(0))

    def body(i, acc):
        return jax.tree.map(_merge, acc, moments_of(slice_chunk(i)), is_leaf=_is_moments)

    acc = jax.lax.fori_loop(1, n_full, body, acc)
    if rem:
        tail = tuple(a[n_full * chunk :] for a in arrays)
        acc = jax.tree.map(_merge, acc, moments_of(tail), is_leaf=_is_moments)
    return acc


def sample_axis_sharding(x):
    """`(mesh, axis_names)` if `x` is a concrete array sharded over devices along axis 0.

    Returns None for single-device arrays, tracers, and NumPy arrays.
    """
    sharding = getattr(x, "sharding", None)
    if sharding is None or not hasattr(sharding, "mesh") or len(sharding.device_set) < 2:
        return None
    spec = sharding.spec
    if len(spec) == 0 or spec[0] is None:
        return None
    if any(s is not None for s in spec[1:]):
        raise ValueError(
            f"only the sample axis (axis 0) of `x` may be sharded, got PartitionSpec {spec}"
        )
    names = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return sharding.mesh, names


def sharded_stream_moments(fn: Callable, arrays: tuple, chunk: int, mesh, axis_names):
    """`stream_moments` with the sample axis sharded over `mesh` axes `axis_names`.

    Each device streams over its own shard (`jax.shard_map`); the per-device
    moments are all-gathered and merged, so every device holds the result.
    Equal to the single-device path up to floating-point reduction order. The
    same code runs on many hosts under `jax.distributed` with global arrays.
    """
    from jax.sharding import PartitionSpec as P

    names = tuple(axis_names)
    spec = P(names if len(names) > 1 else names[0])

    def local(*arrs):
        m = _stream_local_moments(fn, arrs, chunk)
        gathered = jax.tree.map(
            lambda a: jax.lax.all_gather(a, names, tiled=False), m, is_leaf=None
        )

        def fold(g: _Moments) -> _Moments:
            acc = jax.tree.map(lambda a: a[0], g)
            for i in range(1, g.n.shape[0]):
                acc = _merge(acc, jax.tree.map(lambda a, i=i: a[i], g))
            return acc

        return jax.tree.map(fold, gathered, is_leaf=_is_moments)

    out = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=tuple(spec for _ in arrays),
        out_specs=P(),
        check_vma=False,
    )(*arrays)
    return jax.tree.map(moments_to_estimate, out, is_leaf=_is_moments)


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
    acc = _stream_local_moments(fn, arrays, chunk)
    return jax.tree.map(moments_to_estimate, acc, is_leaf=_is_moments)


def _is_moments(x) -> bool:
    return isinstance(x, _Moments)
