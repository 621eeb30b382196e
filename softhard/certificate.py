"""The Theorem 4.5 certificate and the Theorem 4.7 check (§4; top-k: T.8–T.10).

`soft_hard_bound` is the explicit bound (4.5)–(4.8) on `|L_τ − L_0|` from
the margin-tail constants of Assumption 4.2, for top-k routing (T.10) and a
finite combine temperature (T.9, derived in its docstring; `gate_tv_bound` is
its gate-level step); `certify` reads those constants
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

from . import _gating
from ._stats import Estimate
from ._validate import (
    check_count,
    check_finite_params,
    check_finite_rows,
    check_k,
    check_nonnegative,
    check_positive,
    check_tau_grid,
    check_taus,
    check_xy,
)
from .boundary import MarginTail, margin_tail_fit
from .models import routing_of, selection_scores
from .risk import hard_risk, risk_sweep, soft_risk
from .routing import expert_outputs, logits

__all__ = [
    "soft_hard_bound",
    "gate_tv_bound",
    "certify",
    "Certificate",
    "gamma_check",
    "GammaCheck",
]


def soft_hard_bound(
    tau,
    B_Y,
    B_f,
    K,
    C_m,
    alpha,
    w0,
    *,
    k: int = 1,
    rho=None,
    logit_range=None,
    weight_ratio=None,
) -> jax.Array:
    """The explicit Theorem 4.5 certificate on `|L_τ − L_0|` (4.5)–(4.8); top-k: T.9, T.10.

    Top-1 (`k = 1`, `rho=None`), Theorem 4.5:

        |L_τ − L_0| ≤ 4 B_f (B_Y + B_f) (K − 1) [C_m Γ(α+1) τ^α + e^{−w_0/τ}]

    from `|L_τ − L_0| ≤ 2(B_Y + B_f) E|f_τ − f_0|` (4.6), `|f_τ − f_0| ≤ 2 B_f (1 − π_{k*}^τ)`
    (4.7), Lemma 4.1 and `E[e^{−Δ/τ}] ≤ C_m Γ(α+1) τ^α + e^{−w_0/τ}` under the
    margin tail `P(Δ ≤ w) ≤ C_m w^α`, `0 < w ≤ w_0` (4.4). It is not capped
    at the trivial bound `4 B_f (B_Y + B_f)`. Data-driven constants: `certify`.

    Top-k, `ρ = ∞` (`rho=None`), T.10 with the tail of `Δ_k` (T.1): the
    weights are `μ^τ/k` and `1_{S_k}/k`, so `‖w^τ − w^0‖_1 = 2ε/k` with
    `ε = Σ_{j∉S_k} μ_j^τ ≤ (K − k) e^{−Δ_k/τ}` (T.8), and

        |L_τ − L_0| ≤ 4 B_f (B_Y + B_f) ((K − k)/k) [C_m Γ(α+1) τ^α + e^{−w_0/τ}].

    Finite combine temperature `ρ` (T.9; derived here). Write `c_j = e^{a_j/ρ}`
    (T.4), `u_j = μ_j^τ c_j`, `U = Σ u_j`, `U_0 = Σ_{j∈S_k} c_j`, `A = Σ_{j∈S_k}
    (1 − μ_j^τ) c_j`, `B = Σ_{j∉S_k} μ_j^τ c_j`, so `U = U_0 − A + B`. For the
    two probability vectors `w^τ = u/U`, `w^0 = c 1_{S_k}/U_0`:
    if `U ≥ U_0`, `‖w^τ − w^0‖_1 = 2 Σ_{j∈S_k} (w^0_j − w^τ_j)_+ ≤ 2B/U ≤ 2B/U_0`;
    if `U < U_0`, `‖w^τ − w^0‖_1 = 2 Σ_j (w^τ_j − w^0_j)_+ ≤ 2A/U ≤ 2A/(U_0 − A)`.
    Both `A, B ≤ ε ĉ` with `ĉ = max_l c_l` (`ε` as above; `Σ_{S_k}(1 − μ_j) = ε`
    too), hence with the weight ratio `r = ĉ/U_0`

        ‖w^τ − w^0‖_1 ≤ min(2, 2rε/(1 − rε)) ≤ 4 r ε            (the gate bound)

    (`min(2, 2x/(1 − x)) ≤ 4x` for all `x ≥ 0`). Since the weights sum to 1,
    `|f_τ − f_0| = |Σ_j (w^τ_j − w^0_j) f_j| ≤ B_f ‖w^τ − w^0‖_1 ≤ 4 B_f r (K − k) e^{−Δ_k/τ}`,
    and (4.6) with the tail integral gives

        |L_τ − L_0| ≤ 8 B_f (B_Y + B_f) r (K − k) [C_m Γ(α+1) τ^α + e^{−w_0/τ}].

    `r`: `weight_ratio` if given (an upper bound on `max_l c_l / Σ_{j∈S_k} c_j`
    over inputs; `≥ 1/k`); otherwise, when experts are selected on the combine
    logits themselves (no `selection` map, or an order-preserving one), `ĉ`
    is a selected weight and `r ≤ 1`, and a bound `R ≥ max_{j∈S_k} a_j −
    min_{j∈S_k} a_j` on the selected logits' spread (`logit_range`) gives
    `r ≤ 1/(1 + (k − 1) e^{−R/ρ})` (→ 1/k as ρ → ∞). With `k = 1`, no
    `weight_ratio`: `μ_j^τ c_j ∝ e^{a_j (1/τ + 1/ρ)}`, the softmax at
    `τ' = τρ/(τ + ρ) < τ`, so Theorem 4.5 at `τ'` (it increases in τ) is used.
    A selection map that reorders (a per-expert bias) needs `weight_ratio`.

    Args:
        tau: temperature `> 0`, scalar or `[T]`.
        B_Y: `≥ 0`, bound on `|Y|`; B_f: `≥ 0`, bound on every `|f_k|` (Assumption 4.3).
        K: number of experts, integer `≥ 2`.
        C_m: `≥ 0`; alpha: `≥ 0`; w0: `> 0` (Assumption 4.2, for `Δ_k`).
        k: experts per input, `1 <= k < K`.
        rho: combine temperature `> 0`, or `None` for ρ = ∞ (T.4).
        logit_range: `None` or `R ≥ 0` (finite `rho` only), see above.
        weight_ratio: `None` or `r ≥ 1/k` (finite `rho` only), see above.

    Returns:
        the bound, with the shape of `tau`.

    >>> round(float(soft_hard_bound(0.1, 1.0, 1.0, 2, 1.0, 1.0, 1.0)), 6)  # 8 (0.1 + e^{-10})
    0.800363
    >>> round(float(soft_hard_bound(0.1, 1.0, 1.0, 3, 1.0, 1.0, 1.0, k=2)), 6)  # 4 (0.1 + e^{-10})
    0.400182
    """
    tau = check_tau_grid(tau)
    K = check_count(K, "K", 2)
    k = check_k(k, K)
    for v, name in ((B_Y, "B_Y"), (B_f, "B_f"), (C_m, "C_m"), (alpha, "alpha")):
        check_nonnegative(v, name)
    check_positive(w0, "w0")
    if rho is not None:
        check_positive(rho, "rho")
    elif logit_range is not None or weight_ratio is not None:
        raise ValueError("`logit_range` and `weight_ratio` apply to a finite `rho` only")
    if logit_range is not None and weight_ratio is not None:
        raise ValueError("give at most one of `logit_range` and `weight_ratio`")
    if logit_range is not None:
        check_nonnegative(logit_range, "logit_range")
    if weight_ratio is not None:
        check_positive(weight_ratio, "weight_ratio")
        if float(weight_ratio) < (1.0 - 1e-6) / k:
            raise ValueError(
                f"`weight_ratio` must be >= 1/k = {1.0 / k:.6g} (the largest combine weight is "
                f"at least 1/k of the k selected), got {weight_ratio!r}"
            )
    dtype = jnp.result_type(tau.dtype, float)
    tau = tau.astype(dtype)
    alpha = jnp.asarray(alpha, dtype)

    def tail(t):  # the bound on E[e^{−Δ_k/t}]
        head = C_m * jnp.exp(jax.scipy.special.gammaln(alpha + 1.0) + alpha * jnp.log(t))
        return head + jnp.exp(-w0 / t)

    if rho is None:
        factor = (K - k) / k if k > 1 else K - 1
        return 4.0 * B_f * (B_Y + B_f) * factor * tail(tau)
    if k == 1 and weight_ratio is None:
        tau_eff = tau * rho / (tau + rho)
        return 4.0 * B_f * (B_Y + B_f) * (K - 1) * tail(tau_eff)
    if weight_ratio is not None:
        r = jnp.asarray(weight_ratio, dtype)
    elif logit_range is not None:
        r = 1.0 / (1.0 + (k - 1) * jnp.exp(-jnp.asarray(logit_range, dtype) / rho))
    else:
        r = jnp.asarray(1.0, dtype)
    return 8.0 * B_f * (B_Y + B_f) * r * (K - k) * tail(tau)


def gate_tv_bound(eps, weight_ratio) -> jax.Array:
    """The gate bound `‖w^τ − w^0‖_1 ≤ min(2, 2rε/(1 − rε))` of the finite-ρ certificate (T.9).

    `w^τ`, `w^0`: the normalised soft and hard combine weights (T.5) of one
    input; `ε = Σ_{j∉S_k} μ_j^τ ≤ (K − k) e^{−Δ_k/τ}` (T.8); `r = max_l c_l /
    Σ_{j∈S_k} c_l` (derivation: `soft_hard_bound`). Always `≤ 4 r ε`.

    Args:
        eps: `≥ 0`, any shape; weight_ratio: `r > 0`, broadcastable to `eps`.

    Returns:
        the bound, with the broadcast shape.
    """
    x = jnp.asarray(weight_ratio) * jnp.asarray(eps)
    return jnp.where(x < 0.5, 2.0 * x / (1.0 - jnp.minimum(x, 0.5)), 2.0)


class Certificate(NamedTuple):
    """Theorem 4.5 (top-k: T.10, T.9) on a sample, next to the gap it bounds.

    Attributes:
        bound: `[T]` the certificate (`soft_hard_bound` with `C_m = C_env`).
        gap: `Estimate` `[T]` of `L_τ − L_0` (from `risk_sweep`), for comparison.
        tail: the `MarginTail` fit of `Δ_k` that supplied `(C_m = C_env, α, w0)`.
        B_Y: the bound on `|Y|` used; B_f: the bound on `|f_k|` used.
    """

    bound: jax.Array  # [T]
    gap: Estimate  # [T]
    tail: MarginTail
    B_Y: jax.Array  # scalar
    B_f: jax.Array  # scalar


def _model_bound(model, a: jax.Array, taus, b_y, b_f, C_m, alpha, w0) -> jax.Array:
    """`soft_hard_bound` with the routing `(k, ρ, selection)` read off `model`.

    For a finite ρ with `k > 1` or a selection map, the weight ratio `r` is the
    sample maximum of `max_l c_l / Σ_{j∈S_k} c_j` (like `B_f`, a bound on the sample).
    """
    k, rho, sel = routing_of(model)
    ratio = None
    if rho is not None and (k > 1 or sel is not None):
        c = _gating.combine_weights(a, rho)  # [N, K], scaled by e^{−max a/ρ}
        chosen = _gating.hard_mask(selection_scores(model, a), k)
        ratio = jnp.max(jnp.max(c, axis=-1) / jnp.sum(chosen * c, axis=-1))
    return soft_hard_bound(
        taus, b_y, b_f, a.shape[1], C_m, alpha, w0, k=k, rho=rho, weight_ratio=ratio
    )


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
    """The Theorem 4.5 certificate (top-k: T.10, T.9) with its constants read off the data.

    `(C_m, α, w_0)` come from `margin_tail_fit` of the model's top-k margins
    `Δ_k` (T.1) of the *selection* scores (the router's logits, or
    `model.selection` of them; `C_m` is the envelope `C_env`, so
    `M_k(w) ≤ C_m w^α` on the fitted range `[w_1, w_0]`); by default the
    widths are 12 geometric points between the `max(200/N, 10⁻³)` and 25 %
    quantiles of `Δ_k`. `B_Y = max_n |y_n|` and `B_f = max_{n,k} |f_k(x_n)|`
    unless given (Assumption 4.3; on the sample these are exact bounds). The
    routing `(k, ρ, selection)` is read off the model
    (`softhard.models.routing_of`); for a finite combine temperature the
    weight ratio of the T.9 bound is its sample maximum (see
    `soft_hard_bound`). The power law is extrapolated below `w_1`, which the
    sample cannot check; a fit with status `"misfit"` still bounds the
    profile on the grid (the envelope), so it is used; read `tail.residual`.

    Raises:
        ValueError: when the margin has an atom (exact ties of positive mass,
            `tail.status == "atom"`): (4.4) fails and `L_τ − L_0` need not vanish
            as τ → 0, so no certificate is returned.

    Args:
        model: pytree with `.router` and `.experts` (bounded experts, e.g. clipped).
        x: `[N, d]`; y: `[N]`; taus: `[T]` temperatures `> 0`.
        ws: `[W]` widths for the tail fit, or `None` for the default grid.
        B_Y, B_f: bounds `≥ 0`, or `None` to take the sample maxima.
        z: confidence multiplier for the envelope `C_env`.

    Returns:
        `Certificate(bound, gap, tail, B_Y, B_f)`.
    """
    x, y = check_xy(x, y)
    check_finite_rows(x, "x", "certifying")
    check_finite_rows(y[:, None], "y", "certifying")
    taus = check_taus(taus)
    check_finite_params(model, "model")
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y = x.astype(dtype), y.astype(dtype)
    a = logits(model.router, x)
    k = check_k(routing_of(model)[0], a.shape[1], "model.k")
    f = expert_outputs(model.experts, x)
    tail = margin_tail_fit(selection_scores(model, a), ws, k=k, z=z)
    if tail.status == "atom":
        raise ValueError(
            f"the top-{k} margin has an atom: {float(tail.atom.value):.3g} of the sample has "
            "exactly tied selection scores, so the margin tail (4.4) fails and the soft-hard "
            "gap need not vanish as tau -> 0; no certificate applies (the fit above the atom "
            "is in margin_tail_fit)"
        )
    b_y = jnp.max(jnp.abs(y)) if B_Y is None else jnp.asarray(B_Y, dtype)
    b_f = jnp.max(jnp.abs(f)) if B_f is None else jnp.asarray(B_f, dtype)
    alpha = jnp.maximum(tail.alpha.value, 0.0)
    bound = _model_bound(model, a, taus, b_y, b_f, tail.C_env, alpha, tail.w0)
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
            a_t = logits(m_t.router, x)
            c = _model_bound(m_t, a_t, taus[t], b_y, b_f, C_m, alpha, w0)
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
