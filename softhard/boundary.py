"""Boundary-mass profiles, ambiguity mass and margin tails (§2, §3, §4, §5.4).

Sample estimates of the boundary-layer quantities of a router from its
logits `[N, K]`: the top-two profile `M(w) = P(Δ ≤ w)` (2.13), the pairwise
profile `M_pair(w) = P(δ ≤ w)` (2.14), the per-pair slab masses of (3.9),
the ambiguity mass `m_δ(τ)` (5.5) with its sandwich (5.6), and a power-law
fit of the margin tail of Assumption 4.2 (4.4).
The Theorem 4.5 certificate that uses the tail fit is in `softhard.certificate`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._stats import Estimate, binomial_estimate
from ._validate import (
    check_count,
    check_delta,
    check_k,
    check_kind,
    check_logits,
    check_tau,
    check_tau_grid,
    check_width,
)
from .routing import pair_indices, pairwise_min_margin, top_two_margin, topk_margin

__all__ = [
    "boundary_mass",
    "pairwise_slab_mass",
    "ambiguity_mass",
    "slab_width",
    "ambiguity_widths",
    "AmbiguityWidths",
    "margin_tail_fit",
    "MarginTail",
    "tail_widths",
]

#: the margins a boundary-mass profile can be taken of: Δ (2.6) or δ (2.12)
KINDS = ("top2", "pairwise")


def _float_logits(a):
    a = check_logits(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


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


def boundary_mass(logits: jax.Array, w, *, kind: str = "top2", k: int = 1) -> Estimate:
    """Boundary-mass profile: `M(w) = P(Δ(X) ≤ w)` (2.13) or `M_pair(w) = P(δ(X) ≤ w)` (2.14).

    With `k > 1` (kind `"top2"`): the top-k profile `M_k(w) = P(Δ_k(X) ≤ w)`
    (T.7), `Δ_k = a_(k) − a_(k+1)` (T.1).

    `Δ` is the top-two margin (2.6), `δ` the smallest pairwise separation
    (2.12); `M ≤ M_pair`, with equality for K = 2. The estimate is the
    fraction of samples below each width, with the binomial stderr `sqrt(M(1 − M)/N)`.

    Args:
        logits: `[N, K]` router logits `a(X_n)`.
        w: width `≥ 0`, scalar or `[W]`.
        kind: `"top2"` (default, `M`) or `"pairwise"` (`M_pair`).
        k: `1 <= k < K`, the routing's top-k (only with kind `"top2"`).

    Returns:
        `Estimate` with the shape of `w`.

    >>> a = jnp.array([[0.0, 0.1], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    >>> boundary_mass(a, jnp.array([0.5, 1.5])).value.tolist()
    [0.5, 0.75]
    """
    a = _float_logits(logits)
    w = check_width(w).astype(a.dtype)
    check_kind(kind, "kind", KINDS)
    k = check_k(k, a.shape[1])
    if k > 1 and kind != "top2":
        raise ValueError(f"`kind` must be 'top2' for a top-k profile (k = {k}), got {kind!r}")
    return _boundary_mass(a, w, kind=kind, k=k)


@functools.partial(jax.jit, static_argnames=("kind", "k"))
def _boundary_mass(a, w, *, kind, k=1):
    if kind == "pairwise":
        margin = pairwise_min_margin(a)
    else:
        margin = top_two_margin(a) if k == 1 else topk_margin(a, k)
    return binomial_estimate(_mass_below(margin, w), a.shape[0])


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
    return binomial_estimate(_mass_below(gaps, w), a.shape[0])


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
    return binomial_estimate(frac, a.shape[0])


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
    tau = check_tau_grid(tau)
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
    tau = check_tau_grid(tau)
    check_delta(delta)
    check_count(K, "K", 2)
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


def tail_widths(margin: np.ndarray, num: int = 12) -> np.ndarray:
    """`num` geometric widths between the `max(200/N, 10⁻³)` and 25 % quantiles of a margin `[N]`.

    The default grid of a margin-tail fit; raises when the lower quantile is 0
    (an atom at 0: tied logits on a set of positive mass, where (4.4) fails).
    """
    n = margin.size
    lo_q = min(0.05, max(200.0 / n, 1e-3))
    lo, hi = np.quantile(margin, [lo_q, 0.25])
    if not lo > 0:
        raise ValueError(
            "the top-two margin is 0 on a set of positive mass (tied logits): the margin "
            "tail (4.4) fails, so no certificate applies"
        )
    return np.geomspace(lo, hi, num)
