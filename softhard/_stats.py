"""Estimates with standard errors, and streaming moments over sample chunks.

`Estimate(value, stderr)` is the result type of every population estimator.
`stream_moments` evaluates a per-sample function chunk by chunk inside one
`lax.fori_loop` and merges means and centred second moments with Chan et al.'s
pairwise update, so memory does not grow with `N` and the float32 path keeps
its accuracy over millions of samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Estimate",
    "stream_moments",
    "stream_chunks",
    "reduce_chunks",
    "to_estimates",
    "sample_axis_sharding",
    "moments_to_estimate",
    "mean_estimate",
    "binomial_estimate",
    "ratio_estimate",
    "scale_estimate",
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


def _chunk_moments(values: jax.Array, mask: jax.Array | None = None) -> _Moments:
    """Moments over the last (sample) axis of `values: [..., n]`; `mask: [n]` keeps some samples."""
    if mask is None:
        n = values.shape[-1]
        mean = jnp.mean(values, axis=-1)
        m2 = jnp.sum((values - mean[..., None]) ** 2, axis=-1)
        return _Moments(jnp.asarray(n, mean.dtype), mean, m2)
    m = jnp.broadcast_to(mask.astype(values.dtype), values.shape)
    cnt = jnp.sum(mask.astype(values.dtype))
    mean = jnp.sum(values * m, axis=-1) / jnp.maximum(cnt, 1)
    m2 = jnp.sum(((values - mean[..., None]) * m) ** 2, axis=-1)
    return _Moments(cnt, mean, m2)


def _merge(a: _Moments, b: _Moments) -> _Moments:
    """Chan et al.'s pairwise update of two sets of moments."""
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


# ----------------------------------------------------------------------------
# the Estimate builders: every estimator's standard error comes from one of these
# ----------------------------------------------------------------------------


def mean_estimate(values: jax.Array, axis: int = 0) -> Estimate:
    """Sample mean along `axis` with standard error `s / sqrt(n)` (`s` with ddof 1).

    With one sample the standard error is 0 (nothing to estimate it from).
    """
    values = jnp.asarray(values)
    n = values.shape[axis]
    mean = jnp.mean(values, axis=axis)
    if n < 2:
        return Estimate(mean, jnp.zeros_like(mean))
    return Estimate(mean, jnp.std(values, axis=axis, ddof=1) / math.sqrt(n))


def binomial_estimate(p: jax.Array, n) -> Estimate:
    """A proportion `p` of `n` Bernoulli trials, with stderr `sqrt(p (1 − p) / n)`."""
    p = jnp.asarray(p)
    return Estimate(p, jnp.sqrt(jnp.clip(p * (1.0 - p), 0.0) / n))


def ratio_estimate(num: Estimate, den: Estimate, cov=0.0) -> Estimate:
    """`num / den` by the delta method: `se² = (se_n² + r² se_d² − 2 r cov) / den²`.

    `cov` is the covariance of the two estimates (0 for independent ones).
    """
    r = num.value / den.value
    var = num.stderr**2 + r**2 * den.stderr**2 - 2.0 * r * cov
    return Estimate(r, jnp.sqrt(jnp.clip(var, 0.0)) / jnp.abs(den.value))


def scale_estimate(e: Estimate, c) -> Estimate:
    """`c · e` for a constant `c`."""
    return Estimate(c * e.value, jnp.abs(c) * e.stderr)


def chunk_size_for(n: int, per_sample_elements: int, chunk_size: int | None = None) -> int:
    """A chunk length that keeps `chunk × per_sample_elements` near the working-set target."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}")
        return min(int(chunk_size), n)
    c = max(256, DEFAULT_CHUNK_ELEMENTS // max(1, per_sample_elements))
    return min(c, n)


def reduce_chunks(chunk_fn: Callable, n: int, chunk: int, *, clamp: bool = False):
    """Merged `_Moments` of `chunk_fn(i, start)` over the chunks `i = 0 … ⌈n/chunk⌉ − 1`.

    The one streaming reducer. `chunk_fn(i, start)` returns a pytree of
    per-sample values whose last axis holds the `chunk` samples from `start`.
    Chunk `i` starts at `i · chunk`, or with `clamp` at `min(i · chunk, n − chunk)`
    so that a ragged last chunk re-reads the end of the sample instead of
    running past it (no padded copy of the inputs); either way the samples not
    new to chunk `i` are masked out of its moments. `chunk_fn` is traced once
    (inside a `lax.fori_loop` whose state is shaped by `jax.eval_shape`), so
    compile time does not grow with the number of chunks or a ragged tail.
    """
    n, chunk = int(n), int(min(chunk, n))
    n_chunks = -(-n // chunk)
    last = n_chunks - 1
    tail = n - last * chunk  # rows of the last chunk that are new to it, 1 … chunk
    # masks from the static tail length (not from absolute positions): row
    # indices past 2^31 do not fit the int32 of a default-precision trace
    ragged = tail != chunk

    def moments(i):
        if clamp:
            start = jnp.where(i < last, i * chunk, n - chunk)
        else:
            start = i * chunk
        mask = None
        if ragged:
            pos = jnp.arange(chunk)
            new = pos >= chunk - tail if clamp else pos < tail
            mask = (i < last) | new
        return jax.tree.map(lambda v: _chunk_moments(v, mask), chunk_fn(i, start))

    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(moments, 0))

    def body(i, acc):
        return jax.tree.map(_merge, acc, moments(i), is_leaf=_is_moments)

    return jax.lax.fori_loop(0, n_chunks, body, init)


def _stream_local_moments(fn: Callable, arrays: tuple, chunk: int):
    """Merged `_Moments` of `fn` over `arrays`, chunk by chunk (one device)."""
    n = arrays[0].shape[0]
    chunk = int(min(chunk, n))

    def chunk_fn(i, start):
        return fn(*(jax.lax.dynamic_slice_in_dim(a, start, chunk, axis=0) for a in arrays))

    return reduce_chunks(chunk_fn, n, chunk, clamp=True)


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


def _sharded_moments(fn: Callable, arrays: tuple, chunk: int, mesh, axis_names):
    """`_stream_local_moments` with the sample axis sharded over `mesh` axes `axis_names`.

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
        gathered = jax.tree.map(lambda a: jax.lax.all_gather(a, names, tiled=False), m)

        def fold(g: _Moments) -> _Moments:
            acc = jax.tree.map(lambda a: a[0], g)
            for i in range(1, g.n.shape[0]):
                acc = _merge(acc, jax.tree.map(lambda a, i=i: a[i], g))
            return acc

        return jax.tree.map(fold, gathered, is_leaf=_is_moments)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=tuple(spec for _ in arrays),
        out_specs=P(),
        check_vma=False,
    )(*arrays)


def stream_moments(fn: Callable, arrays: tuple, chunk: int, *, mesh=None, axis_names=None):
    """Means and standard errors of per-sample values, streamed over chunks.

    Args:
        fn: `fn(*chunk_arrays) -> pytree` of arrays whose *last* axis is the
            sample axis of the chunk (e.g. `[n]` or `[T, n]`).
        arrays: tuple of arrays sharing the leading sample axis `N`.
        chunk: chunk length (static).
        mesh, axis_names: when given, the sample axis is sharded over these
            mesh axes (see `sample_axis_sharding`); each device streams its shard.

    Returns:
        a pytree like `fn`'s output with `Estimate(value, stderr)` leaves
        (sample axis reduced).
    """
    if mesh is None:
        acc = _stream_local_moments(fn, arrays, chunk)
    else:
        acc = _sharded_moments(fn, arrays, chunk, mesh, axis_names)
    return to_estimates(acc)


def stream_chunks(chunk_fn: Callable, n: int, chunk: int):
    """`stream_moments` for values generated per chunk: `chunk_fn(i) -> pytree [..., chunk]`.

    Used where the sample itself is drawn inside the loop (chunk `i` from
    `fold_in(key, i)`), so no `[N, d]` array exists; samples past `n` are masked.
    """
    return to_estimates(reduce_chunks(lambda i, start: chunk_fn(i), n, chunk))


def to_estimates(tree):
    """Replace every `_Moments` leaf of `tree` by its `Estimate`."""
    return jax.tree.map(moments_to_estimate, tree, is_leaf=_is_moments)


def _is_moments(x) -> bool:
    return isinstance(x, _Moments)
