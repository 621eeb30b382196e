"""The Theorem 4.5 certificate and the Theorem 4.7 check (§4).

`soft_hard_bound` is the explicit bound (4.5)–(4.8) on `|L_τ − L_0|` from
the margin-tail constants of Assumption 4.2; `certify` reads those constants
off a sample (the margin-tail fit of `softhard.boundary`) and puts the bound
next to the measured gap; `gamma_check` tests Theorem 4.7 (Γ-convergence and
almost-minimisers) on a compact parameter box.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._stats import Estimate
from ._validate import (
    check_count,
    check_finite_params,
    check_nonnegative,
    check_positive,
    check_tau_grid,
    check_taus,
    check_xy,
)
from .boundary import MarginTail, margin_tail_fit, tail_widths
from .models import require_top1
from .risk import hard_risk, risk_sweep, soft_risk
from .routing import expert_outputs, logits, top_two_margin

__all__ = [
    "soft_hard_bound",
    "certify",
    "Certificate",
    "gamma_check",
    "GammaCheck",
]


def soft_hard_bound(tau, B_Y, B_f, K, C_m, alpha, w0) -> jax.Array:
    """The explicit Theorem 4.5 certificate on `|L_τ − L_0|` (4.5)–(4.8).

        |L_τ − L_0| ≤ 4 B_f (B_Y + B_f) (K − 1) [C_m Γ(α+1) τ^α + e^{−w_0/τ}]

    from `|L_τ − L_0| ≤ 2(B_Y + B_f) E|f_τ − f_0|` (4.6), `|f_τ − f_0| ≤ 2 B_f (1 − π_{k*}^τ)`
    (4.7), Lemma 4.1 and `E[e^{−Δ/τ}] ≤ C_m Γ(α+1) τ^α + e^{−w_0/τ}` under the
    margin tail `P(Δ ≤ w) ≤ C_m w^α`, `0 < w ≤ w_0` (4.4). It is not capped
    at the trivial bound `4 B_f (B_Y + B_f)`. Data-driven constants:
    `certify`.

    Args:
        tau: temperature `> 0`, scalar or `[T]`.
        B_Y: `≥ 0`, bound on `|Y|`; B_f: `≥ 0`, bound on every `|f_k|` (Assumption 4.3).
        K: number of experts, integer `≥ 2`.
        C_m: `≥ 0`; alpha: `≥ 0`; w0: `> 0` (Assumption 4.2).

    Returns:
        the bound, with the shape of `tau`.

    >>> round(float(soft_hard_bound(0.1, 1.0, 1.0, 2, 1.0, 1.0, 1.0)), 6)  # 8 (0.1 + e^{-10})
    0.800363
    """
    tau = check_tau_grid(tau)
    k = check_count(K, "K", 2)
    for v, name in ((B_Y, "B_Y"), (B_f, "B_f"), (C_m, "C_m"), (alpha, "alpha")):
        check_nonnegative(v, name)
    check_positive(w0, "w0")
    dtype = jnp.result_type(tau.dtype, float)
    tau = tau.astype(dtype)
    alpha = jnp.asarray(alpha, dtype)
    tail = C_m * jnp.exp(jax.scipy.special.gammaln(alpha + 1.0) + alpha * jnp.log(tau))
    return 4.0 * B_f * (B_Y + B_f) * (k - 1) * (tail + jnp.exp(-w0 / tau))


class Certificate(NamedTuple):
    """Theorem 4.5 on a sample, next to the gap it bounds.

    Attributes:
        bound: `[T]` the certificate `4 B_f (B_Y + B_f)(K−1)[C_m Γ(α+1) τ^α + e^{−w0/τ}]`.
        gap: `Estimate` `[T]` of `L_τ − L_0` (from `risk_sweep`), for comparison.
        tail: the `MarginTail` fit that supplied `(C_m = C_env, α, w0)`.
        B_Y: the bound on `|Y|` used; B_f: the bound on `|f_k|` used.
    """

    bound: jax.Array  # [T]
    gap: Estimate  # [T]
    tail: MarginTail
    B_Y: jax.Array  # scalar
    B_f: jax.Array  # scalar


def certify(
    model,
    x: jax.Array,
    y: jax.Array,
    taus,
    *,
    ws=None,
    B_Y=None,
    B_f=None,
    z: float = 2.0,
) -> Certificate:
    """The Theorem 4.5 certificate with its constants read off the data.

    `(C_m, α, w_0)` come from `margin_tail_fit` of the model's top-two margins
    (`C_m` is the envelope `C_env`, so `M(w) ≤ C_m w^α` on the fitted range
    `[w_1, w_0]`); by default the widths are 12 geometric points between the
    `max(200/N, 10⁻³)` and 25 % quantiles of `Δ`. `B_Y = max_n |y_n|` and
    `B_f = max_{n,k} |f_k(x_n)|` unless given (Assumption 4.3; on the sample
    these are exact bounds). The certificate is then `soft_hard_bound` (4.5–4.8).
    The power law is extrapolated below `w_1`, which the sample cannot check.

    Args:
        model: pytree with `.router` and `.experts` (bounded experts, e.g. clipped).
        x: `[N, d]`; y: `[N]`; taus: `[T]` temperatures `> 0`.
        ws: `[W]` widths for the tail fit, or `None` for the default grid.
        B_Y, B_f: bounds `≥ 0`, or `None` to take the sample maxima.
        z: confidence multiplier for the envelope `C_env`.

    Returns:
        `Certificate(bound, gap, tail, B_Y, B_f)`.
    """
    require_top1(model, "certify")
    x, y = check_xy(x, y)
    taus = check_taus(taus)
    check_finite_params(model, "model")
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y = x.astype(dtype), y.astype(dtype)
    a = logits(model.router, x)
    f = expert_outputs(model.experts, x)
    if ws is None:
        ws = tail_widths(np.asarray(top_two_margin(a), dtype=np.float64))
    tail = margin_tail_fit(a, ws, z=z)
    b_y = jnp.max(jnp.abs(y)) if B_Y is None else jnp.asarray(B_Y, dtype)
    b_f = jnp.max(jnp.abs(f)) if B_f is None else jnp.asarray(B_f, dtype)
    alpha = jnp.maximum(tail.alpha.value, 0.0)
    bound = soft_hard_bound(taus, b_y, b_f, a.shape[1], tail.C_env, alpha, tail.w0)
    gap = risk_sweep(model, x, y, taus).gap
    return Certificate(bound, gap, tail, b_y, b_f)


# ----------------------------------------------------------------------------
# Theorem 4.7 on a parameter box
# ----------------------------------------------------------------------------


class GammaCheck(NamedTuple):
    """Theorem 4.7 on a compact box, measured on a sample.

    Attributes:
        sup_gap: `[T]` `max |L̂_τ − L̂_0|` over the box found by projected ascent.
        certificate: `[T]` the Theorem 4.5 certificate at the maximiser (margin
            tail fitted there, or the constants given); `≥ sup_gap` if the theorem holds.
        maximisers: the maximising parameters, a model pytree with leading axis `[T]`.
        soft_min: `[T]` `min L̂_τ` over the box found by projected descent.
        hard_at_soft_min: `[T]` `L̂_0` at that minimiser.
        hard_min: scalar, the smallest `L̂_0` seen (at every minimiser, and at
            `reference` if given): the stand-in for `min L_0`.
        excess: `[T]` `hard_at_soft_min − hard_min`, which (iii) says → 0 as τ → 0.
    """

    sup_gap: jax.Array  # [T]
    certificate: jax.Array  # [T]
    maximisers: object  # model pytree, leaves [T, ...]
    soft_min: jax.Array  # [T]
    hard_at_soft_min: jax.Array  # [T]
    hard_min: jax.Array  # []
    excess: jax.Array  # [T]


def _box_leaves(bound, params, name: str) -> list:
    """Box bound -> list of arrays shaped like the leaves of `params`."""
    leaves, treedef = jax.tree.flatten(params)
    scalar = isinstance(bound, (int, float, np.number)) or (
        isinstance(bound, (np.ndarray, jax.Array)) and bound.ndim == 0
    )
    if scalar:
        return [jnp.broadcast_to(jnp.asarray(bound, p.dtype), p.shape) for p in leaves]
    if jax.tree.structure(bound) != treedef:
        raise ValueError(
            f"`{name}` must be a scalar or a pytree shaped like `model`, got {type(bound).__name__}"
        )
    out = []
    for p, b in zip(leaves, jax.tree.leaves(bound)):
        try:
            out.append(jnp.broadcast_to(jnp.asarray(b, p.dtype), p.shape))
        except ValueError as e:
            raise ValueError(f"`{name}` has a leaf of shape {jnp.shape(b)} for {p.shape}") from e
    return out


class _GammaRuns(NamedTuple):
    maximisers: object  # model pytree, leaves [T, ...]
    sup_gap: jax.Array  # [T]
    soft_min: jax.Array  # [T]
    hard_at_soft_min: jax.Array  # [T]
    hard_min: jax.Array  # [] smallest L̂_0 over every minimiser run


@functools.partial(jax.jit, static_argnames=("n_starts", "steps"))
def _gamma_runs(model, lo, hi, x, y, taus, lr, key, *, n_starts, steps) -> _GammaRuns:
    # starts: `model` clipped into the box, then n_starts uniform points of the box
    leaves, treedef = jax.tree.flatten(model)
    keys = jax.random.split(key, len(leaves))
    starts = []
    for k, p, a, b in zip(keys, leaves, jax.tree.leaves(lo), jax.tree.leaves(hi)):
        u = jax.random.uniform(k, (n_starts,) + p.shape, dtype=x.dtype)
        starts.append(jnp.concatenate([jnp.clip(p, a, b)[None], a[None] + u * (b - a)[None]]))
    starts = jax.tree.unflatten(treedef, starts)
    opt = optax.adam(lr)

    def objective(params, tau, ascent):
        # ascent: minimise −|L̂_τ − L̂_0|; else minimise L̂_τ (one compilation for both)
        soft = soft_risk(params, x, y, tau)
        gap = soft - hard_risk(params, x, y)
        return jnp.where(ascent, -jnp.abs(gap), soft)

    def run(params, tau, ascent):
        def step(carry, _):
            p, st = carry
            g = jax.grad(objective)(p, tau, ascent)
            upd, st = opt.update(g, st, p)
            p = optax.projections.projection_box(optax.apply_updates(p, upd), lo, hi)
            return (p, st), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return p, objective(p, tau, ascent), hard_risk(p, x, y)

    per_start = jax.vmap(run, in_axes=(0, None, None))
    per_tau = jax.vmap(per_start, in_axes=(None, 0, None))
    both = jax.vmap(per_tau, in_axes=(None, None, 0))
    params, obj, hard = both(starts, taus, jnp.array([True, False]))  # leaves [2, T, S, ...]

    def pick(leaf, idx):  # leaf [T, S, ...], idx [T]
        return jax.vmap(lambda lf, i: lf[i])(leaf, idx)

    up = jnp.argmin(obj[0], axis=1)  # the largest |gap|
    dn = jnp.argmin(obj[1], axis=1)  # the smallest L̂_τ
    return _GammaRuns(
        maximisers=jax.tree.map(lambda leaf: pick(leaf[0], up), params),
        sup_gap=-pick(obj[0], up),
        soft_min=pick(obj[1], dn),
        hard_at_soft_min=pick(hard[1], dn),
        hard_min=jnp.min(hard[1]),
    )


def gamma_check(
    model,
    x: jax.Array,
    y: jax.Array,
    taus,
    *,
    lower,
    upper,
    key: jax.Array,
    n_starts: int = 4,
    steps: int = 300,
    learning_rate: float = 0.05,
    reference=None,
    tail=None,
    B_Y=None,
    B_f=None,
) -> GammaCheck:
    """Theorem 4.7 (Γ-convergence) on a compact parameter box, on a sample.

    Uniform convergence (4.9): for each τ, `sup_box |L̂_τ − L̂_0|` is sought by
    projected gradient ascent (`optax.adam` followed by
    `optax.projections.projection_box`) from `model` (clipped into the box) and
    `n_starts` uniform starts, and compared with the Theorem 4.5 certificate at
    the maximiser. On a sample `L̂_0` is piecewise constant in the router, so
    its router gradient is zero and the ascent moves the router through `L̂_τ`
    only; the experts must be bounded (e.g. clipped) for Assumption 4.3.

    Almost-minimisers (iii): for each τ, `L̂_τ` is minimised over the box the
    same way, and `L̂_0` is evaluated at the best minimiser; `excess` is its
    distance to the smallest `L̂_0` seen (including `reference`, e.g. a teacher
    known to minimise `L_0`), which should shrink as τ → 0. All runs (both
    problems, every τ and start) are one `vmap` and one compilation.

    Args:
        model: pytree with `.router` and `.experts`; every leaf is a parameter.
        x: `[N, d]`; y: `[N]`; taus: `[T]` temperatures `> 0`.
        lower, upper: finite box bounds, scalars or pytrees shaped like `model`.
        key: PRNG key for the starts.
        n_starts: random starts per τ (`≥ 1`).
        steps: optimiser steps per run; learning_rate: Adam step size.
        reference: optional model pytree whose `L̂_0` is a candidate for `min L_0`.
        tail: `None` to fit the margin tail at each maximiser (`certify`'s
            defaults), or `(C_m, alpha, w0)` valid on the whole box.
        B_Y, B_f: bounds for the certificate, or `None` for the sample maxima.

    Returns:
        `GammaCheck(sup_gap, certificate, maximisers, soft_min, hard_at_soft_min,
        hard_min, excess)`.
    """
    require_top1(model, "gamma_check")
    x, y = check_xy(x, y)
    taus = check_taus(taus)
    check_finite_params(model, "model")
    if int(n_starts) < 1:
        raise ValueError(f"`n_starts` must be >= 1, got {n_starts!r}")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps!r}")
    if not float(learning_rate) > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate!r}")
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y, taus = x.astype(dtype), y.astype(dtype), taus.astype(dtype)
    leaves, treedef = jax.tree.flatten(model)
    lo_leaves = _box_leaves(lower, model, "lower")
    hi_leaves = _box_leaves(upper, model, "upper")
    for name, vals in (("lower", lo_leaves), ("upper", hi_leaves)):
        if not all(bool(np.all(np.isfinite(np.asarray(v)))) for v in vals):
            raise ValueError(f"`{name}` must be finite (a compact box)")
    if not all(bool(np.all(np.asarray(u) > np.asarray(v))) for u, v in zip(hi_leaves, lo_leaves)):
        raise ValueError("`upper` must be > `lower` in every coordinate")
    lo = jax.tree.unflatten(treedef, [v.astype(dtype) for v in lo_leaves])
    hi = jax.tree.unflatten(treedef, [v.astype(dtype) for v in hi_leaves])
    model = jax.tree.unflatten(treedef, [jnp.asarray(p, dtype) for p in leaves])

    lr = jnp.asarray(learning_rate, dtype)
    runs = _gamma_runs(model, lo, hi, x, y, taus, lr, key, n_starts=int(n_starts), steps=int(steps))

    cert = []
    for t in range(taus.shape[0]):
        m_t = jax.tree.map(lambda leaf, t=t: leaf[t], runs.maximisers)
        if tail is None:
            c = certify(m_t, x, y, taus[t : t + 1], B_Y=B_Y, B_f=B_f).bound[0]
        else:
            C_m, alpha, w0 = tail
            f = expert_outputs(m_t.experts, x)
            b_y = jnp.max(jnp.abs(y)) if B_Y is None else B_Y
            b_f = jnp.max(jnp.abs(f)) if B_f is None else B_f
            c = soft_hard_bound(taus[t], b_y, b_f, f.shape[1], C_m, alpha, w0)
        cert.append(c)

    hard_min = runs.hard_min
    if reference is not None:
        hard_min = jnp.minimum(hard_min, hard_risk(reference, x, y))
    return GammaCheck(
        sup_gap=runs.sup_gap,
        certificate=jnp.stack(cert),
        maximisers=runs.maximisers,
        soft_min=runs.soft_min,
        hard_at_soft_min=runs.hard_at_soft_min,
        hard_min=hard_min,
        excess=runs.hard_at_soft_min - hard_min,
    )
