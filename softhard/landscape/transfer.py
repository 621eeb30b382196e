"""Gradient transfer: the hard-risk gradient by the shape derivative and the transfer gap (§5).

`hard_risk_gradient` estimates the population gradient `∇_φ L_0` of the hard
risk in the router parameters as a surface integral over the interfaces
(5.8), through `softhard.coarea.kernel_smoothed_mean`; `transfer_gap`
compares it (and the expert block, exact on the sample) with the soft
gradient `∇L_τ` over a temperature grid (Assumption 5.13) and fits the rate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._stats import Estimate
from .._trees import combine, filter_jit, partition, ravel_arrays
from .._validate import check_finite_params, check_taus, check_xy
from ..coarea import kernel_bandwidth, kernel_smoothed_mean
from ..models import require_top1
from ..risk import hard_risk, soft_risk
from ..routing import expert_outputs, logits

__all__ = ["TransferGap", "hard_risk_gradient", "transfer_gap", "loglog_slope"]


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


def _top_two_sorted(a: jax.Array):
    idx = jax.lax.top_k(a, 2)[1]  # [N, 2] winner, runner-up
    return jnp.min(idx, axis=1), jnp.max(idx, axis=1)


@filter_jit
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
    flat, unravel = ravel_arrays(model.router)

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
    require_top1(model, "hard_risk_gradient")
    x, y = check_xy(x, y)
    check_finite_params(model, "model")
    logits(model.router, x[:1])  # validates the router's output shape
    expert_outputs(model.experts, x[:1])
    s, g = _shape_integrand(model, x, y)
    flat, unravel = ravel_arrays(model.router)
    est = kernel_smoothed_mean(s, g, bandwidth=bandwidth)
    value, stderr = est.value, est.stderr
    if bias_check:
        h = kernel_bandwidth(s, g) if bandwidth is None else bandwidth
        wide = kernel_smoothed_mean(s, g, bandwidth=2.0 * jnp.asarray(h, g.dtype))
        stderr = jnp.sqrt(stderr**2 + (wide.value - value) ** 2)
    return Estimate(unravel(value.astype(flat.dtype)), unravel(stderr.astype(flat.dtype)))


def _array_grad(fn, model, *args):
    """`∇ fn(model, *args)` in the inexact-array leaves of `model` (`None` at the others)."""
    params, static = partition(model)
    return jax.grad(lambda p: fn(combine(p, static), *args))(params)


def loglog_slope(taus, values) -> float:
    """Least-squares slope of `log values` on `log taus` over the positive, finite points.

    `taus, values: [T]`; NaN when fewer than two points qualify.
    """
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
    require_top1(model, "transfer_gap")
    x, y = check_xy(x, y)
    taus = check_taus(taus)
    hard_r = hard_risk_gradient(model, x, y, bandwidth=bandwidth)
    hr, _ = ravel_arrays(hard_r.value)
    hse, _ = ravel_arrays(hard_r.stderr)
    he = ravel_arrays(_array_grad(hard_risk, model, x, y).experts)[0]

    def soft(t):
        g = _array_grad(soft_risk, model, x, y, t)
        return ravel_arrays(g.router)[0], ravel_arrays(g.experts)[0]

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
        loglog_slope(taus, router),
        loglog_slope(taus, experts),
        loglog_slope(taus, total),
    )
