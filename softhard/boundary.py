"""Boundary-mass profiles, ambiguity mass, margin tails and certificates (§2, §3, §4, §5.4).

Sample estimates of the boundary-layer quantities of a router from its
logits `[N, K]`: the top-two profile `M(w) = P(Δ ≤ w)` (2.13), the pairwise
profile `M_pair(w) = P(δ ≤ w)` (2.14), the per-pair slab masses of (3.9),
the ambiguity mass `m_δ(τ)` (5.5) with its sandwich (5.6), and a power-law
fit of the margin tail of Assumption 4.2 (4.4).

The data-driven Theorem 4.5 certificate (`certify`) and the Theorem 4.7
check on a parameter box (`gamma_check`) live here too: they need the
margin-tail fit and call `risk.soft_hard_bound`, so placing them in `risk`
would make `risk` import `boundary`. Data flow: `risk → boundary`.
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
    check_delta,
    check_finite_params,
    check_logits,
    check_tau,
    check_taus,
    check_width,
    check_xy,
    is_concrete,
)
from .risk import hard_risk, risk_sweep, soft_hard_bound, soft_risk
from .routing import expert_outputs, logits, pair_indices, pairwise_min_margin, top_two_margin

__all__ = [
    "boundary_mass",
    "pairwise_slab_mass",
    "ambiguity_mass",
    "slab_width",
    "ambiguity_widths",
    "AmbiguityWidths",
    "margin_tail_fit",
    "MarginTail",
    "certify",
    "Certificate",
    "gamma_check",
    "GammaCheck",
]

_KINDS = ("top2", "pairwise")


def _float_logits(a):
    a = check_logits(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def _binomial(p: jax.Array, n: int) -> Estimate:
    return Estimate(p, jnp.sqrt(jnp.clip(p * (1.0 - p), 0.0) / n))


def _mass_below(margin: jax.Array, w: jax.Array) -> jax.Array:
    # fraction of margins ≤ w for every width: margin [N] or [N, P] -> w.shape (+ [P]).
    # One O(N) pass per width (a sort costs more on CPU for the few widths usual here).
    wf = w.reshape(-1)
    if wf.size == 0:
        return jnp.zeros(w.shape + margin.shape[1:], margin.dtype)

    def below(wi):
        return jnp.mean((margin <= wi).astype(margin.dtype), axis=0)

    frac = jax.lax.map(below, wf, batch_size=min(8, wf.size))
    return frac.reshape(w.shape + margin.shape[1:])


def boundary_mass(logits: jax.Array, w, *, kind: str = "top2") -> Estimate:
    """Boundary-mass profile: `M(w) = P(Δ(X) ≤ w)` (2.13) or `M_pair(w) = P(δ(X) ≤ w)` (2.14).

    `Δ` is the top-two margin (2.6), `δ` the smallest pairwise separation
    (2.12); `M ≤ M_pair`, with equality for K = 2. The estimate is the
    fraction of samples below each width, with the binomial stderr `sqrt(M(1 − M)/N)`.

    Args:
        logits: `[N, K]` router logits `a(X_n)`.
        w: width `≥ 0`, scalar or `[W]`.
        kind: `"top2"` (default, `M`) or `"pairwise"` (`M_pair`).

    Returns:
        `Estimate` with the shape of `w`.

    >>> a = jnp.array([[0.0, 0.1], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    >>> boundary_mass(a, jnp.array([0.5, 1.5])).value.tolist()
    [0.5, 0.75]
    """
    a = _float_logits(logits)
    w = check_width(w).astype(a.dtype)
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}, got {kind!r}")
    return _boundary_mass(a, w, kind=kind)


@functools.partial(jax.jit, static_argnames=("kind",))
def _boundary_mass(a, w, *, kind):
    margin = top_two_margin(a) if kind == "top2" else pairwise_min_margin(a)
    return _binomial(_mass_below(margin, w), a.shape[0])


def pairwise_slab_mass(logits: jax.Array, w) -> Estimate:
    """Per-pair slab masses `P(|s_ij(X)| ≤ w)` (Lemma 3.6), `s_ij = a_i − a_j` (3.1).

    Their sum over pairs is the union bound of (3.9):
    `M(w) ≤ M_pair(w) ≤ Σ_{i<j} P(|s_ij(X)| ≤ w)`.

    Args:
        logits: `[N, K]` router logits.
        w: width `≥ 0`, scalar or `[W]`.

    Returns:
        `Estimate` of shape `w.shape + [K(K−1)/2]`, pairs in `routing.pair_indices` order.
    """
    a = _float_logits(logits)
    w = check_width(w).astype(a.dtype)
    return _pairwise_slab_mass(a, w)


@jax.jit
def _pairwise_slab_mass(a, w):
    i, j = pair_indices(a.shape[1])
    gaps = jnp.abs(a[:, i] - a[:, j])  # [N, P]
    return _binomial(_mass_below(gaps, w), a.shape[0])


def ambiguity_mass(logits: jax.Array, tau, delta) -> Estimate:
    """Ambiguity mass `m_δ(τ) = P(max_k π_k^τ(X) < 1 − δ)` (5.4, 5.5).

    By (5.6), `P(Δ < w_{τ,δ}) ≤ m_δ(τ) ≤ P(Δ < w̄_{τ,δ}) ≤ M_pair(w̄_{τ,δ})`
    with the widths of `ambiguity_widths`; for K = 2 the three coincide.

    Args:
        logits: `[N, K]` router logits.
        tau: scalar temperature `> 0`.
        delta: scalar in `(0, 1/2)`.

    Returns:
        scalar `Estimate` (binomial stderr).
    """
    a = _float_logits(logits)
    check_tau(tau)
    check_delta(delta)
    return _ambiguity_mass(a, jnp.asarray(tau, a.dtype), jnp.asarray(delta, a.dtype))


@jax.jit
def _ambiguity_mass(a, tau, delta):
    z = (a - jnp.max(a, axis=-1, keepdims=True)) / tau
    top_gate = jnp.exp(-jax.nn.logsumexp(z, axis=-1))  # max_k π_k^τ, by log-sum-exp
    frac = jnp.mean((top_gate < 1.0 - delta).astype(a.dtype))
    return _binomial(frac, a.shape[0])


def _check_positive(v, name: str):
    v = jnp.asarray(v)
    if v.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array [T], got shape {v.shape}")
    if is_concrete(v):
        arr = np.asarray(v)
        if not (np.all(arr > 0) and np.all(np.isfinite(arr))):
            raise ValueError(f"`{name}` must be finite and > 0, got {arr}")
    return v


def slab_width(tau, eps) -> jax.Array:
    """Slab width `w_{τ,ε} = τ log((1−ε)/ε)` (2.15): `{ε ≤ σ(s/τ) ≤ 1−ε} = {|s| ≤ w_{τ,ε}}` (3.5).

    Args:
        tau: temperature `> 0`, scalar or `[T]`.
        eps: scalar in `(0, 1/2)`.

    Returns:
        widths with the shape of `tau`.

    >>> round(float(slab_width(0.5, 0.25)), 6)  # 0.5 log 3
    0.549306
    """
    tau = _check_positive(tau, "tau")
    check_delta(eps, "eps")
    return tau * jnp.log((1.0 - eps) / eps)


class AmbiguityWidths(NamedTuple):
    """The two widths of (5.6).

    Attributes:
        lower: `w_{τ,δ} = τ log((1−δ)/δ)`: `{Δ < lower} ⊆ A_δ(τ)`.
        upper: `w̄_{τ,δ} = τ log((K−1)(1−δ)/δ)`: `A_δ(τ) ⊆ {Δ < upper}`.
    """

    lower: jax.Array  # shape of tau
    upper: jax.Array  # shape of tau


def ambiguity_widths(tau, delta, K: int) -> AmbiguityWidths:
    """The widths `w_{τ,δ} ≤ w̄_{τ,δ}` that sandwich the ambiguity region (5.6) [R].

    `{Δ ≥ w̄_{τ,δ}} ⊆ A_δ(τ)ᶜ ⊆ {Δ ≥ w_{τ,δ}}`, so
    `P(Δ < w_{τ,δ}) ≤ m_δ(τ) ≤ P(Δ < w̄_{τ,δ})`; equal for K = 2.

    Args:
        tau: temperature `> 0`, scalar or `[T]`.
        delta: scalar in `(0, 1/2)`.
        K: number of experts `≥ 2`.

    Returns:
        `AmbiguityWidths(lower, upper)`, each with the shape of `tau`.
    """
    tau = _check_positive(tau, "tau")
    check_delta(delta)
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
        raise ValueError(f"`K` must be an integer >= 2, got {K!r}")
    lower = tau * jnp.log((1.0 - delta) / delta)
    upper = tau * jnp.log((K - 1) * (1.0 - delta) / delta)
    return AmbiguityWidths(lower, upper)


# ----------------------------------------------------------------------------
# margin-tail fit (Assumption 4.2)
# ----------------------------------------------------------------------------


class MarginTail(NamedTuple):
    """A power-law fit `M(w) ≈ C_m w^α` of the margin tail (4.4) on `[w_1, w_0]`.

    Attributes:
        C_m: `Estimate` of the prefactor from the log-log regression.
        alpha: `Estimate` of the exponent.
        w0: the largest fitted width (Assumption 4.2's `w_0`).
        C_env: the smallest `C` with `C w^α̂ ≥ M̂(w) + z·se` on the grid, times the
            grid-gap factor `max (w_{k+1}/w_k)^α̂`, so `M(w) ≤ C_env w^α̂` on all of
            `[w_1, w_0]` (with confidence `z`; `α̂` clipped at 0); the value a
            certificate should use.
        ws: `[W]` the widths, ascending.
        mass: `Estimate` `[W]` of `M(ws)`.
    """

    C_m: Estimate  # scalar
    alpha: Estimate  # scalar
    w0: jax.Array  # scalar
    C_env: jax.Array  # scalar
    ws: jax.Array  # [W]
    mass: Estimate  # [W]


def margin_tail_fit(logits: jax.Array, ws, *, kind: str = "top2", z: float = 2.0) -> MarginTail:
    """Fit the margin-tail bound `P(Δ ≤ w) ≤ C_m w^α` (4.4) on log-log axes.

    Ordinary least squares of `log M̂(w_k)` on `log w_k`. The estimates
    `M̂(w_k)` share one sample and are nested, so their covariance is
    `(M(w_min(k,l)) − M(w_k) M(w_l))/N`; by the delta method
    `Cov(log M̂) = Cov(M̂)/(M M)`, and the stderrs of `log C_m` and `α` are
    the sandwich `A Cov Aᵀ` with `A = (XᵀX)^{-1}Xᵀ` (sampling error only; a
    misfit of the power law shows up as a residual, not in the stderr).
    `se(C_m) = C_m se(log C_m)`.

    Args:
        logits: `[N, K]` router logits.
        ws: `[W]` widths `> 0` (W ≥ 2, at least two distinct), each with
            `M̂(w) > 0`; sorted internally.
        kind: `"top2"` (default, `Δ`) or `"pairwise"` (`δ`).
        z: confidence multiplier for `C_env`.

    Returns:
        `MarginTail(C_m, alpha, w0, C_env, ws, mass)`.
    """
    a = _float_logits(logits)
    ws_np = np.sort(np.asarray(ws, dtype=np.float64).reshape(-1))
    if np.ndim(ws) != 1 or ws_np.size < 2 or np.unique(ws_np).size < 2:
        raise ValueError(
            f"`ws` must be a 1-D array [W] with at least two distinct widths, got {ws}"
        )
    if not (np.all(ws_np > 0) and np.all(np.isfinite(ws_np))):
        raise ValueError(f"`ws` must hold finite widths > 0, got {ws_np}")
    if not float(z) >= 0:
        raise ValueError(f"`z` must be >= 0, got {z!r}")
    mass = boundary_mass(a, jnp.asarray(ws_np, a.dtype), kind=kind)
    M = np.asarray(mass.value, dtype=np.float64)
    if np.any(M <= 0):
        raise ValueError(
            f"`ws` must lie above the smallest margin: M(w) = 0 at w = {ws_np[M <= 0]}; "
            "choose larger widths"
        )
    n = a.shape[0]
    X = np.stack([np.ones_like(ws_np), np.log(ws_np)], axis=1)
    A = np.linalg.pinv(X)  # (XᵀX)^{-1} Xᵀ
    coef = A @ np.log(M)
    Mmin = M[np.minimum.outer(np.arange(M.size), np.arange(M.size))]
    cov = (Mmin - np.outer(M, M)) / n / np.outer(M, M)
    cov_coef = A @ cov @ A.T
    se = np.sqrt(np.clip(np.diag(cov_coef), 0.0, None))
    C = float(np.exp(coef[0]))
    alpha = float(coef[1])
    upper = M + z * np.asarray(mass.stderr, dtype=np.float64)
    a_env = max(alpha, 0.0)
    gap = float(np.max(ws_np[1:] / ws_np[:-1]) ** a_env)
    C_env = float(np.max(upper / ws_np**a_env)) * gap
    dt = a.dtype
    return MarginTail(
        C_m=Estimate(jnp.asarray(C, dt), jnp.asarray(C * se[0], dt)),
        alpha=Estimate(jnp.asarray(alpha, dt), jnp.asarray(se[1], dt)),
        w0=jnp.asarray(ws_np[-1], dt),
        C_env=jnp.asarray(C_env, dt),
        ws=jnp.asarray(ws_np, dt),
        mass=mass,
    )


def _default_widths(margin: np.ndarray, num: int = 12) -> np.ndarray:
    n = margin.size
    lo_q = min(0.05, max(200.0 / n, 1e-3))
    lo, hi = np.quantile(margin, [lo_q, 0.25])
    if not lo > 0:
        raise ValueError(
            "the top-two margin is 0 on a set of positive mass (tied logits): the margin "
            "tail (4.4) fails, so no certificate applies"
        )
    return np.geomspace(lo, hi, num)


# ----------------------------------------------------------------------------
# the data-driven Theorem 4.5 certificate
# ----------------------------------------------------------------------------


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
    x, y = check_xy(x, y)
    taus = check_taus(taus)
    check_finite_params(model, "model")
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y = x.astype(dtype), y.astype(dtype)
    a = logits(model.router, x)
    f = expert_outputs(model.experts, x)
    if ws is None:
        ws = _default_widths(np.asarray(top_two_margin(a), dtype=np.float64))
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
        starts.append(jnp.concatenate([jnp.clip(p, a, b)[None], a + u * (b - a)], axis=0))
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
