"""Hessians, spectra, critical points, strict saddles and teacher recovery (§5).

The Section 5 landscape-transfer principle (Theorem 5.17) is a statement about
critical points of the soft risk `L_τ` (2.5): global minimisers recover the
teacher (5.16–5.17), and every critical point whose hard partition is not
teacher-equivalent is a *strict saddle* (`λ_min(∇²L_τ) < 0`). This module
computes what is needed to check it on a given model:

* **Curvature.** `hessian` (dense, forward-over-reverse), `hessian_blocks`
  (the router/expert blocks of Assumption 5.13), `hvp`, `hessian_spectrum`
  (all eigenvalues by `eigh`, or the `k` extreme ones by Lanczos with full
  reorthogonalisation from `matfree`), `spectrum_sweep` (one call over a
  temperature grid), `spectral_density` (stochastic Lanczos quadrature) and
  `hessian_trace` (Hutch++, Hutchinson or XTrace) for models too large for
  dense work. Every one of them is a pure function of `loss_fn` and the
  parameters, so `jax.vmap` over a temperature composes with it.
* **Gauge.** A softmax router is invariant under adding one function to every
  logit (EQUATIONS.md §2, "Symmetries"). For a linear output layer the part of
  that symmetry inside the parameter space is `W ↦ W + 1uᵀ`, `b ↦ b + c1`; it
  gives exact zero Hessian eigenvalues at every point (`d + 1` of them for a
  linear router). `gauge_directions` returns an orthonormal basis of those
  directions, and the spectra can be taken on its orthogonal complement
  (`gauge=`), which `classify_critical_point` does by default so that a
  minimum is not misread as degenerate. `NormalizedRouter` (unit-norm rows)
  bounds the router's sharpness so that `L_τ` has interior minimisers.
* **Critical points.** `find_critical_points` (Adam, then L-BFGS, then Newton;
  gradient-norm minimisation for saddles), deduplicated up to expert
  permutation and gauge; `classify_critical_point`.
* **Teacher side.** `teacher_equivalence` (5.10), `misrouting_mass` (5.11),
  `recovery_error` (5.16–5.17), `expert_separation` (5.9).
* **Transfer.** `hard_risk_gradient`, the population gradient of the hard
  risk `L_0` in the router parameters by the shape derivative (5.8), and
  `transfer_gap`, `‖∇L_τ − ∇L_0‖` by block (Assumption 5.13).
* **The experiment.** `strict_saddle_report` runs the Theorem 5.17 check on a
  teacher–student instance and `format_report` prints it.

Parameter vectors are *raveled* with `jax.flatten_util.ravel_pytree` (leaf
order of `jax.tree_util.tree_leaves`): Hessians are `[P, P]`, eigenvectors and
gauge bases have `P` rows in that order.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from matfree import decomp, eig, stochtrace

from ._stats import Estimate
from ._validate import check_delta, check_finite_params, check_taus, check_x, check_xy
from .coarea import kernel_bandwidth, kernel_smoothed_mean
from .models import LinearExperts, LinearRouter, MLPExperts, MLPRouter, _pytree
from .risk import hard_risk, soft_risk
from .routing import expert_outputs, gates, logits

__all__ = [
    "NormalizedRouter",
    "Spectrum",
    "HessianBlocks",
    "SpectralDensity",
    "CriticalPoint",
    "Classification",
    "TeacherEquivalence",
    "Recovery",
    "ExpertSeparation",
    "TransferGap",
    "SaddleReport",
    "hvp",
    "hessian",
    "hessian_blocks",
    "hessian_spectrum",
    "spectrum_sweep",
    "spectral_density",
    "hessian_trace",
    "gauge_directions",
    "find_critical_points",
    "classify_critical_point",
    "permute_experts",
    "teacher_equivalence",
    "misrouting_mass",
    "recovery_error",
    "expert_separation",
    "hard_risk_gradient",
    "transfer_gap",
    "strict_saddle_report",
    "format_report",
]

_WHICH = ("largest", "smallest", "both", "magnitude")
_HP = jax.lax.Precision.HIGHEST

# ----------------------------------------------------------------------------
# a router with bounded sharpness
# ----------------------------------------------------------------------------


@_pytree
class NormalizedRouter:
    """Router with unit-norm rows: `a_k(x) = scale · w_kᵀx / ‖w_k‖ + b_k` (2.2).

    With a `LinearRouter`, `L_τ(W, b) = L_1(W/τ, b/τ)`: for a realisable
    teacher, sharpening always lowers the soft risk and `L_τ` has no finite
    minimiser (Theorem 5.17 works on a compact parameter set). Normalising the
    rows bounds the sharpness, `|∇_x (a_i − a_j)| ≤ 2·scale`, so `L_τ` attains
    interior minimisers and the recovery rates (5.16–5.17) can be observed.
    Its gauge directions are the `K` radial row directions and the common bias
    shift (`gauge_directions`).

    Attributes:
        W: `[K, d]` row directions (any nonzero length).
        b: `[K]` biases.
        scale: static positive float, the logit scale.

    >>> r = NormalizedRouter(W=jnp.array([[2.0, 0.0], [0.0, -3.0]]), b=jnp.zeros(2))
    >>> r(jnp.array([1.0, 1.0])).tolist()
    [1.0, -1.0]
    """

    W: jax.Array
    b: jax.Array
    scale: float = dataclasses.field(default=1.0, metadata={"static": True})

    def __post_init__(self):
        for name in ("W", "b"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple, int, float, np.ndarray, np.generic)):
                object.__setattr__(self, name, jnp.asarray(v, dtype=jnp.result_type(float)))
        W, b = self.W, self.b
        if hasattr(W, "shape") and hasattr(b, "shape"):
            if W.ndim < 2 or b.shape[-1:] != W.shape[-2:-1] or W.shape[-2] < 2:
                raise ValueError(
                    f"NormalizedRouter: expected W [K, d] and b [K] with K >= 2; got W "
                    f"{W.shape}, b {b.shape}"
                )
        if not float(self.scale) > 0:
            raise ValueError(f"NormalizedRouter: `scale` must be > 0, got {self.scale!r}")

    @property
    def num_experts(self) -> int:
        return self.W.shape[-2]

    @property
    def dim(self) -> int:
        return self.W.shape[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> logits: [K]`."""
        norms = jnp.sqrt(jnp.sum(self.W**2, axis=-1))
        return self.scale * jnp.dot(self.W, x, precision=_HP) / norms + self.b


_ROUTERS = (LinearRouter, MLPRouter, NormalizedRouter)

# ----------------------------------------------------------------------------
# result types
# ----------------------------------------------------------------------------


class Spectrum(NamedTuple):
    """Hessian eigenvalues, ascending, and optionally their eigenvectors.

    Attributes:
        eigenvalues: `[k]` (or `[P]`, or `[P − G]` gauge-fixed) ascending;
            `[T, k]` from `spectrum_sweep`.
        eigenvectors: `[P, k]` orthonormal columns in raveled parameter space
            (column `i` pairs with `eigenvalues[i]`), or `None` if not requested.
    """

    eigenvalues: jax.Array  # [k]
    eigenvectors: jax.Array | None  # [P, k] or None


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


class CriticalPoint(NamedTuple):
    """A critical point found by `find_critical_points`.

    Attributes:
        params: the parameter pytree.
        loss: scalar loss value.
        grad_norm: scalar `‖∇L‖` (Euclidean, raveled).
        count: how many initialisations converged to it (up to permutation/gauge).
        method: `"minimum"` (Adam/L-BFGS/Newton) or `"saddle"` (gradient-norm
            minimisation/Newton), the search that found it first.
    """

    params: object
    loss: float
    grad_norm: float
    count: int
    method: str


class Classification(NamedTuple):
    """The type of a critical point (`classify_critical_point`).

    Attributes:
        kind: `"minimum"`, `"strict saddle"` (λ_min < −tol; includes maxima),
            `"degenerate"` (|λ_min| ≤ tol) or `"not critical"` (‖∇L‖ > grad_tol).
        lambda_min: smallest (gauge-fixed) Hessian eigenvalue.
        lambda_max: largest (gauge-fixed) Hessian eigenvalue.
        grad_norm: `‖∇L‖`.
        num_negative: number of eigenvalues `< −tol` (the Morse index; `-1`
            when only the extreme eigenvalues were computed).
        tol: the eigenvalue tolerance used.
        gauge_dim: number of gauge directions projected out.
    """

    kind: str
    lambda_min: float
    lambda_max: float
    grad_norm: float
    num_negative: int
    tol: float
    gauge_dim: int


class TeacherEquivalence(NamedTuple):
    """Hard-partition agreement with the teacher up to permutation (5.10, Thm 5.17).

    Attributes:
        permutation: `[K]` ints, `π(k)` = the student expert matched to teacher cell `k`.
        symmetric_difference: `Estimate` `[K]` of `P(C_k Δ C_π(k)(φ))`.
        total: `Estimate` of `Σ_k P(C_k Δ C_π(k)(φ))` (= 2 P(misrouted)).
        confusion: `[K, K]` `P(X ∈ C_k, k*(X; φ) = j)` (teacher `k`, student `j`).
    """

    permutation: np.ndarray  # [K]
    symmetric_difference: Estimate  # [K]
    total: Estimate  # []
    confusion: np.ndarray  # [K, K]


class Recovery(NamedTuple):
    """Teacher-recovery errors of a student (5.16–5.17).

    Attributes:
        permutation: `[K]`, `π(k)` = student expert matched to teacher cell `k`.
        expert_error: `Estimate` of `Σ_k E[(f_π(k) − f*_k)² 1_{C_k}]` (5.16).
        partition_error: `Estimate` of `Σ_k P(C_k Δ C_π(k)(φ))` (5.17).
        cell_errors: `[K, K]` matrix `E[(f_j − f*_k)² 1_{C_k}]` (teacher `k`, student `j`).
    """

    permutation: np.ndarray  # [K]
    expert_error: Estimate  # []
    partition_error: Estimate  # []
    cell_errors: np.ndarray  # [K, K]


class ExpertSeparation(NamedTuple):
    """The probabilistic expert-separation constants of Assumption 5.11 (5.9).

    Attributes:
        permutation: `[K]`, the matching `π` that minimises `ρ`.
        rho: `Estimate` of `ρ = max_{k, j ≠ π(k)} P(X ∈ C_k, |f_j − f*_k| < κ)`.
        table: `Estimate` `[K, K]` of `P(X ∈ C_k, |f_j(X) − f*_k(X)| < κ)`.
        kappa: the separation radius κ.
    """

    permutation: np.ndarray  # [K]
    rho: Estimate  # []
    table: Estimate  # [K, K]
    kappa: float


class TransferGap(NamedTuple):
    """Gradient transfer `‖∇L_τ − ∇L_0‖` by block (Assumption 5.13) and its rate.

    Attributes:
        taus: `[T]` temperatures.
        router: `[T]` `‖∇_φ L_τ − ∇_φ L_0‖`, `∇_φ L_0` by the shape derivative (5.8).
        router_stderr: `[T]` its standard error (delta method on `hard_risk_gradient`).
        experts: `[T]` `‖∇_θ L_τ − ∇_θ L_0‖`, exact on the sample.
        total: `[T]` `sqrt(router² + experts²)`.
        router_rate, experts_rate, total_rate: slopes of least-squares fits of
            `log gap` against `log τ` (1 for an `O(τ)` gap).
    """

    taus: jax.Array  # [T]
    router: jax.Array  # [T]
    router_stderr: jax.Array  # [T]
    experts: jax.Array  # [T]
    total: jax.Array  # [T]
    router_rate: float
    experts_rate: float
    total_rate: float


class SaddleReport(NamedTuple):
    """The Theorem 5.17 experiment (`strict_saddle_report`).

    Attributes:
        rows: one dict per critical point and temperature (keys in `format_report`).
        recovery: dict of arrays over temperatures for the global minimiser:
            `taus`, `expert_error`, `expert_error_stderr`, `partition_error`,
            `partition_error_stderr`, and the fitted log-log slopes
            `expert_rate`, `partition_rate`.
        consistent: True when every critical point within the theorem's
            hypotheses is teacher-equivalent or a strict saddle (the dichotomy);
            degenerate points with an empty hard cell (`consistent = None` in
            their row) are not counted.
    """

    rows: list
    recovery: dict
    consistent: bool


# ----------------------------------------------------------------------------
# Hessians and Hessian-vector products
# ----------------------------------------------------------------------------


def _check_loss(loss_fn, params, name: str = "loss_fn"):
    if not callable(loss_fn):
        raise ValueError(f"`{name}` must be a callable params -> scalar, got {type(loss_fn)}")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("`params` must be a pytree with at least one array leaf")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"`params` leaves must be floating arrays, got dtype {leaf.dtype}")
    check_finite_params(params, "params")
    out = jax.eval_shape(loss_fn, params)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"`{name}` must return a scalar, got shape {getattr(out, 'shape', out)}")


def _flat(loss_fn, params):
    """`(f_flat, flat, unravel)` with `f_flat(p: [P]) = loss_fn(unravel(p))`."""
    flat, unravel = ravel_pytree(params)

    def f(p):
        return loss_fn(unravel(p))

    return f, flat, unravel


def _hvp_flat(loss_fn, params):
    """A linearised Hessian-vector product `u: [P] -> H u: [P]` (forward-over-reverse)."""
    f, flat, _ = _flat(loss_fn, params)
    _, lin = jax.linearize(jax.grad(f), flat)
    return lin, flat


def hvp(loss_fn: Callable, params, v):
    """Hessian-vector product `∇²L(params) v` by forward-over-reverse autodiff.

    `jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]`: one gradient's cost, no
    Hessian materialised.

    Args:
        loss_fn: `params -> scalar`.
        params: parameter pytree.
        v: tangent pytree with the structure and shapes of `params`.

    Returns:
        a pytree like `params`.

    >>> f = lambda p: jnp.sum(p**3)
    >>> hvp(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()
    [6.0, 0.0]
    """
    if jax.tree_util.tree_structure(v) != jax.tree_util.tree_structure(params):
        raise ValueError("`v` must have the pytree structure of `params`")
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def hessian(loss_fn: Callable, params, *, batch_size: int | None = 64) -> jax.Array:
    """Dense Hessian `∇²L` of a pytree function, `[P, P]`, symmetrised.

    The pytree is raveled (`ravel_pytree`) and the Hessian built column by
    column by forward-over-reverse autodiff (`jax.jacfwd(jax.grad(f))`), the
    gradient linearised once (`jax.linearize`) and the columns mapped in
    batches of `batch_size` tangents so memory stays `O(batch_size · N)`.

    Args:
        loss_fn: `params -> scalar` (e.g. `lambda m: soft_risk(m, x, y, tau)`).
        params: parameter pytree with `P` scalars in all.
        batch_size: tangents per batch (`None`: all at once, i.e. `jacfwd`).

    Returns:
        `[P, P]` symmetric matrix in raveled order.

    >>> hessian(lambda p: p[0] ** 2 * p[1], jnp.array([1.0, 3.0])).tolist()
    [[6.0, 2.0], [2.0, 0.0]]
    """
    _check_loss(loss_fn, params)
    return _dense(loss_fn, params, batch_size)


def _dense(loss_fn, params, batch_size):
    lin, flat = _hvp_flat(loss_fn, params)
    P = flat.shape[0]
    eye = jnp.eye(P, dtype=flat.dtype)
    if batch_size is None or batch_size >= P:
        H = jax.vmap(lin)(eye)
    else:
        H = jax.lax.map(lin, eye, batch_size=int(batch_size))
    return 0.5 * (H + H.T)


def _key_name(k):
    for attr in ("name", "key"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return None


def _block_index(params, names=("router", "experts")) -> dict:
    """Raveled indices of the parameters under each top-level field in `names`."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
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
# gauge directions
# ----------------------------------------------------------------------------


def _zeros_like(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def _local_gauge(router) -> jax.Array:
    """Analytic gauge basis `[p_r, G]` of a built-in router in its raveled space."""
    z = _zeros_like(router)
    cols = []
    if isinstance(router, LinearRouter):
        K, d = router.W.shape[-2:]
        c = 1.0 / math.sqrt(K)
        for j in range(d):
            cols.append(ravel_pytree(dataclasses.replace(z, W=z.W.at[:, j].set(c)))[0])
        cols.append(ravel_pytree(dataclasses.replace(z, b=z.b + c))[0])
    elif isinstance(router, MLPRouter):
        K, H = router.W2.shape[-2:]
        c = 1.0 / math.sqrt(K)
        for j in range(H):
            cols.append(ravel_pytree(dataclasses.replace(z, W2=z.W2.at[:, j].set(c)))[0])
        cols.append(ravel_pytree(dataclasses.replace(z, b2=z.b2 + c))[0])
    elif isinstance(router, NormalizedRouter):
        K = router.W.shape[-2]
        unit = router.W / jnp.sqrt(jnp.sum(router.W**2, axis=-1, keepdims=True))
        for k in range(K):
            cols.append(ravel_pytree(dataclasses.replace(z, W=z.W.at[k].set(unit[k])))[0])
        cols.append(ravel_pytree(dataclasses.replace(z, b=z.b + 1.0 / math.sqrt(K)))[0])
    return jnp.stack(cols, axis=1)


def _numeric_gauge(router, x, rtol) -> jax.Array:
    """Null space `[p_r, G]` of the Jacobian of the centred logits over a sample."""
    flat, unravel = ravel_pytree(router)

    def centred(p):
        a = jax.vmap(unravel(p))(x)
        return (a - jnp.mean(a, axis=-1, keepdims=True)).ravel()

    J = jax.jacfwd(centred)(flat)  # [n K, p_r]
    _, s, vt = jnp.linalg.svd(J, full_matrices=True)
    s_full = jnp.zeros(flat.shape[0], s.dtype).at[: s.shape[0]].set(s)
    null = np.asarray(s_full <= rtol * (s[0] if s.size else 1.0))
    return vt[null].T


def gauge_directions(model, *, x: jax.Array | None = None, rtol: float = 1e-8) -> jax.Array:
    """Orthonormal basis of the router gauge directions in raveled parameter space.

    Softmax gates (2.3) are unchanged when one function `c(x)` is added to
    every logit (EQUATIONS.md §2, "Symmetries"). Within a parameterisation:

    * `LinearRouter`: `W ↦ W + 1uᵀ` (`u ∈ R^d`) and `b ↦ b + c1`, `d + 1`
      directions (columns `1/√K` on one coordinate of every row);
    * `MLPRouter`: the same on the output layer `(W2, b2)`, `H + 1` directions;
    * `NormalizedRouter`: each row's radial direction `w_k/‖w_k‖` (`K`) and
      the common bias shift, `K + 1` directions (these depend on the point).

    The loss is constant along each of them. The translations (linear and
    MLP output layers, the bias shift) are exact null vectors of the Hessian
    at every point; a radial direction of `NormalizedRouter` satisfies
    `H w_k = −∇_{w_k} L` (Euler's identity for a scale-invariant function), so
    it is a null vector exactly at critical points, where spectra are read.
    Every built-in router found in `model` (the model itself, `model.router`,
    or any node of the pytree) contributes its directions at its raveled
    offset. With a sample `x`, the directions are instead found numerically
    for `model.router` (any router, including your own): the null space of
    the Jacobian of the centred logits `a(x_n) − mean_k a_k(x_n)` over up to
    512 rows of `x`, singular values below `rtol · s_max` (this also finds
    other exact invariances, e.g. dead units).

    Args:
        model: a router, an MoE-like pytree, or any pytree holding routers.
        x: optional `[N, d]` sample for the numerical null space.
        rtol: relative singular-value cut-off of the numerical null space.

    Returns:
        `[P, G]` with orthonormal columns (`G = 0` when there is no gauge).

    >>> from softhard import LinearRouter
    >>> gauge_directions(LinearRouter(W=jnp.ones((3, 2)), b=jnp.zeros(3))).shape
    (9, 3)
    """
    custom = None
    if x is not None:
        x = check_x(x)
        custom = model.router if hasattr(model, "router") else model
        if not callable(custom):
            raise ValueError("`model.router` (or `model`) must be a callable router for `x=`")

    def is_router(node):
        return isinstance(node, _ROUTERS) or (custom is not None and node is custom)

    nodes = jax.tree_util.tree_flatten(model, is_leaf=is_router)[0]
    flat, _ = ravel_pytree(model)
    P = flat.shape[0]
    blocks = []
    offset = 0
    for node in nodes:
        size = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(node))
        basis = None
        if custom is not None and node is custom:
            basis = _numeric_gauge(node, x[:512].astype(flat.dtype), rtol)
        elif isinstance(node, _ROUTERS):
            basis = _local_gauge(node)
        if basis is not None and basis.shape[1] > 0:
            full = jnp.zeros((P, basis.shape[1]), flat.dtype)
            blocks.append(full.at[offset : offset + size].set(basis.astype(flat.dtype)))
        offset += size
    if not blocks:
        return jnp.zeros((P, 0), flat.dtype)
    return jnp.concatenate(blocks, axis=1)


def _resolve_gauge(gauge, params):
    """`None` or an orthonormal `[P, G]` basis (G ≥ 1)."""
    if gauge is None:
        return None
    P = ravel_pytree(params)[0].shape[0]
    if isinstance(gauge, str):
        if gauge != "auto":
            raise ValueError(f"`gauge` must be None, 'auto' or a [P, G] basis, got {gauge!r}")
        G = gauge_directions(params)
    else:
        G = jnp.asarray(gauge)
        if G.ndim != 2 or G.shape[0] != P:
            raise ValueError(f"`gauge` must be a [P, G] basis with P = {P}, got shape {G.shape}")
        if G.shape[1] > 0:
            G = jnp.linalg.qr(G)[0]
    return G if G.shape[1] > 0 else None


def _complement(G: jax.Array) -> jax.Array:
    """Orthonormal basis `[P, P − G]` of the orthogonal complement of `G: [P, G]`."""
    u = jnp.linalg.svd(G, full_matrices=True)[0]
    return u[:, G.shape[1] :]


# ----------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------


def _start_vector(P: int, dtype) -> jax.Array:
    # A deterministic, structure-free start vector: the Weyl sequence
    # frac(i (√5 − 1)/2) − 1/2, which has no symmetry under expert relabelling.
    i = np.arange(1, P + 1, dtype=np.float64)
    v = np.mod(i * (math.sqrt(5.0) - 1.0) / 2.0, 1.0) - 0.5
    return jnp.asarray(v / np.linalg.norm(v), dtype=dtype)


def _select(vals, vecs, k, which):
    """Pick `k` extreme eigenpairs from ascending `vals: [m]`, `vecs: [P, m]`."""
    m = vals.shape[0]
    k = min(k, m)
    if which == "largest":
        idx = jnp.arange(m - k, m)
    elif which == "smallest":
        idx = jnp.arange(k)
    elif which == "both":
        if 2 * k >= m:
            idx = jnp.arange(m)
        else:
            idx = jnp.concatenate([jnp.arange(k), jnp.arange(m - k, m)])
    else:  # magnitude
        idx = jnp.sort(jnp.argsort(jnp.abs(vals))[m - k :])
    return vals[idx], (None if vecs is None else vecs[:, idx])


def hessian_spectrum(
    loss_fn: Callable,
    params,
    k: int | None = None,
    *,
    which: str = "largest",
    eigenvectors: bool = False,
    gauge=None,
    num_matvecs: int | None = None,
    lanczos_dtype=None,
    key: jax.Array | None = None,
    batch_size: int | None = 64,
) -> Spectrum:
    """Hessian eigenvalues, ascending: all of them (`eigh`) or `k` extreme ones (Lanczos).

    With `k=None` the dense Hessian (`hessian`) is diagonalised. With an
    integer `k`, `num_matvecs` Lanczos steps with full reorthogonalisation
    (`matfree.decomp.tridiag_sym(..., reortho="full")` and
    `matfree.eig.eigh_partial`) run on Hessian-vector products, and the Ritz
    values at the requested end are returned:

    * `which="largest"`: the `k` largest (algebraic) eigenvalues;
    * `"smallest"`: the `k` smallest (algebraic), e.g. `λ_min` at a saddle;
    * `"both"`: the `k` smallest and the `k` largest (`2k` values);
    * `"magnitude"`: the `k` of largest `|λ|` (what power iteration finds).

    Extreme Ritz values converge first: the default `max(80, 4k)` steps give
    the top ten eigenvalues of a `P = 528` MoE Hessian to `~1e-13`. When the
    steps would reach the dimension, the dense path is used instead.

    `gauge` (`None`, `"auto"` = `gauge_directions(params)`, or an orthonormal
    `[P, G]` basis) restricts the Hessian to the orthogonal complement of the
    gauge directions, removing their exact zero eigenvalues.

    The function is pure and traceable: the spectra at `T` temperatures come
    from one `jax.vmap` (or `spectrum_sweep`):

        jax.vmap(lambda t: hessian_spectrum(
            lambda p: soft_risk(p, x, y, t), model, k=10).eigenvalues)(taus)  # [T, 10]

    Args:
        loss_fn: `params -> scalar`.
        params: parameter pytree, `P` scalars.
        k: number of extreme eigenvalues, or `None` for all.
        which: `"largest"`, `"smallest"`, `"both"` or `"magnitude"` (with `k`).
        eigenvectors: also return the eigenvectors `[P, k]`.
        gauge: `None`, `"auto"` or a `[P, G]` basis to project out.
        num_matvecs: Lanczos steps (default `max(80, 4k)`).
        lanczos_dtype: dtype of the Lanczos basis and tridiagonal matrix, e.g.
            `jnp.float64` for float32 parameters (needs `jax_enable_x64`); the
            Hessian-vector products stay in the parameters' dtype.
        key: optional PRNG key for a random start vector (default: a fixed,
            deterministic quasi-random vector, so results are reproducible).
        batch_size: tangents per batch of the dense Hessian.

    Returns:
        `Spectrum(eigenvalues [k] / [2k] / [P'] ascending, eigenvectors [P, ·] or None)`.
    """
    if k is not None and (int(k) != k or int(k) < 1):
        raise ValueError(f"`k` must be None or a positive integer, got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"`which` must be one of {_WHICH}, got {which!r}")
    if num_matvecs is not None and int(num_matvecs) < 1:
        raise ValueError(f"`num_matvecs` must be a positive integer, got {num_matvecs!r}")
    _check_loss(loss_fn, params)
    if lanczos_dtype is not None:
        lanczos_dtype = jnp.dtype(lanczos_dtype)
        if lanczos_dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("`lanczos_dtype=float64` needs jax_enable_x64")
    G = _resolve_gauge(gauge, params)
    flat = ravel_pytree(params)[0]
    P = flat.shape[0]
    P_eff = P - (0 if G is None else G.shape[1])
    m = None if k is None else min(P_eff, int(num_matvecs or max(80, 4 * int(k))))
    if k is None or m >= P_eff:
        H = _dense(loss_fn, params, batch_size)
        if G is not None:
            Q = _complement(G)
            vals, vecs = jnp.linalg.eigh(Q.T @ H @ Q)
            vecs = Q @ vecs
        else:
            vals, vecs = jnp.linalg.eigh(H)
        if k is not None:
            vals, vecs = _select(vals, vecs, int(k), which)
        return Spectrum(vals, vecs if eigenvectors else None)
    return _lanczos(loss_fn, params, int(k), which, eigenvectors, G, m, lanczos_dtype, key)


def _projected_matvec(loss_fn, params, G, dtype):
    """`u ↦ Π H Π u` in `dtype`, `Π = I − G Gᵀ` (or `H u` without a gauge)."""
    lin, flat = _hvp_flat(loss_fn, params)
    pdtype = flat.dtype
    dtype = dtype or pdtype

    def proj(u):
        return u if G is None else u - G.astype(u.dtype) @ (G.T.astype(u.dtype) @ u)

    def matvec(u):
        return proj(lin(proj(u).astype(pdtype)).astype(dtype))

    return matvec, proj, flat.shape[0], dtype


def _lanczos(loss_fn, params, k, which, want_vecs, G, m, dtype, key):
    matvec, proj, P, dtype = _projected_matvec(loss_fn, params, G, dtype)
    if key is None:
        v0 = _start_vector(P, dtype)
    else:
        v0 = jax.random.normal(key, (P,), dtype)
    v0 = proj(v0)
    v0 = v0 / jnp.linalg.norm(v0)
    tridiag = decomp.tridiag_sym(m, reortho="full", custom_vjp=False)
    vals, vecs = eig.eigh_partial(tridiag)(matvec, v0)  # [m], [m, P]
    vals, vecs = _select(vals, vecs.T, k, which)
    return Spectrum(vals, vecs if want_vecs else None)


def spectrum_sweep(loss_fn: Callable, params, taus: jax.Array, k: int | None = None, **kwargs):
    """Hessian spectra of `L_τ` at every temperature in one vectorised call.

    Args:
        loss_fn: `(params, tau) -> scalar`, e.g.
            `lambda m, t: soft_risk(m, x, y, t)`.
        params: parameter pytree (the same point at every temperature).
        taus: `[T]` temperatures `> 0`.
        k: as in `hessian_spectrum`; further keyword options are passed on.

    Returns:
        `Spectrum` with `eigenvalues: [T, k]` (or `[T, P']`) and eigenvectors
        `[T, P, k]` when requested.
    """
    taus = check_taus(taus)
    _check_loss(lambda p: loss_fn(p, taus[0]), params)

    def one(t):
        return hessian_spectrum(lambda p: loss_fn(p, t), params, k, **kwargs)

    return jax.vmap(one)(taus)


def spectral_density(
    loss_fn: Callable,
    params,
    *,
    key: jax.Array,
    grid: jax.Array | None = None,
    num_points: int = 200,
    sigma=None,
    num_matvecs: int = 40,
    num_probes: int = 16,
    gauge=None,
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
        loss_fn: `params -> scalar`.
        params: parameter pytree.
        key: PRNG key for the probes.
        grid: `[G]` evaluation points (default: `num_points` points spanning
            the extreme eigenvalues ± 3σ, found by Lanczos).
        num_points: grid size when `grid` is None.
        sigma: broadening width (default: 2% of the spectral range).
        num_matvecs: Lanczos steps per probe.
        num_probes: number of probes.
        gauge: `None`, `"auto"` or a `[P, G]` basis to project out (probes
            are projected too, so the gauge zeros are excluded and `P' = P − G`).

    Returns:
        `SpectralDensity(grid [G], density Estimate [G], sigma)`.
    """
    _check_loss(loss_fn, params)
    G = _resolve_gauge(gauge, params)
    matvec, proj, P, dtype = _projected_matvec(loss_fn, params, G, None)
    P_eff = P - (0 if G is None else G.shape[1])
    m = min(int(num_matvecs), P_eff)
    if grid is None or sigma is None:
        ext = _lanczos(loss_fn, params, 1, "both", False, G, min(m, 60), None, None).eigenvalues
        lo, hi = ext[0], ext[-1]
        width = jnp.maximum(hi - lo, jnp.maximum(jnp.abs(hi), 1.0) * 1e-6)
        sigma = 0.02 * width if sigma is None else jnp.asarray(sigma, dtype)
        if grid is None:
            grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, int(num_points), dtype=dtype)
    grid = jnp.asarray(grid, dtype)
    sigma = jnp.asarray(sigma, dtype)
    if grid.ndim != 1:
        raise ValueError(f"`grid` must be a 1-D array [G], got shape {grid.shape}")

    tridiag = decomp.tridiag_sym(m, reortho="full", custom_vjp=False)

    def integrand(mv, v):
        # Gauss quadrature from the Lanczos tridiagonal: nodes θ_j (Ritz values),
        # weights ‖v‖² (e₁ᵀ s_j)², so vᵀ g(t − H) v ≈ Σ_j w_j g(t − θ_j)
        v = proj(v)
        length = jnp.linalg.norm(v)
        T = tridiag(mv, v / length).J_small
        nodes, vecs = jnp.linalg.eigh(T)
        weights = length**2 * vecs[0, :] ** 2
        kern = jax.scipy.stats.norm.pdf((grid[:, None] - nodes[None, :]) / sigma) / sigma
        return kern @ weights  # [G]

    sampler = stochtrace.sampler_signs(jnp.zeros(P, dtype), num=int(num_probes))
    estimate = stochtrace.estimator_monte_carlo_mean_and_sem(integrand, sampler)
    mean, sem = estimate(matvec, key)
    return SpectralDensity(grid, Estimate(mean / P_eff, sem / P_eff), sigma)


def hessian_trace(
    loss_fn: Callable,
    params,
    *,
    key: jax.Array,
    num_matvecs: int = 60,
    method: str = "hutch++",
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
        loss_fn: `params -> scalar`.
        params: parameter pytree.
        key: PRNG key for the probes.
        num_matvecs: Hessian-vector products to spend (≥ 3).
        method: `"hutch++"`, `"hutchinson"` or `"xtrace"`.

    Returns:
        `Estimate` of the trace (scalars).
    """
    methods = ("hutch++", "hutchinson", "xtrace")
    if method not in methods:
        raise ValueError(f"`method` must be one of {methods}, got {method!r}")
    if int(num_matvecs) < 3:
        raise ValueError(f"`num_matvecs` must be >= 3, got {num_matvecs!r}")
    _check_loss(loss_fn, params)
    lin, flat = _hvp_flat(loss_fn, params)
    P, dtype, m = flat.shape[0], flat.dtype, int(num_matvecs)
    if method == "hutchinson":
        sampler = stochtrace.sampler_signs(flat, num=m)
        est = stochtrace.estimator_monte_carlo_mean_and_sem(stochtrace.monte_carlo_trace(), sampler)
        mean, sem = est(lin, key)
        return Estimate(mean, sem)
    if method == "xtrace":
        num = max(1, min(m // 2, P))
        sampler = stochtrace.sampler_normal(flat, num=num)
        est = stochtrace.estimator_leave_one_out_mean_and_sem(
            stochtrace.leave_one_out_xtrace(), sampler
        )
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
    se = jnp.std(z, ddof=1) / math.sqrt(r) if r > 1 else jnp.asarray(jnp.inf, dtype)
    return Estimate(t1 + jnp.mean(z), se)


# ----------------------------------------------------------------------------
# expert permutations and canonical forms
# ----------------------------------------------------------------------------


def _permute_router(r, perm):
    if isinstance(r, (LinearRouter, NormalizedRouter)):
        return dataclasses.replace(r, W=r.W[perm], b=r.b[perm])
    if isinstance(r, MLPRouter):
        return dataclasses.replace(r, W2=r.W2[perm], b2=r.b2[perm])
    return None


def _permute_bank(e, perm):
    if isinstance(e, LinearExperts):
        return dataclasses.replace(e, B=e.B[perm], c=e.c[perm])
    if isinstance(e, MLPExperts):
        return dataclasses.replace(e, W1=e.W1[perm], b1=e.b1[perm], W2=e.W2[perm], b2=e.b2[perm])
    return None


def permute_experts(model, perm):
    """Relabel the experts of an MoE: expert `k` of the result is expert `perm[k]`.

    Permutes the router's output rows and the expert bank together, which
    leaves `f_τ` unchanged (EQUATIONS.md §2, "Symmetries"). Built-in routers
    (`LinearRouter`, `MLPRouter`, `NormalizedRouter`) and expert banks
    (`LinearExperts`, `MLPExperts`) only.

    Args:
        model: an MoE-like pytree with `.router` and `.experts`.
        perm: `[K]` a permutation of `range(K)`.

    Returns:
        the relabelled model, same type.
    """
    perm = np.asarray(perm)
    if not hasattr(model, "router") or not hasattr(model, "experts"):
        raise ValueError("`model` must have `.router` and `.experts` fields")
    r, e = _permute_router(model.router, perm), _permute_bank(model.experts, perm)
    if r is None or e is None:
        raise ValueError(
            "`permute_experts` supports the built-in routers and expert banks, got "
            f"{type(model.router).__name__}, {type(model.experts).__name__}"
        )
    if sorted(perm.tolist()) != list(range(len(perm))):
        raise ValueError(f"`perm` must be a permutation of range(K), got {perm}")
    return dataclasses.replace(model, router=r, experts=e)


def _canonical_router(r):
    """Gauge-fixed representative: centred output rows / unit rows."""
    if isinstance(r, LinearRouter):
        return dataclasses.replace(r, W=r.W - r.W.mean(0), b=r.b - r.b.mean())
    if isinstance(r, MLPRouter):
        return dataclasses.replace(r, W2=r.W2 - r.W2.mean(0), b2=r.b2 - r.b2.mean())
    if isinstance(r, NormalizedRouter):
        unit = r.W / jnp.sqrt(jnp.sum(r.W**2, axis=-1, keepdims=True))
        return dataclasses.replace(r, W=unit, b=r.b - r.b.mean())
    return r


def _canonical(params):
    if hasattr(params, "router") and dataclasses.is_dataclass(params):
        return dataclasses.replace(params, router=_canonical_router(params.router))
    if isinstance(params, _ROUTERS):
        return _canonical_router(params)
    return params


def _num_experts_of(params):
    r = getattr(params, "router", None)
    if isinstance(r, _ROUTERS) and _permute_bank(params.experts, np.arange(1)) is not None:
        return r.num_experts
    return None


def _same_point(p, q, tol) -> bool:
    """Whether `p` and `q` coincide up to gauge and expert permutation."""
    a = np.asarray(ravel_pytree(_canonical(p))[0])
    scale = 1.0 + np.linalg.norm(a)
    K = _num_experts_of(q)
    perms = [None] if K is None or K > 7 else itertools.permutations(range(K))
    for perm in perms:
        qq = q if perm is None else permute_experts(q, perm)
        b = np.asarray(ravel_pytree(_canonical(qq))[0])
        if np.linalg.norm(a - b) <= tol * scale:
            return True
    return False


# ----------------------------------------------------------------------------
# critical points
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("loss_fn", "steps", "learning_rate"))
def _adam_run(loss_fn, params, args, steps, learning_rate):
    # optimisers run on the raveled vector: tree utilities that reduce leaves to
    # scalars cannot rebuild shape-validated model dataclasses
    f, flat, unravel = _flat(lambda p: loss_fn(p, *args), params)
    opt = optax.adam(learning_rate)

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(f)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (flat, opt.init(flat)), None, length=steps)
    return unravel(p)


@functools.partial(jax.jit, static_argnames=("loss_fn", "max_iters"))
def _lbfgs_run(loss_fn, params, args, tol, max_iters):
    """`optax.lbfgs` (backtracking line search) on `L` until `‖∇L‖ ≤ tol`."""
    f, flat, unravel = _flat(lambda p: loss_fn(p, *args), params)
    opt = optax.lbfgs(
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=40, store_grad=True
        )
    )
    vg = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, s, it = carry
        gn = jnp.linalg.norm(optax.tree_utils.tree_get(s, "grad"))
        return (it == 0) | ((it < max_iters) & (gn > tol) & jnp.isfinite(gn))

    def body(carry):
        p, s, it = carry
        value, g = vg(p, state=s)
        u, s = opt.update(g, s, p, value=value, grad=g, value_fn=f)
        return optax.apply_updates(p, u), s, it + 1

    p, _, _ = jax.lax.while_loop(cond, body, (flat, opt.init(flat), 0))
    return unravel(p)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _levenberg_marquardt(loss_fn, params, args, tol, steps):
    """Minimise `½‖∇L‖²` by Levenberg–Marquardt on `∇L = 0` (Jacobian `∇²L`).

    Trial step `−V diag(λ_i/(λ_i² + μ)) Vᵀ ∇L` from the eigendecomposition
    `∇²L = V diag(λ) Vᵀ`; accepted when it lowers `‖∇L‖`, after which `μ` is
    divided by 10, otherwise multiplied by 10. Newton's method (quadratic
    convergence to a critical point of any index) once `μ → 0`, a descent
    method for `‖∇L‖` far from one. Exact null directions (gauge, `λ_i = 0`)
    are never moved along. `steps` trials at most, in one `lax.while_loop`.
    """
    f, flat, unravel = _flat(lambda p: loss_fn(p, *args), params)

    def system(p):
        g = jax.grad(f)(p)
        vals, vecs = jnp.linalg.eigh(jax.hessian(f)(p))
        return g, vals, vecs, jnp.linalg.norm(g)

    g0, vals0, vecs0, gn0 = system(flat)
    scale0 = jnp.maximum(jnp.max(jnp.abs(vals0)), jnp.finfo(flat.dtype).tiny)
    mu0 = 1e-4 * scale0**2

    def cond(c):
        _, _, _, _, gn, mu, it = c
        scale = jnp.maximum(jnp.max(jnp.abs(c[2])), jnp.finfo(flat.dtype).tiny)
        return (it < steps) & (gn > 1e-3 * tol) & jnp.isfinite(gn) & (mu < 1e30 * scale**2)

    def body(c):
        p, g, vals, vecs, gn, mu, it = c
        scale = jnp.max(jnp.abs(vals))
        keep = jnp.abs(vals) > 1e-12 * scale
        coef = jnp.where(keep, vals / (vals**2 + mu) * (vecs.T @ g), 0.0)
        cand = p - vecs @ coef
        g2, vals2, vecs2, gn2 = system(cand)
        ok = jnp.isfinite(gn2) & (gn2 < gn)
        pick = functools.partial(jnp.where, ok)
        return (
            pick(cand, p),
            pick(g2, g),
            pick(vals2, vals),
            pick(vecs2, vecs),
            pick(gn2, gn),
            jnp.where(ok, mu / 10.0, jnp.maximum(mu * 10.0, 1e-30 * scale**2)),
            it + 1,
        )

    out = jax.lax.while_loop(cond, body, (flat, g0, vals0, vecs0, gn0, mu0, 0))
    return unravel(out[0]), out[4]


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _value_and_grad_norm(loss_fn, params, args):
    f, flat, _ = _flat(lambda p: loss_fn(p, *args), params)
    v, g = jax.value_and_grad(f)(flat)
    return v, jnp.linalg.norm(g)


def find_critical_points(
    loss_fn: Callable,
    inits: Sequence,
    *,
    args: tuple = (),
    kind: str = "minimum",
    tol: float = 1e-8,
    adam_steps: int = 300,
    learning_rate: float = 1e-2,
    max_iters: int = 2000,
    newton_steps: int = 30,
    saddle_steps: int = 200,
    dedup_tol: float = 1e-5,
) -> list[CriticalPoint]:
    """Critical points of `loss_fn` from a list of starting points, deduplicated.

    * `kind="minimum"`: Adam (`adam_steps`, `optax.adam`), then L-BFGS
      (`optax.lbfgs`, backtracking line search) until `‖∇L‖ ≤ tol`, then
      Newton polishing (`newton_steps` damped steps, below).
    * `kind="saddle"`: gradient-norm minimisation of `½‖∇L‖²` by
      Levenberg–Marquardt on `∇L = 0` with the dense Hessian as Jacobian
      (`saddle_steps` steps): a descent method for `‖∇L‖` far from a critical
      point and Newton's method near one, so it converges quadratically to
      critical points of any index. The exact gauge null directions of the
      Hessian are never moved along.
    * `kind="any"`: both searches from every start.

    A run counts when it reaches `‖∇L‖ ≤ tol` (the default `1e-8` needs
    float64). Points are returned in their gauge-fixed form (linear router
    output rows centred; `NormalizedRouter` rows of unit length, where the
    raw gradient and Hessian scale with `1/‖w_k‖`). Runs that reach the same
    point up to the router gauge and an expert relabelling (`permute_experts`,
    built-in models, `K ≤ 7`) are merged (relative distance `≤ dedup_tol`).

    Dense Newton steps make this a tool for small models (`P` up to a few
    thousand); the optimiser loops are jitted once per `loss_fn` object, so
    pass changing data (a temperature, a sample) through `args`.

    Args:
        loss_fn: `(params, *args) -> scalar`.
        inits: a sequence of parameter pytrees (starting points).
        args: extra arguments passed to `loss_fn` (traced, no recompilation).
        kind: `"minimum"`, `"saddle"` or `"any"`.
        tol: gradient-norm tolerance.
        adam_steps, learning_rate: the Adam warm-up (minima only).
        max_iters: L-BFGS iteration cap.
        newton_steps: Newton polishing iteration cap (minima).
        saddle_steps: Levenberg–Marquardt iteration cap (saddles).
        dedup_tol: relative distance below which two points are the same.

    Returns:
        list of `CriticalPoint`, sorted by loss.
    """
    kinds = ("minimum", "saddle", "any")
    if kind not in kinds:
        raise ValueError(f"`kind` must be one of {kinds}, got {kind!r}")
    if not isinstance(inits, (list, tuple)) or len(inits) == 0:
        raise ValueError("`inits` must be a non-empty list of parameter pytrees")
    if not tol > 0:
        raise ValueError(f"`tol` must be > 0, got {tol!r}")
    args = tuple(args)
    _check_loss(lambda p: loss_fn(p, *args), inits[0])
    methods = ["minimum", "saddle"] if kind == "any" else [kind]
    found: list[CriticalPoint] = []
    for p0 in inits:
        for method in methods:
            # the gauge-fixed representative between stages: for a scale-invariant
            # router (NormalizedRouter) the raw gradient shrinks as the rows grow,
            # which would fake convergence
            p = _canonical(p0)
            if method == "minimum":
                if adam_steps > 0:
                    p = _adam_run(loss_fn, p, args, int(adam_steps), float(learning_rate))
                p = _lbfgs_run(loss_fn, _canonical(p), args, tol, int(max_iters))
                p, gn = _levenberg_marquardt(loss_fn, _canonical(p), args, tol, int(newton_steps))
            else:
                p, gn = _levenberg_marquardt(loss_fn, p, args, tol, int(saddle_steps))
            p = _canonical(p)
            gn = float(_value_and_grad_norm(loss_fn, p, args)[1])
            if not gn <= tol:
                continue
            value = float(_value_and_grad_norm(loss_fn, p, args)[0])
            for i, c in enumerate(found):
                if _same_point(p, c.params, dedup_tol):
                    found[i] = c._replace(count=c.count + 1)
                    break
            else:
                found.append(CriticalPoint(p, value, gn, 1, method))
    return sorted(found, key=lambda c: c.loss)


def _call_with(loss_fn, args, p):
    return loss_fn(p, *args)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _dense_classify(loss_fn, params, args, G):
    """`‖∇L‖` and the (gauge-fixed) dense spectrum, in one compiled call."""
    f, flat, _ = _flat(lambda p: loss_fn(p, *args), params)
    gn = jnp.linalg.norm(jax.grad(f)(flat))
    H = jax.hessian(f)(flat)
    H = 0.5 * (H + H.T)
    if G is not None:
        Q = _complement(G)
        H = Q.T @ H @ Q
    return gn, jnp.linalg.eigvalsh(H)


def classify_critical_point(
    loss_fn: Callable,
    params,
    tol=None,
    *,
    gauge="auto",
    grad_tol=None,
    args: tuple = (),
    dense_limit: int = 4000,
) -> Classification:
    """Minimum, strict saddle or degenerate, from the (gauge-fixed) Hessian spectrum.

    A critical point is a *strict saddle* when `λ_min(∇²L) < 0` (Theorem 5.17);
    here `λ_min < −tol` gives `"strict saddle"` (local maxima included),
    `λ_min > tol` gives `"minimum"`, and otherwise `"degenerate"`. The gauge
    directions (`gauge_directions`) are exact null vectors of the Hessian of
    a softmax-routed model at a critical point, so by default (`gauge="auto"`) the spectrum is taken
    on their orthogonal complement; with `gauge=None` a minimum of a linear
    router is reported `"degenerate"`.

    Args:
        loss_fn: `params -> scalar`.
        params: the candidate critical point.
        tol: eigenvalue tolerance (default `sqrt(eps) · max(1, max|λ|)`:
            `1.5e-8` relative in float64).
        gauge: `"auto"`, `None` or a `[P, G]` basis.
        grad_tol: when given, `‖∇L‖ > grad_tol` gives `"not critical"`.
        args: extra arguments, `loss_fn(params, *args)`; the dense path is
            compiled once per `loss_fn` object, so pass changing data here.
        dense_limit: above this many (gauge-fixed) parameters the extreme
            eigenvalues come from Lanczos (`num_negative` is then `-1`).

    Returns:
        `Classification(kind, lambda_min, lambda_max, grad_norm, num_negative, tol, gauge_dim)`.
    """
    args = tuple(args)
    _check_loss(lambda p: loss_fn(p, *args), params)
    G = _resolve_gauge(gauge, params)
    gdim = 0 if G is None else int(G.shape[1])
    flat = ravel_pytree(params)[0]
    if flat.shape[0] - gdim <= dense_limit:
        gn, vals = _dense_classify(loss_fn, params, args, G)
    else:
        f = functools.partial(_call_with, loss_fn, args)
        gn = jnp.linalg.norm(ravel_pytree(jax.grad(f)(params))[0])
        vals = hessian_spectrum(f, params, 1, which="both", gauge=G).eigenvalues
    gn, vals = float(gn), np.asarray(vals)
    lmin, lmax = float(vals[0]), float(vals[-1])
    if tol is None:
        eps = float(jnp.finfo(flat.dtype).eps)
        tol = math.sqrt(eps) * max(1.0, abs(lmin), abs(lmax))
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0, got {tol!r}")
    nneg = int(np.sum(vals < -tol)) if flat.shape[0] - gdim <= dense_limit else -1
    if grad_tol is not None and gn > float(grad_tol):
        kind = "not critical"
    elif lmin < -tol:
        kind = "strict saddle"
    elif lmin > tol:
        kind = "minimum"
    else:
        kind = "degenerate"
    return Classification(kind, lmin, lmax, gn, nneg, tol, gdim)


# ----------------------------------------------------------------------------
# teacher side
# ----------------------------------------------------------------------------


def _router_of(obj):
    return obj.router if hasattr(obj, "router") else obj


def _best_permutation(cost: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """`argmin_π Σ_k cost[k, π(k)]` (or `max_k`), by enumeration for K ≤ 8."""
    K = cost.shape[0]
    if K > 8:
        if reduce != "sum":
            raise ValueError(f"min-max matching is implemented for K <= 8, got K = {K}")
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError as err:  # pragma: no cover - scipy is a dev dependency
            raise ValueError(f"matching K = {K} > 8 experts needs scipy") from err
        return np.asarray(linear_sum_assignment(cost)[1])
    perms = np.array(list(itertools.permutations(range(K))))  # [K!, K]
    vals = cost[np.arange(K)[None, :], perms]  # [K!, K]
    score = vals.sum(1) if reduce == "sum" else vals.max(1)
    return perms[int(np.argmin(score))]


def _estimate_mean(v: jax.Array, axis: int = 0) -> Estimate:
    n = v.shape[axis]
    se = jnp.std(v, axis=axis, ddof=1) / math.sqrt(n) if n > 1 else jnp.zeros_like(v.mean(axis))
    return Estimate(jnp.mean(v, axis=axis), se)


def _cells(router, teacher, x):
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    s = jnp.argmax(logits(_router_of(router), x), axis=-1)
    return t, s


def _check_perm(permutation, K):
    if permutation is None:
        return None
    perm = np.asarray(permutation, dtype=np.int64)
    if perm.shape != (K,) or sorted(perm.tolist()) != list(range(K)):
        raise ValueError(f"`permutation` must be a permutation of range({K}), got {permutation}")
    return perm


def teacher_equivalence(router, teacher, x: jax.Array, *, permutation=None) -> TeacherEquivalence:
    """Agreement of the student's hard cells with the teacher's, up to relabelling.

    With teacher cells `C_k` (5.1) and the student's hard cells
    `C_j(φ) = {x : k*(x; φ) = j}` (5.10, lowest index wins ties (2.9)), the
    best matching `π` minimises `Σ_k P(C_k Δ C_π(k)(φ))`; the partition is
    teacher-equivalent up to permutation when all these masses are 0
    (Theorem 5.17). Masses are sample means over `x ~` the input law.

    Args:
        router: the student router, or an MoE-like model with `.router`.
        teacher: a `Teacher` (its `.router` defines `C_k`).
        x: `[N, d]` inputs drawn from the input law.
        permutation: optional fixed `[K]` matching (default: the best one).

    Returns:
        `TeacherEquivalence(permutation [K], symmetric_difference Estimate [K],
        total Estimate, confusion [K, K])`.
    """
    x = check_x(x)
    t, s = _cells(router, teacher, x)
    K = int(logits(teacher.router, x[:1]).shape[1])
    Ks = int(logits(_router_of(router), x[:1]).shape[1])
    if Ks != K:
        raise ValueError(f"student has K = {Ks} experts but the teacher has K = {K}")
    T1 = jax.nn.one_hot(t, K, dtype=x.dtype)
    S1 = jax.nn.one_hot(s, K, dtype=x.dtype)
    conf = np.asarray(T1.T @ S1) / x.shape[0]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = _best_permutation(-conf, "sum")
    ind = jnp.abs(T1 - S1[:, perm])  # [N, K]: 1{x ∈ C_k Δ C_π(k)}
    return TeacherEquivalence(perm, _estimate_mean(ind), _estimate_mean(ind.sum(1)), conf)


def _teacher_outputs(model, teacher, x):
    f = expert_outputs(model.experts, x)  # [N, K] student
    fs = expert_outputs(teacher.experts, x)  # [N, K] teacher
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    fstar = jnp.take_along_axis(fs, t[:, None], axis=1)[:, 0]  # f*(x) (5.2)
    return f, fstar, t


def recovery_error(model, teacher, x: jax.Array, *, permutation=None) -> Recovery:
    """Teacher-recovery errors (5.16) and (5.17) of a student MoE.

    `Σ_k E[(f_π(k)(X) − f*_k(X))² 1{X ∈ C_k}]` (5.16) and
    `Σ_k P(C_k Δ C_π(k)(φ))` (5.17) for one matching `π`, by default the one
    minimising the expert error (5.16), the same `π` for both (as in the
    theorem). Theorem 5.17 predicts both are `O(τ + δ² + ρ)` / `O(τ + ρ)` at
    a global minimiser of `L_τ`.

    Args:
        model: the student (`.router`, `.experts`).
        teacher: a `Teacher`.
        x: `[N, d]` inputs from the input law.
        permutation: optional fixed `[K]` matching.

    Returns:
        `Recovery(permutation, expert_error, partition_error, cell_errors [K, K])`.
    """
    x = check_x(x)
    check_finite_params(model, "model")
    f, fstar, t = _teacher_outputs(model, teacher, x)
    K = f.shape[1]
    T1 = jax.nn.one_hot(t, K, dtype=f.dtype)
    cost = np.asarray(jnp.einsum("nk,nj->kj", T1, (f - fstar[:, None]) ** 2)) / x.shape[0]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = _best_permutation(cost, "sum")
    matched = jnp.take_along_axis(f, jnp.asarray(perm)[t][:, None], axis=1)[:, 0]
    s = jnp.argmax(logits(model.router, x), axis=-1)
    mis = 2.0 * (s != jnp.asarray(perm)[t]).astype(f.dtype)
    return Recovery(perm, _estimate_mean((matched - fstar) ** 2), _estimate_mean(mis), cost)


def misrouting_mass(model, teacher, x: jax.Array, tau, delta, *, permutation=None) -> Estimate:
    """Mass of the confidently misrouted set `E_δ(π)` (5.11).

    `E_δ(π) = ∪_k {x ∈ C_k : π_j^τ(x) ≥ 1 − δ for some j ≠ π(k)}`: teacher
    cell `k` confidently routed (gate ≥ 1 − δ, δ < 1/2) to an expert other than
    its match. Lemma 5.16 bounds it by the excess risk:
    `L̄_τ ≥ (κ − 2Bδ)₊² (P(E_δ) − K(K−1)ρ)` (5.12–5.13).

    Args:
        model: the student (`.router`, `.experts`).
        teacher: a `Teacher`.
        x: `[N, d]` inputs; tau: scalar `> 0`; delta: `0 < δ < 1/2`.
        permutation: the matching `π` (default: `recovery_error`'s expert
            matching, an admissible matching in the sense of (5.9)).

    Returns:
        `Estimate` of `P(X ∈ E_δ(π))`.
    """
    x = check_x(x)
    check_delta(delta)
    g = gates(logits(model.router, x), tau)  # [N, K]
    K = g.shape[1]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = recovery_error(model, teacher, x).permutation
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    wrong = 1.0 - jax.nn.one_hot(jnp.asarray(perm)[t], K, dtype=g.dtype)
    ind = jnp.any((g >= 1.0 - delta) & (wrong > 0), axis=1).astype(g.dtype)
    return _estimate_mean(ind)


def expert_separation(model, teacher, x: jax.Array, kappa, *, permutation=None) -> ExpertSeparation:
    """The expert-separation constants of Assumption 5.11 (5.9).

    `table[k, j] = P(X ∈ C_k, |f_j(X) − f*_k(X)| < κ)`; a matching `π` is
    admissible with constant `ρ` when `table[k, j] ≤ ρ` for all `k` and
    `j ≠ π(k)`. Returns the matching with the smallest such `ρ`.

    Args:
        model: the student (`.experts`; `.router` unused).
        teacher: a `Teacher`.
        x: `[N, d]` inputs; kappa: separation radius `κ > 0`.
        permutation: optional fixed matching.

    Returns:
        `ExpertSeparation(permutation, rho Estimate, table Estimate [K, K], kappa)`.
    """
    x = check_x(x)
    if not float(kappa) > 0:
        raise ValueError(f"`kappa` must be > 0, got {kappa!r}")
    f, fstar, t = _teacher_outputs(model, teacher, x)
    K = f.shape[1]
    T1 = jax.nn.one_hot(t, K, dtype=f.dtype)
    close = (jnp.abs(f - fstar[:, None]) < kappa).astype(f.dtype)  # [N, K] over j
    per = T1[:, :, None] * close[:, None, :]  # [N, K(teacher), K(student)]
    table = _estimate_mean(per)
    perm = _check_perm(permutation, K)
    off = np.asarray(table.value).copy()
    if perm is None:
        # cost of matching k -> j is the largest off-match entry in row k
        rowmax = np.array([[np.delete(off[k], j).max() for j in range(K)] for k in range(K)])
        perm = _best_permutation(rowmax, "max")
    mask = np.ones((K, K), bool)
    mask[np.arange(K), perm] = False
    flat_idx = int(np.argmax(np.where(mask, off, -np.inf)))
    k, j = divmod(flat_idx, K)
    rho = Estimate(table.value[k, j], table.stderr[k, j])
    return ExpertSeparation(perm, rho, table, float(kappa))


# ----------------------------------------------------------------------------
# hard-risk gradient by the shape derivative, and the transfer gap
# ----------------------------------------------------------------------------


def _top_two_sorted(a: jax.Array):
    idx = jax.lax.top_k(a, 2)[1]  # [N, 2] winner, runner-up
    return jnp.min(idx, axis=1), jnp.max(idx, axis=1)


@jax.jit
def _shape_integrand(model, x, y):
    """Scores `s = a_i − a_j` `[N]` of the top two `i < j` and `g = D ∇_φ s` `[N, Pφ]`."""
    a = jax.vmap(model.router)(x)  # [N, K]
    f = jax.vmap(model.experts)(x)  # [N, K]
    dtype = jnp.result_type(a.dtype, f.dtype, y.dtype)
    i, j = _top_two_sorted(a)
    s = jnp.take_along_axis(a, i[:, None], 1)[:, 0] - jnp.take_along_axis(a, j[:, None], 1)[:, 0]
    fi = jnp.take_along_axis(f, i[:, None], 1)[:, 0]
    fj = jnp.take_along_axis(f, j[:, None], 1)[:, 0]
    contrast = (y - fi) ** 2 - (y - fj) ** 2  # D_ji (5.7)
    flat, unravel = ravel_pytree(model.router)

    def score(p, xn, ii, jj):
        out = unravel(p)(xn)
        return out[ii] - out[jj]

    grad_s = jax.vmap(jax.grad(score), in_axes=(None, 0, 0, 0))(flat, x.astype(flat.dtype), i, j)
    return s.astype(dtype), contrast[:, None].astype(dtype) * grad_s.astype(dtype)


def hard_risk_gradient(
    model, x: jax.Array, y: jax.Array, *, bandwidth=None, bias_check: bool = True
) -> Estimate:
    """Population gradient `∇_φ L_0` of the hard risk by the shape derivative (5.8).

    Hard routing is locally constant on a sample, so the sample gradient of
    `hard_risk` in the router is zero; the population gradient is a surface
    integral over the interfaces (Prop. 5.10, parametric form [X] in
    EQUATIONS.md §5): a router direction `v` moves `S_ij` with normal velocity
    `∂_v s_ij/|∇_x s_ij|`, and by coarea

        D_v L_0 = Σ_{i<j} lim_{h→0} E[k_h(s_ij(X)) 1{{i,j} top two at X}
                                     ((Y − f_i)² − (Y − f_j)²) ∂_v s_ij(X)].

    Because the kernel is even and `|s_ij| = Δ` (2.6) when `{i, j}` are the
    top two, the sum over pairs is one kernel-smoothed mean: with `(i, j)` the
    top two indices at `X` (`i < j`), `s = a_i − a_j` and the integrand
    `g = ((Y − f_i)² − (Y − f_j)²) ∇_φ s_ij(X)` (per-sample autodiff), this
    returns `softhard.coarea.kernel_smoothed_mean(s, g)`: automatic bandwidth,
    standard error including the estimated smoothing bias.

    Where the regression function jumps across the interface (a student
    interface lying on a teacher interface) `L_0` has only one-sided
    derivatives (the trace is taken from the side being taken over, (5.8));
    the symmetric kernel then returns their average.

    Error: for `K ≥ 3` the level-set profile `t ↦ E[g | s = t] G(t)` has a
    kink at `t = 0` from the triple junctions (the top-two pair changes along
    rays ending there), which gives an `O(h)` smoothing bias that the
    second-order bias estimate of `kernel_smoothed_mean` does not see (about
    two standard errors, 5% of the gradient, at N = 2^21 in the tests). With
    `bias_check=True` (default) the difference between the estimates at
    bandwidths `h` and `2h` is added in quadrature to the standard error,
    which covers it (and makes the stated error conservative for `K = 2`).

    Args:
        model: MoE-like pytree with `.router` (any router) and `.experts`.
        x: `[N, d]` inputs; y: `[N]` responses, a sample of `(X, Y)`.
        bandwidth: kernel bandwidth (`None`: automatic, per component).
        bias_check: add the `h` vs `2h` difference to the standard error.

    Returns:
        `Estimate` whose `value` and `stderr` are pytrees shaped like `model.router`.
    """
    x, y = check_xy(x, y)
    check_finite_params(model, "model")
    logits(model.router, x[:1])  # validates the router's output shape
    expert_outputs(model.experts, x[:1])
    s, g = _shape_integrand(model, x, y)
    flat, unravel = ravel_pytree(model.router)
    est = kernel_smoothed_mean(s, g, bandwidth=bandwidth)
    value, stderr = est.value, est.stderr
    if bias_check:
        h = kernel_bandwidth(s, g) if bandwidth is None else bandwidth
        wide = kernel_smoothed_mean(s, g, bandwidth=2.0 * jnp.asarray(h, g.dtype))
        stderr = jnp.sqrt(stderr**2 + (wide.value - value) ** 2)
    return Estimate(unravel(value.astype(flat.dtype)), unravel(stderr.astype(flat.dtype)))


def _loglog_slope(taus, values) -> float:
    t, v = np.asarray(taus, np.float64), np.asarray(values, np.float64)
    ok = (t > 0) & (v > 0) & np.isfinite(v)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(t[ok]), np.log(v[ok]), 1)[0])


def transfer_gap(model, x: jax.Array, y: jax.Array, taus: jax.Array, *, bandwidth=None):
    """Gradient transfer `‖∇L_τ − ∇L_0‖` by block (Assumption 5.13) and its rate as τ → 0.

    Router block: `∇_φ L_τ` is the sample gradient of `soft_risk`, `∇_φ L_0`
    the shape-derivative estimate `hard_risk_gradient` (5.8). Expert block:
    both gradients are ordinary and exact on the sample (`∇_θ L_0` is the
    gradient of `hard_risk` with the hard partition fixed). The rates are the
    slopes of least-squares fits of `log gap` on `log τ`; Assumption 5.13
    asks for `ω(τ) → 0`, and for a regular router both blocks are `O(τ)`
    (slope 1) until the sample-noise floor (`router_stderr`) is reached.

    Args:
        model: MoE-like pytree with `.router` and `.experts`.
        x: `[N, d]`, y: `[N]` a sample of `(X, Y)`.
        taus: `[T]` temperatures `> 0`.
        bandwidth: passed to `hard_risk_gradient`.

    Returns:
        `TransferGap(taus, router, router_stderr, experts, total, router_rate,
        experts_rate, total_rate)`.
    """
    x, y = check_xy(x, y)
    taus = check_taus(taus)
    hard_r = hard_risk_gradient(model, x, y, bandwidth=bandwidth)
    hr, _ = ravel_pytree(hard_r.value)
    hse, _ = ravel_pytree(hard_r.stderr)
    he = ravel_pytree(jax.grad(hard_risk)(model, x, y).experts)[0]

    def soft(t):
        g = jax.grad(soft_risk)(model, x, y, t)
        return ravel_pytree(g.router)[0], ravel_pytree(g.experts)[0]

    sr, se = jax.lax.map(soft, taus.astype(hr.dtype))  # [T, Pφ], [T, Pθ]
    dr = sr - hr[None, :]
    router = jnp.linalg.norm(dr, axis=1)
    unit = dr / jnp.where(router > 0, router, 1.0)[:, None]
    router_se = jnp.sqrt(jnp.sum(unit**2 * hse[None, :] ** 2, axis=1))
    experts = jnp.linalg.norm(se - he[None, :], axis=1)
    total = jnp.sqrt(router**2 + experts**2)
    return TransferGap(
        taus,
        router,
        router_se,
        experts,
        total,
        _loglog_slope(taus, router),
        _loglog_slope(taus, experts),
        _loglog_slope(taus, total),
    )


# ----------------------------------------------------------------------------
# the Theorem 5.17 experiment
# ----------------------------------------------------------------------------


def _soft_objective(model, x, y, tau):
    return soft_risk(model, x, y, tau)


def strict_saddle_report(
    teacher,
    student_family: Callable,
    taus: jax.Array,
    *,
    law,
    key: jax.Array,
    num_samples: int = 4096,
    num_eval: int = 1 << 16,
    num_inits: int = 6,
    extra_inits: Sequence = (),
    objective: Callable | None = None,
    kind: str = "any",
    equivalence_tol=None,
    empty_cell_tol: float = 1e-3,
    **find_kwargs,
) -> SaddleReport:
    """The Theorem 5.17 experiment on one teacher–student instance.

    For every temperature, the critical points of the sample objective
    `L_τ` (default `soft_risk` on `num_samples` teacher samples, the same
    sample at every τ) are searched from `num_inits` random students
    (`student_family(key)`) plus `extra_inits` (e.g. hand-built symmetric
    points), with `find_critical_points(kind=kind)`. Each is classified
    (`classify_critical_point`, gauge-fixed), its hard partition compared
    with the teacher's on a fresh sample of `num_eval` inputs
    (`teacher_equivalence`; "equivalent" when `Σ_k P(C_k Δ C_π(k)) ≤
    equivalence_tol`, by default `0.05 + τ/2`: at τ > 0 the minimiser's
    partition is only `O(τ)`-close, while a wrong partition misroutes a fixed
    mass), and its recovery errors computed (`recovery_error`). The theorem's
    dichotomy holds when every non-equivalent critical point is a strict
    saddle (and so every minimum is equivalent). Non-equivalent critical
    points that are not strict saddles but have an (almost) empty hard cell,
    `min_k P(C_k(φ)) < empty_cell_tol` (a dead expert: its parameters and the
    interfaces that could revive it have curvature exponentially small in
    `1/τ`), violate Assumption 5.14 (no unique expert minimiser on an empty
    cell); they are marked outside the theorem (`consistent = None`) rather
    than counted.
    Finally the recovery errors of the global minimiser (lowest loss) are
    fitted against τ on log-log axes ((5.16–5.17) predict `O(τ)`).

    Students should have a bounded sharpness (e.g. `NormalizedRouter`): with
    a free linear router and a realisable teacher `L_τ` has no finite minimiser.

    Args:
        teacher: a `Teacher`.
        student_family: `key -> model`, a random student initialisation.
        taus: `[T]` temperatures.
        law: the input law (`.sample(key, n)`).
        key: PRNG key (data, evaluation sample and initialisations).
        num_samples: training-sample size defining `L_τ`.
        num_eval: evaluation-sample size for partitions and recovery errors.
        num_inits: random initialisations per temperature (the same at every τ).
        extra_inits: further starting points.
        objective: `(model, x, y, tau) -> scalar` (default `soft_risk`).
        kind: passed to `find_critical_points` (`"any"` finds minima and saddles).
        equivalence_tol: partition-mismatch mass counted as equivalent
            (default `0.05 + τ/2`).
        empty_cell_tol: hard-cell mass below which an expert counts as dead.
        **find_kwargs: further options for `find_critical_points`.

    Returns:
        `SaddleReport(rows, recovery, consistent)`; print with `format_report`.
    """
    taus = check_taus(taus)
    objective = objective or _soft_objective
    k_data, k_eval, k_init = jax.random.split(key, 3)
    x, y = teacher.sample(k_data, law, int(num_samples))
    x_ev = teacher.sample(k_eval, law, int(num_eval))[0]
    if int(num_inits) < 0:
        raise ValueError(f"`num_inits` must be >= 0, got {num_inits!r}")
    keys = jax.random.split(k_init, int(num_inits)) if int(num_inits) > 0 else []
    inits = [student_family(k) for k in keys] + list(extra_inits)
    if not inits:
        raise ValueError("no starting points: `num_inits` is 0 and `extra_inits` is empty")
    K = int(logits(teacher.router, x[:1]).shape[1])

    def loss(p, xx, yy, t):
        return objective(p, xx, yy, t)

    rows, rec = [], {k: [] for k in ("expert_error", "expert_error_stderr")}
    rec.update({"partition_error": [], "partition_error_stderr": []})
    for tau in np.asarray(taus).tolist():
        t = jnp.asarray(tau, x.dtype)
        cps = find_critical_points(loss, inits, args=(x, y, t), kind=kind, **find_kwargs)
        best = None
        for n, cp in enumerate(cps):
            cls = classify_critical_point(loss, cp.params, args=(x, y, t))
            teq = teacher_equivalence(cp.params, teacher, x_ev)
            r = recovery_error(cp.params, teacher, x_ev)
            etol = 0.05 + 0.5 * tau if equivalence_tol is None else float(equivalence_tol)
            equiv = float(teq.total.value) <= etol
            cell_mass = float(np.min(teq.confusion.sum(0)))
            ok = equiv or cls.kind == "strict saddle"
            if not ok and cell_mass < empty_cell_tol:
                ok = None  # a dead expert: outside Assumption 5.14
            row = {
                "K": K,
                "tau": float(tau),
                "point": n,
                "count": cp.count,
                "loss": cp.loss,
                "grad_norm": cp.grad_norm,
                "kind": cls.kind,
                "lambda_min": cls.lambda_min,
                "lambda_max": cls.lambda_max,
                "index": cls.num_negative,
                "partition_error": float(teq.total.value),
                "teacher_equivalent": equiv,
                "min_cell_mass": cell_mass,
                "permutation": tuple(int(v) for v in teq.permutation),
                "expert_error": float(r.expert_error.value),
                "consistent": ok,
                "global_min": False,
            }
            rows.append(row)
            if best is None or cp.loss < best[0]:
                best = (cp.loss, len(rows) - 1, r)
        if best is None:
            for key_ in rec:
                rec[key_].append(np.nan)
            continue
        rows[best[1]]["global_min"] = True
        r = best[2]
        rec["expert_error"].append(float(r.expert_error.value))
        rec["expert_error_stderr"].append(float(r.expert_error.stderr))
        rec["partition_error"].append(float(r.partition_error.value))
        rec["partition_error_stderr"].append(float(r.partition_error.stderr))
    recovery = {k: np.asarray(v) for k, v in rec.items()}
    recovery["taus"] = np.asarray(taus)
    recovery["expert_rate"] = _loglog_slope(taus, recovery["expert_error"])
    recovery["partition_rate"] = _loglog_slope(taus, recovery["partition_error"])
    consistent = bool(rows) and all(row["consistent"] is not False for row in rows)
    return SaddleReport(rows, recovery, consistent)


def format_report(report: SaddleReport) -> str:
    """A plain-text table of a `SaddleReport`: one line per critical point, then the rates."""
    head = (
        f"{'K':>2} {'tau':>6} {'#':>2} {'hits':>4} {'loss':>10} {'|grad|':>8} {'kind':>13} "
        f"{'lam_min':>10} {'lam_max':>9} {'idx':>3} {'P(CΔC)':>8} {'equiv':>5} "
        f"{'perm':>9} {'min cell':>8} {'exp.err':>9} {'ok':>3}"
    )
    lines = [head, "-" * len(head)]
    for r in report.rows:
        star = "*" if r["global_min"] else " "
        lines.append(
            f"{r['K']:>2} {r['tau']:>6.3f} {r['point']:>2}{star}{r['count']:>4} "
            f"{r['loss']:>10.6f} {r['grad_norm']:>8.1e} {r['kind']:>13} "
            f"{r['lambda_min']:>10.3e} {r['lambda_max']:>9.3e} {r['index']:>3} "
            f"{r['partition_error']:>8.4f} {str(r['teacher_equivalent']):>5} "
            f"{str(r['permutation']):>9} {r['min_cell_mass']:>8.4f} {r['expert_error']:>9.2e} "
            f"{ {True: 'yes', False: 'NO', None: 'n/a'}[r['consistent']]:>3}"
        )
    rec = report.recovery
    lines.append("")
    lines.append("global minimiser (*) recovery vs tau:")
    lines.append(f"{'tau':>8} {'expert err (5.16)':>20} {'partition err (5.17)':>22}")
    for i, t in enumerate(np.asarray(rec["taus"]).tolist()):
        lines.append(
            f"{t:>8.3f} {rec['expert_error'][i]:>11.3e} ± {rec['expert_error_stderr'][i]:.1e} "
            f"{rec['partition_error'][i]:>12.4e} ± {rec['partition_error_stderr'][i]:.1e}"
        )
    lines.append(
        f"log-log slopes: expert error {rec['expert_rate']:.2f}, "
        f"partition error {rec['partition_rate']:.2f}"
    )
    lines.append(
        "Theorem 5.17 dichotomy (non-equivalent => strict saddle) on every critical point "
        f"with no empty cell: {report.consistent}"
    )
    return "\n".join(lines)
