"""Hessians and their spectra: dense, Lanczos extremes, densities and traces (§5).

`hessian` (dense, forward-over-reverse), `hessian_blocks` (the router/expert
blocks of Assumption 5.13), `hvp`, `hessian_spectrum` (all eigenvalues by
`eigh`, or the `k` extreme ones by Lanczos with full reorthogonalisation from
`matfree`), `spectrum_sweep` (one call over a temperature grid),
`spectral_density` (stochastic Lanczos quadrature) and `hessian_trace`
(Hutch++, Hutchinson or XTrace) for models too large for dense work.

`hessian_spectrum`, `spectral_density` and `hessian_trace` take, besides a
loss function and its parameters, a `LinearOperator` (`hessian_operator`,
`linear_operator`) or a dense symmetric matrix as their first argument (then
`params` is omitted); all of them go through `as_operator`. Every one of them
is a pure function, so `jax.vmap` over a temperature composes with it.

Parameter vectors are raveled over the inexact-array leaves only
(`softhard._trees.ravel_arrays`, leaf order of `jax.tree_util.tree_leaves`):
Hessians are `[P, P]`, eigenvectors have `P` rows in that order.

Every routine that takes a loss function also takes a sample to stream,
`data=(x, y)` with `chunk_size` and an optional device `mesh`: the loss is
then a per-chunk mean `loss_fn(params, x_c, y_c)` and each Hessian-vector
product is streamed over chunks and shards (`hessian_operator`). Keyword
arguments a routine does not know are passed to the loss
(`hessian_spectrum(sh.soft_risk, model, k=10, data=(x, y), tau=0.1)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matfree import decomp, eig, stochtrace

from .. import _tables
from .._stats import Estimate, mean_estimate
from .._trees import is_inexact_array, partition
from .._validate import (
    as_real_array,
    check_count,
    check_key,
    check_kind,
    check_positive,
    check_taus,
    is_concrete,
)
from ._operator import LinearOperator, _with_gauge, as_operator, check_loss, hessian_operator

__all__ = [
    "Spectrum",
    "HessianBlocks",
    "SpectralDensity",
    "hvp",
    "hessian",
    "hessian_blocks",
    "hessian_spectrum",
    "spectrum_sweep",
    "spectral_density",
    "hessian_trace",
]

_WHICH = ("largest", "smallest", "both", "magnitude")


class Spectrum(NamedTuple):
    """Hessian eigenvalues, ascending, and optionally their eigenvectors.

    Attributes:
        eigenvalues: `[k]` (or `[P]`, or `[P − G]` gauge-fixed) ascending;
            `[T, k]` from `spectrum_sweep`.
        eigenvectors: `[P, k]` orthonormal columns in raveled parameter space
            (column `i` pairs with `eigenvalues[i]`), or `None` if not requested.
        residuals: `[k]` residual norms `‖H v_i − λ_i v_i‖` in the parameters'
            dtype where they were computed (`hessian_spectrum(...,
            matvec_dtype=...)`), else `None`. An eigenvalue of `H` lies within
            `residuals[i]` of `eigenvalues[i]`.
    """

    eigenvalues: jax.Array  # [k]
    eigenvectors: jax.Array | None  # [P, k] or None
    residuals: jax.Array | None = None  # [k] or None

    to_dict = _tables.to_dict
    __repr__ = _tables.table_repr


class HessianBlocks(NamedTuple):
    """The router (φ) / expert (θ) blocks of the Hessian (Assumption 5.13).

    Attributes:
        router_router: `[Pφ, Pφ]`, `∇²_φφ`.
        router_experts: `[Pφ, Pθ]`, `∇²_φθ`.
        experts_experts: `[Pθ, Pθ]`, `∇²_θθ`.
    """

    router_router: jax.Array  # [Pφ, Pφ]
    router_experts: jax.Array  # [Pφ, Pθ]
    experts_experts: jax.Array  # [Pθ, Pθ]


class SpectralDensity(NamedTuple):
    """A Gaussian-broadened spectral density by stochastic Lanczos quadrature.

    Attributes:
        grid: `[G]` evaluation points.
        density: `Estimate` `[G]` of `(1/P') Σ_i g_σ(t − λ_i)` (integrates to 1),
            `P'` the dimension (gauge-fixed when `gauge` is given).
        sigma: scalar broadening width.
    """

    grid: jax.Array  # [G]
    density: Estimate  # [G]
    sigma: jax.Array  # []


# ----------------------------------------------------------------------------
# Hessians and Hessian-vector products
# ----------------------------------------------------------------------------


def hvp(loss_fn: Callable, params, v, *, data=None, chunk_size=None, mesh=None, **loss_kwargs):
    """Hessian-vector product `∇²L(params) v` by forward-over-reverse autodiff.

    One product of the operator layer's linearised gradient (forward-over-reverse,
    about one gradient's cost, no Hessian materialised), on pytrees. For many
    products at one point build the operator once instead
    (`hessian_operator(loss_fn, params).matvec`, on raveled vectors).

    Args:
        loss_fn: `params -> scalar` (`(params, *chunk) -> scalar` with `data`).
        params: parameter pytree.
        v: tangent pytree with the structure and shapes of `params` (its
            non-array leaves are ignored).
        data, chunk_size, mesh, **loss_kwargs: as in `hessian_operator`.

    Returns:
        a pytree like `params`.

    >>> f = lambda p: jnp.sum(p**3)
    >>> hvp(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()
    [6.0, 0.0]
    """
    if jax.tree_util.tree_structure(v) != jax.tree_util.tree_structure(params):
        raise ValueError("`v` must have the pytree structure of `params`")
    pv, vv = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(v)
    for i, (p, t) in enumerate(zip(pv, vv)):
        if is_inexact_array(p) and jnp.shape(t) != jnp.shape(p):
            raise ValueError(
                f"`v` must have the shapes of `params`: leaf {i} has shape {jnp.shape(t)}, "
                f"expected {jnp.shape(p)}"
            )
    op = hessian_operator(
        loss_fn, params, data=data, chunk_size=chunk_size, mesh=mesh, **loss_kwargs
    )
    u = [jnp.ravel(jnp.asarray(t, op.dtype)) for p, t in zip(pv, vv) if is_inexact_array(p)]
    return op.unravel(op.matvec(jnp.concatenate(u)))


def hessian(
    loss_fn: Callable,
    params,
    *,
    batch_size: int | None = 64,
    data=None,
    chunk_size=None,
    mesh=None,
    **loss_kwargs,
) -> jax.Array:
    """Dense Hessian `∇²L` of a pytree function, `[P, P]`, symmetrised.

    `hessian_operator(loss_fn, params).dense(batch_size)`: the pytree is
    raveled (`ravel_arrays`), the gradient linearised once (`jax.linearize`)
    and the columns mapped in batches of `batch_size` tangents so memory stays
    `O(batch_size · N)` (`O(batch_size · chunk_size)` when streamed over `data`).

    Args:
        loss_fn: `params -> scalar` (e.g. `lambda m: soft_risk(m, x, y, tau)`).
        params: parameter pytree with `P` scalars in all.
        batch_size: tangents per batch (`None`: all at once, i.e. `jacfwd`).
        data, chunk_size, mesh, **loss_kwargs: as in `hessian_operator`.

    Returns:
        `[P, P]` symmetric matrix in raveled order.

    >>> hessian(lambda p: p[0] ** 2 * p[1], jnp.array([1.0, 3.0])).tolist()
    [[6.0, 2.0], [2.0, 0.0]]
    """
    if batch_size is not None:
        batch_size = check_count(batch_size, "batch_size")
    op = hessian_operator(
        loss_fn, params, data=data, chunk_size=chunk_size, mesh=mesh, **loss_kwargs
    )
    return op.dense(batch_size)


def _key_name(k):
    for attr in ("name", "key"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return None


def _block_index(params, names=("router", "experts")) -> dict:
    """Raveled indices of the parameters under each top-level field in `names`."""
    leaves = jax.tree_util.tree_flatten_with_path(partition(params)[0])[0]  # arrays only
    out = {n: [] for n in names}
    offset = 0
    for path, leaf in leaves:
        size = int(np.size(leaf))
        name = _key_name(path[0]) if path else None
        if name in out:
            out[name].extend(range(offset, offset + size))
        offset += size
    return {n: np.asarray(v, dtype=np.int32) for n, v in out.items()}


def hessian_blocks(loss_fn: Callable, params, *, batch_size: int | None = 64) -> HessianBlocks:
    """The router/expert blocks of the Hessian (Assumption 5.13).

    `params` is an MoE-like pytree with fields `router` (φ) and `experts` (θ)
    (e.g. `MoE`); the blocks are slices of `hessian(loss_fn, params)` at the
    raveled positions of each field's leaves.

    Args:
        loss_fn: `params -> scalar`.
        params: pytree with `.router` and `.experts` (attribute or dict key).
        batch_size: as in `hessian`.

    Returns:
        `HessianBlocks(router_router [Pφ,Pφ], router_experts [Pφ,Pθ], experts_experts [Pθ,Pθ])`.
    """
    idx = _block_index(params)
    if idx["router"].size == 0 or idx["experts"].size == 0:
        raise ValueError(
            "`params` must be a pytree with `router` and `experts` fields (e.g. an MoE), "
            f"got {type(params).__name__}"
        )
    H = hessian(loss_fn, params, batch_size=batch_size)
    r, e = idx["router"], idx["experts"]
    return HessianBlocks(H[np.ix_(r, r)], H[np.ix_(r, e)], H[np.ix_(e, e)])


# ----------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------


def _start_vector(P: int, dtype) -> jax.Array:
    # A deterministic, structure-free start vector: the Weyl sequence
    # frac(i (√5 − 1)/2) − 1/2, which has no symmetry under expert relabelling.
    i = np.arange(1, P + 1, dtype=np.float64)
    v = np.mod(i * (math.sqrt(5.0) - 1.0) / 2.0, 1.0) - 0.5
    return jnp.asarray(v / np.linalg.norm(v), dtype=dtype)


def _select_index(vals, k, which):
    """Indices (ascending) of the `k` extreme values of ascending `vals: [m]` (`2k` for "both")."""
    m = vals.shape[0]
    k = min(k, m)
    if which == "largest":
        return jnp.arange(m - k, m)
    if which == "smallest":
        return jnp.arange(k)
    if which == "both":
        if 2 * k >= m:
            return jnp.arange(m)
        return jnp.concatenate([jnp.arange(k), jnp.arange(m - k, m)])
    return jnp.sort(jnp.argsort(jnp.abs(vals))[m - k :])  # magnitude


def _select(vals, vecs, k, which):
    """Pick `k` extreme eigenpairs from ascending `vals: [m]`, `vecs: [P, m]`."""
    idx = _select_index(vals, k, which)
    return vals[idx], (None if vecs is None else vecs[:, idx])


def _in_dtype(op, dtype):
    """`(matvec, dtype)`: the operator's matvec on vectors of `dtype` (default: its own).

    The products stay in the operator's dtype; with another `dtype` (e.g. a
    float64 Lanczos basis for float32 parameters) the vectors are cast on the
    way in and out and projected in `dtype` as well.
    """
    if dtype is None or jnp.dtype(dtype) == jnp.dtype(op.dtype):
        return op.matvec, jnp.dtype(op.dtype)

    def matvec(u):
        return op.project(op.matvec(op.project(u).astype(op.dtype)).astype(dtype))

    return matvec, jnp.dtype(dtype)


def hessian_spectrum(
    loss_fn,
    params=None,
    k: int | None = None,
    *,
    which: str = "largest",
    eigenvectors: bool = False,
    gauge=None,
    num_matvecs: int | None = None,
    lanczos_dtype=None,
    matvec_dtype=None,
    tol: float = 1e-10,
    key: jax.Array | None = None,
    batch_size: int | None = 64,
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    **loss_kwargs,
) -> Spectrum:
    """Hessian eigenvalues, ascending: all of them (`eigh`) or `k` extreme ones (Lanczos).

    With `k=None` the dense Hessian (`LinearOperator.dense`) is diagonalised.
    With an integer `k`, `num_matvecs` Lanczos steps with full
    reorthogonalisation (`matfree.decomp.tridiag_sym(..., reortho="full")` and
    `matfree.eig.eigh_partial`) run on Hessian-vector products, and the Ritz
    values at the requested end are returned:

    * `which="largest"`: the `k` largest (algebraic) eigenvalues;
    * `"smallest"`: the `k` smallest (algebraic), e.g. `λ_min` at a saddle;
    * `"both"`: the `k` smallest and the `k` largest (`2k` values);
    * `"magnitude"`: the `k` of largest `|λ|` (what power iteration finds).

    Extreme Ritz values converge first: the default `max(80, 4k)` steps give
    the top ten eigenvalues of a `P = 528` MoE Hessian to `~1e-13`. When the
    steps would reach the dimension, the dense path is used instead.

    Mixed precision (`matvec_dtype=jnp.float32` for float64 parameters): the
    Lanczos steps run on products in `matvec_dtype` (a float32 product of the
    structured soft-risk Hessian costs 0.4–0.5 of a float64 one on a 2-core CPU), and their `2k`
    extreme Ritz vectors are refined by one Rayleigh–Ritz step on products in
    the parameters' dtype. Each returned eigenvalue is then within
    `residuals[i]` of an eigenvalue of `H`, and within the quadratic
    Rayleigh–Ritz bound `‖R_c‖²/gap` (`R_c` the residuals of its cluster of
    Ritz values, `gap` the distance to the other Ritz values less their
    residuals). When that bound exceeds `tol · max|λ|` for any of them, the
    full Lanczos in the parameters' dtype runs instead, so the answer always
    meets `tol` (or is the plain Lanczos one, with its residuals).

    `gauge` (`None`, `"auto"` = `gauge_directions(params)`, or an orthonormal
    `[P, G]` basis) restricts the Hessian to the orthogonal complement of the
    gauge directions, removing their exact zero eigenvalues.

    With `data=(x, y)` the loss is per chunk and every Hessian-vector product
    streams the sample (`hessian_operator`), so the top-`k` of a model on
    more samples than fit one linearisation, or sharded over a `mesh`:

        hessian_spectrum(sh.soft_risk, model, k=10, data=(x, y), tau=0.1)

    The function is pure and traceable: the spectra at `T` temperatures come
    from one `jax.vmap` (or `spectrum_sweep`):

        jax.vmap(lambda t: hessian_spectrum(
            lambda p: soft_risk(p, x, y, t), model, k=10).eigenvalues)(taus)  # [T, 10]

    Args:
        loss_fn: `params -> scalar`; or a `LinearOperator` or a symmetric
            `[P, P]` matrix, with `params` omitted (`None`).
        params: parameter pytree, `P` scalars (with a loss function).
        k: number of extreme eigenvalues, or `None` for all.
        which: `"largest"`, `"smallest"`, `"both"` or `"magnitude"` (with `k`).
        eigenvectors: also return the eigenvectors `[P, k]`.
        gauge: `None`, `"auto"` or a `[P, G]` basis to project out.
        num_matvecs: Lanczos steps (default `max(80, 4k)`).
        lanczos_dtype: dtype of the Lanczos basis and tridiagonal matrix, e.g.
            `jnp.float64` for float32 parameters (needs `jax_enable_x64`); the
            Hessian-vector products stay in the parameters' dtype.
        matvec_dtype: a lower-precision float dtype for the Lanczos products,
            refined as above (with `k`; a loss function and `params`, or a
            matrix). `None`, or a dtype no narrower than the parameters': plain Lanczos.
        tol: with `matvec_dtype`, the error bound each refined eigenvalue
            must meet, relative to the largest `|λ|` returned.
        key: optional PRNG key for a random start vector (default: a fixed,
            deterministic quasi-random vector, so results are reproducible).
        batch_size: tangents per batch of the dense Hessian.
        data: `None` or the sample `(x, y)` (any tuple of arrays `[N, ...]`)
            that a per-chunk `loss_fn(params, *chunk)` is averaged over.
        chunk_size: samples per chunk (per device with a mesh).
        mesh: `jax.sharding.Mesh` to shard the sample axis over.
        **loss_kwargs: passed to `loss_fn` (e.g. `tau=0.1` for `soft_risk`).

    Returns:
        `Spectrum(eigenvalues [k] / [2k] / [P'] ascending, eigenvectors [P, ·] or None,
        residuals [k] / [2k] with matvec_dtype, else None)`.

    >>> hessian_spectrum(jnp.array([[2.0, 1.0], [1.0, 2.0]])).eigenvalues.tolist()
    [1.0, 3.0]
    """
    if k is not None:
        k = check_count(k, "k")
    check_kind(which, "which", _WHICH)
    if num_matvecs is not None:
        num_matvecs = check_count(num_matvecs, "num_matvecs")
    if batch_size is not None:
        batch_size = check_count(batch_size, "batch_size")
    if lanczos_dtype is not None:
        lanczos_dtype = jnp.dtype(lanczos_dtype)
        if lanczos_dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("`lanczos_dtype=float64` needs jax_enable_x64")
    if matvec_dtype is not None:
        matvec_dtype = _check_matvec_dtype(matvec_dtype, loss_fn, params, k, lanczos_dtype)
        tol = check_positive(tol, "tol")
    op = as_operator(
        loss_fn,
        params,
        gauge=gauge,
        data=data,
        chunk_size=chunk_size,
        mesh=mesh,
        loss_kwargs=loss_kwargs,
    )
    if k is not None and k > op.free_size:
        raise ValueError(
            f"`k` must be <= the {op.free_size} dimensions of the (gauge-fixed) Hessian, got {k}"
        )
    m = None if k is None else min(op.free_size, num_matvecs or max(80, 4 * k))
    if k is None or m >= op.free_size:
        A, Q = op.restricted(batch_size)
        vals, vecs = jnp.linalg.eigh(A)
        if Q is not None:
            vecs = Q @ vecs
        if k is not None:
            vals, vecs = _select(vals, vecs, int(k), which)
        return Spectrum(vals, vecs if eigenvectors else None)
    if matvec_dtype is not None and matvec_dtype.itemsize < jnp.dtype(op.dtype).itemsize:
        low = _low_operator(loss_fn, params, op, matvec_dtype, data, chunk_size, mesh, loss_kwargs)
        return _refined_lanczos(op, low, int(k), which, eigenvectors, m, key, tol)
    return _lanczos(op, int(k), which, eigenvectors, m, lanczos_dtype, key)


def _lanczos(op, k, which, want_vecs, m, dtype, key):
    matvec, dtype = _in_dtype(op, dtype)
    if key is None:
        v0 = _start_vector(op.size, dtype)
    else:
        v0 = jax.random.normal(key, (op.size,), dtype)
    v0 = op.project(v0)
    v0 = v0 / jnp.linalg.norm(v0)
    tridiag = decomp.tridiag_sym(m, reortho="full", custom_vjp=False)
    vals, vecs = eig.eigh_partial(tridiag)(matvec, v0)  # [m], [m, P]
    vals, vecs = _select(vals, vecs.T, k, which)
    return Spectrum(vals, vecs if want_vecs else None)


def _check_matvec_dtype(dtype, loss_fn, params, k, lanczos_dtype):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`matvec_dtype` must be a float dtype, got {dtype}")
    if k is None:
        raise ValueError("`matvec_dtype` refines Lanczos eigenvalues: give `k`")
    if lanczos_dtype is not None:
        raise ValueError("give `matvec_dtype` or `lanczos_dtype`, not both")
    if isinstance(loss_fn, LinearOperator):
        raise ValueError(
            "`matvec_dtype` needs a loss function with `params`, or a matrix: a "
            "LinearOperator's products have one dtype"
        )
    return dtype


def _low_operator(loss_fn, params, op, dtype, data, chunk_size, mesh, loss_kwargs):
    """The Hessian operator of the same loss (or matrix) with every float array cast to `dtype`.

    `op`'s gauge basis (if any) is projected out, cast likewise.
    """

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if is_inexact_array(a) else a, tree)

    if params is None:  # a matrix
        low = as_operator(jnp.asarray(loss_fn).astype(dtype))
    else:
        low = as_operator(
            loss_fn,
            cast(params),
            data=None if data is None else cast(tuple(data)),
            chunk_size=chunk_size,
            mesh=mesh,
            loss_kwargs=cast(dict(loss_kwargs)),
        )
    G = None if op.gauge is None else op.gauge.astype(dtype)

    def matvec(u):
        # a loss that closes over a higher-precision array (`spectrum_sweep`'s τ)
        # promotes its products: cast back, so the Lanczos basis keeps `dtype`
        return low.matvec(u).astype(dtype)

    return _with_gauge(matvec, low.size, dtype, low.unravel, G)


def _ritz_bounds(theta, res, idx):
    """Error bounds `[m]` of Rayleigh–Ritz values `theta: [m]` with residual norms `res: [m]`.

    `min(res_i, ‖R_c‖_F² / gap_i)`: `c` the Ritz values within `2 max(res[idx])`
    of `theta_i` (its cluster), `gap_i` the distance to the others less their
    residuals (the quadratic residual bound of Rayleigh–Ritz).
    """
    rho = 2.0 * jnp.max(res[idx])
    diff = jnp.abs(theta[:, None] - theta[None, :])
    cluster = diff <= rho
    fro2 = jnp.sum(jnp.where(cluster, res[None, :] ** 2, 0.0), axis=1)
    gap = jnp.min(jnp.where(cluster, jnp.inf, diff - res[None, :]), axis=1)
    quad = jnp.where(gap > 0, fro2 / jnp.where(gap > 0, gap, 1.0), jnp.inf)
    return jnp.minimum(res, quad)


def _refined_lanczos(op, low, k, which, want_vecs, m, key, tol):
    """Lanczos on `low`'s products, one Rayleigh–Ritz step on `op`'s (`hessian_spectrum`)."""
    dtype = jnp.dtype(op.dtype)
    ldt = jnp.dtype(low.dtype)
    v0 = _start_vector(op.size, ldt) if key is None else jax.random.normal(key, (op.size,), ldt)
    v0 = low.project(v0)
    v0 = v0 / jnp.linalg.norm(v0)
    tridiag = decomp.tridiag_sym(m, reortho="full", custom_vjp=False)
    vals, vecs = eig.eigh_partial(tridiag)(low.matvec, v0)  # [m], [m, P]
    guard = min(2 * k, m // 2 if which == "both" else m)
    V = _select(vals, vecs.T, guard, which)[1].astype(dtype)  # [P, b]
    V = jnp.linalg.qr(op.project(V))[0]
    HV = op.apply(V)  # one pass over the sample where the operator has a matmat
    T = jnp.dot(V.T, HV, precision=jax.lax.Precision.HIGHEST)
    theta, S = jnp.linalg.eigh(0.5 * (T + T.T))
    Y = jnp.dot(V, S, precision=jax.lax.Precision.HIGHEST)
    R = jnp.dot(HV, S, precision=jax.lax.Precision.HIGHEST) - Y * theta[None, :]
    res = jnp.linalg.norm(R, axis=0)
    idx = _select_index(theta, k, which)
    bound = _ritz_bounds(theta, res, idx)[idx]
    ok = jnp.all(bound <= tol * jnp.max(jnp.abs(theta[idx])))

    def refined():
        return theta[idx], Y[:, idx], res[idx]

    def full():
        sp = _lanczos(op, k, which, True, m, None, key)
        r = op.apply(sp.eigenvectors) - sp.eigenvectors * sp.eigenvalues[None, :]
        return sp.eigenvalues, sp.eigenvectors, jnp.linalg.norm(r, axis=0)

    vals, vecs, res = jax.lax.cond(ok, refined, full)
    return Spectrum(vals, vecs if want_vecs else None, res)


def spectrum_sweep(loss_fn: Callable, params, taus: jax.Array, k: int | None = None, **kwargs):
    """Hessian spectra of `L_τ` at every temperature in one vectorised call.

    Args:
        loss_fn: `(params, tau) -> scalar`, e.g.
            `lambda m, t: soft_risk(m, x, y, t)`; with `data=(x, y)` a
            per-chunk `(params, x_c, y_c, tau) -> scalar`, e.g. `soft_risk`
            itself (the sample then streams, as in `hessian_operator`).
        params: parameter pytree (the same point at every temperature).
        taus: `[T]` temperatures `> 0`.
        k: as in `hessian_spectrum`; further keyword options (`data`,
            `chunk_size`, `mesh`, `which`, ...) are passed on, and unknown ones
            to `loss_fn`.

    Returns:
        `Spectrum` with `eigenvalues: [T, k]` (or `[T, P']`) and eigenvectors
        `[T, P, k]` when requested.
    """
    taus = check_taus(taus)
    if kwargs.get("data") is None:
        check_loss(lambda p: loss_fn(p, taus[0]), params)

    def one(t):
        def at_t(p, *chunk, **kw):
            return loss_fn(p, *chunk, t, **kw)

        return hessian_spectrum(at_t, params, k, **kwargs)

    return jax.vmap(one)(taus)


def spectral_density(
    loss_fn,
    params=None,
    *,
    key: jax.Array,
    grid: jax.Array | None = None,
    num_points: int = 200,
    sigma=None,
    num_matvecs: int = 40,
    num_probes: int = 16,
    gauge=None,
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    **loss_kwargs,
) -> SpectralDensity:
    """Hessian spectral density by stochastic Lanczos quadrature (SLQ).

    Estimates `ρ_σ(t) = (1/P') Σ_i g_σ(t − λ_i) = tr g_σ(t − H) / P'`, with
    `g_σ` the normal density of width `σ`, by Rademacher probes `v`:
    `vᵀ g_σ(t − H) v ≈ ‖v‖² e₁ᵀ g_σ(t − T_m) e₁` from `m` Lanczos steps
    (`matfree.decomp.tridiag_sym` with full reorthogonalisation, averaged by
    `matfree.stochtrace.estimator_monte_carlo_mean_and_sem`). The stated
    standard error is the probe-to-probe Monte Carlo error; the Lanczos
    quadrature error is negligible once `σ` exceeds the spacing of the Ritz
    values (`m` Lanczos steps integrate polynomials of degree `2m − 1` exactly).

    Args:
        loss_fn: `params -> scalar`; or a `LinearOperator` or a symmetric
            `[P, P]` matrix, with `params` omitted.
        params: parameter pytree (with a loss function).
        key: PRNG key for the probes.
        grid: `[G]` evaluation points (default: `num_points` points spanning
            the extreme eigenvalues ± 3σ, found by Lanczos).
        num_points: grid size when `grid` is None.
        sigma: broadening width `> 0` (default: 2% of the spectral range).
        num_matvecs: Lanczos steps per probe (an integer >= 1).
        num_probes: number of probes (an integer >= 1; with one probe the
            standard error is unknown and reported as inf).
        gauge: `None`, `"auto"` or a `[P, G]` basis to project out (probes
            are projected too, so the gauge zeros are excluded and `P' = P − G`).
        data, chunk_size, mesh, **loss_kwargs: the sample to stream and extra
            loss arguments, as in `hessian_spectrum`.

    Returns:
        `SpectralDensity(grid [G], density Estimate [G], sigma)`.
    """
    check_key(key)
    num_matvecs = check_count(num_matvecs, "num_matvecs")
    num_probes = check_count(num_probes, "num_probes")
    if grid is None:
        num_points = check_count(num_points, "num_points")
    else:
        grid = as_real_array(grid, "grid", "a 1-D array [G]")
        if grid.ndim != 1:
            raise ValueError(f"`grid` must be a 1-D array [G], got shape {grid.shape}")
        if is_concrete(grid) and not bool(jnp.all(jnp.isfinite(grid))):
            raise ValueError(f"`grid` must hold finite evaluation points, got {grid}")
    if sigma is not None:
        sigma = check_positive(sigma, "sigma")
    op = as_operator(
        loss_fn,
        params,
        gauge=gauge,
        data=data,
        chunk_size=chunk_size,
        mesh=mesh,
        loss_kwargs=loss_kwargs,
    )
    dtype, P_eff = jnp.dtype(op.dtype), op.free_size
    m = min(num_matvecs, P_eff)
    if grid is None or sigma is None:
        ext = _lanczos(op, 1, "both", False, min(m, 60), None, None).eigenvalues
        lo, hi = ext[0], ext[-1]
        width = jnp.maximum(hi - lo, jnp.maximum(jnp.abs(hi), 1.0) * 1e-6)
        sigma = 0.02 * width if sigma is None else jnp.asarray(sigma, dtype)
        if grid is None:
            grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, num_points, dtype=dtype)
    grid = jnp.asarray(grid, dtype)
    sigma = jnp.asarray(sigma, dtype)

    tridiag = decomp.tridiag_sym(m, reortho="full", custom_vjp=False)

    def integrand(mv, v):
        # Gauss quadrature from the Lanczos tridiagonal: nodes θ_j (Ritz values),
        # weights ‖v‖² (e₁ᵀ s_j)², so vᵀ g(t − H) v ≈ Σ_j w_j g(t − θ_j)
        v = op.project(v)
        length = jnp.linalg.norm(v)
        T = tridiag(mv, v / length).J_small
        nodes, vecs = jnp.linalg.eigh(T)
        weights = length**2 * vecs[0, :] ** 2
        kern = jax.scipy.stats.norm.pdf((grid[:, None] - nodes[None, :]) / sigma) / sigma
        return kern @ weights  # [G]

    sampler = stochtrace.sampler_signs(jnp.zeros(op.size, dtype), num=num_probes)
    estimate = stochtrace.estimator_monte_carlo_mean_and_sem(integrand, sampler)
    mean, sem = estimate(op.matvec, key)
    if num_probes == 1:  # one probe leaves the error unknown: say so (inf), not 0 or NaN
        sem = jnp.full_like(mean, jnp.inf)
    return SpectralDensity(grid, Estimate(mean / P_eff, sem / P_eff), sigma)


def hessian_trace(
    loss_fn,
    params=None,
    *,
    key: jax.Array,
    num_matvecs: int = 60,
    method: str = "hutch++",
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    **loss_kwargs,
) -> Estimate:
    """Stochastic trace of the Hessian, `tr ∇²L`, with its standard error.

    * `"hutch++"` (Meyer, Musco, Musco & Woodruff 2021): `m/3` Rademacher
      sketch vectors `S`, `Q = qr(H S)`, the exact trace `tr(QᵀHQ)` of the
      captured subspace plus Hutchinson with `m − 2⌊m/3⌋` Rademacher probes on
      the deflated `(I − QQᵀ) H (I − QQᵀ)`; the standard error is that of the
      deflated Hutchinson part (`std / sqrt(#probes)`).
    * `"hutchinson"`: `m` Rademacher probes
      (`matfree.stochtrace.estimator_monte_carlo_mean_and_sem`).
    * `"xtrace"`: XTrace (Epperly, Tropp & Webber 2024) with `m/2` Gaussian
      probes and its leave-one-out standard error (`matfree`).

    Args:
        loss_fn: `params -> scalar`; or a `LinearOperator` or a symmetric
            `[P, P]` matrix, with `params` omitted.
        params: parameter pytree (with a loss function).
        key: PRNG key for the probes.
        num_matvecs: Hessian-vector products to spend (≥ 3).
        method: `"hutch++"`, `"hutchinson"` or `"xtrace"`.
        data, chunk_size, mesh, **loss_kwargs: the sample to stream and extra
            loss arguments, as in `hessian_spectrum`.

    Returns:
        `Estimate` of the trace (scalars).
    """
    check_key(key)
    check_kind(method, "method", ("hutch++", "hutchinson", "xtrace"))
    m = check_count(num_matvecs, "num_matvecs", 3)
    op = as_operator(
        loss_fn, params, data=data, chunk_size=chunk_size, mesh=mesh, loss_kwargs=loss_kwargs
    )
    lin, P, dtype = op.matvec, op.size, jnp.dtype(op.dtype)
    template = jnp.zeros(P, dtype)
    if method == "hutchinson":
        sampler = stochtrace.sampler_signs(template, num=m)
        est = stochtrace.estimator_monte_carlo_mean_and_sem(stochtrace.monte_carlo_trace(), sampler)
        mean, sem = est(lin, key)
        return Estimate(mean, sem)
    if method == "xtrace":
        num = max(1, min(m // 2, P))
        sampler = stochtrace.sampler_normal(template, num=num)
        est = stochtrace.estimator_leave_one_out_mean_and_sem(
            stochtrace.leave_one_out_xtrace(), sampler
        )
        with jax.numpy_rank_promotion("allow"):  # matfree's XTrace broadcasts implicitly
            mean, sem = est(lin, key)
        return Estimate(mean, sem)
    s = max(1, m // 3)
    r = max(1, m - 2 * s)
    k1, k2 = jax.random.split(key)
    S = jax.random.rademacher(k1, (s, P), dtype=dtype)
    Y = jax.vmap(lin)(S)  # [s, P]
    Q = jnp.linalg.qr(Y.T)[0]  # [P, s]
    HQ = jax.vmap(lin)(Q.T)  # [s, P]
    t1 = jnp.sum(Q.T * HQ)
    Gm = jax.random.rademacher(k2, (r, P), dtype=dtype)
    Gm = Gm - (Gm @ Q) @ Q.T
    z = jnp.sum(Gm * jax.vmap(lin)(Gm), axis=1)  # [r]
    deflated = mean_estimate(z)  # one probe leaves the error unknown: say so (inf), not 0
    se = deflated.stderr if r > 1 else jnp.asarray(jnp.inf, dtype)
    return Estimate(t1 + deflated.value, se)
