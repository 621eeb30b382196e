"""Boundary-mass profiles, ambiguity mass and margin tails (§2, §3, §4, §5.4, T.7).

Sample estimates of the boundary-layer quantities of a router from its
logits `[N, K]`: the top-two profile `M(w) = P(Δ ≤ w)` (2.13), the pairwise
profile `M_pair(w) = P(δ ≤ w)` (2.14), the per-pair slab masses of (3.9),
the ambiguity mass `m_δ(τ)` (5.5) with its sandwich (5.6), and a power-law
fit of the margin tail of Assumption 4.2 (4.4) with its goodness of fit and
atom (exact ties). Top-k (EQUATIONS.md T): `M_k(w) = P(Δ_k ≤ w)` and the
top-k ambiguity mass (T.7), tail fits on `Δ_k` (T.1). Logits with a NaN or inf
row are refused (`ValueError`), never counted inside or outside a layer.
The Theorem 4.5 certificate that uses the tail fit is in `softhard.certificate`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _gating
from ._stats import Estimate, binomial_estimate, chunk_size_for, stream_moments
from ._validate import (
    check_count,
    check_delta,
    check_finite_rows,
    check_k,
    check_kind,
    check_logits,
    check_tau,
    check_tau_grid,
    check_width,
    poisons,
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
    "fit_tail_profile",
    "MarginTail",
    "TailResidual",
    "tail_widths",
    "MISFIT_P",
]

#: the margins a boundary-mass profile can be taken of: Δ (2.6) or δ (2.12)
KINDS = ("top2", "pairwise")


def _float_logits(a):
    a = check_logits(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    check_finite_rows(a, "logits", "estimating masses")
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


@poisons(w="width")
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


@poisons(w="width")
def pairwise_slab_mass(logits: jax.Array, w, *, chunk_size: int | None = None) -> Estimate:
    """Per-pair slab masses `P(|s_ij(X)| ≤ w)` (Lemma 3.6), `s_ij = a_i − a_j` (3.1).

    Their sum over pairs is the union bound of (3.9):
    `M(w) ≤ M_pair(w) ≤ Σ_{i<j} P(|s_ij(X)| ≤ w)`. Streamed over sample
    chunks (`_stats.stream_moments`): the working set is one chunk's
    `[W, K(K−1)/2, chunk]` indicators, flat in `N`.

    Args:
        logits: `[N, K]` router logits.
        w: width `≥ 0`, scalar or `[W]`.
        chunk_size: samples per chunk, or `None` for about 2^21 indicators per chunk.

    Returns:
        `Estimate` of shape `w.shape + [K(K−1)/2]`, pairs in `routing.pair_indices` order
        (binomial stderr).
    """
    a = _float_logits(logits)
    w = check_width(w).astype(a.dtype)
    n_pairs = a.shape[1] * (a.shape[1] - 1) // 2
    chunk = chunk_size_for(a.shape[0], max(1, w.size) * n_pairs, chunk_size)
    return _pairwise_slab_mass(a, w, chunk=chunk)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _pairwise_slab_mass(a, w, *, chunk):
    i, j = pair_indices(a.shape[1])
    wf = w.reshape(-1)

    def inside(ac):  # [c, K] -> [W, P, c] indicators of |s_ij| ≤ w
        gaps = jnp.abs(ac[:, i] - ac[:, j]).T  # [P, c]
        return (gaps[None, :, :] <= wf[:, None, None]).astype(a.dtype)

    frac = stream_moments(inside, (a,), chunk).value  # [W, P]
    return binomial_estimate(frac.reshape(w.shape + (i.size,)), a.shape[0])


@poisons(tau="tau", delta="delta")
def ambiguity_mass(logits: jax.Array, tau, delta, *, k: int = 1) -> Estimate:
    """Ambiguity mass `m_δ(τ) = P(max_k π_k^τ(X) < 1 − δ)` (5.4, 5.5); top-k: T.7.

    By (5.6), `P(Δ < w_{τ,δ}) ≤ m_δ(τ) ≤ P(Δ < w̄_{τ,δ}) ≤ M_pair(w̄_{τ,δ})`
    with the widths of `ambiguity_widths`; for K = 2 the three coincide.

    With `k > 1`: `m_δ^(k)(τ) = P(min_{j∈S_k} μ_j^τ(X) < 1 − δ)` (T.7), the
    soft top-k mask `μ^τ` (T.3) on the hard top-k set `S_k` (T.2, ties to the
    lowest index); `k = 1` is the top-1 mass above (`min_{j∈S_1} μ_j = max_j π_j`).

    Args:
        logits: `[N, K]` router logits (the selection scores).
        tau: scalar temperature `> 0`.
        delta: scalar in `(0, 1/2)`.
        k: experts per input, `1 <= k < K`.

    Returns:
        scalar `Estimate` (binomial stderr).

    >>> a = jnp.array([[3.0, 0.0, -3.0], [1.0, 0.9, 0.8]])  # row 2: k-th and (k+1)-th close
    >>> ambiguity_mass(a, 0.5, 0.1, k=2).value.tolist()
    0.5
    """
    a = _float_logits(logits)
    check_tau(tau)
    check_delta(delta)
    k = check_k(k, a.shape[1])
    tau, delta = jnp.asarray(tau, a.dtype), jnp.asarray(delta, a.dtype)
    if k == 1:
        return _ambiguity_mass(a, tau, delta)
    return _topk_ambiguity_mass(a, tau, delta, k=k)


@jax.jit
def _ambiguity_mass(a, tau, delta):
    z = (a - jnp.max(a, axis=-1, keepdims=True)) / tau
    top_gate = jnp.exp(-jax.nn.logsumexp(z, axis=-1))  # max_k π_k^τ, by log-sum-exp
    frac = jnp.mean((top_gate < 1.0 - delta).astype(a.dtype))
    return binomial_estimate(frac, a.shape[0])


@functools.partial(jax.jit, static_argnames=("k",))
def _topk_ambiguity_mass(a, tau, delta, *, k):
    mu = _gating.topk_mask(a, tau, k)  # [N, K] (T.3)
    selected = _gating.ranks(a) < k  # S_k (T.2)
    low = jnp.min(jnp.where(selected, mu, jnp.inf), axis=-1)  # min_{j∈S_k} μ_j^τ
    frac = jnp.mean((low < 1.0 - delta).astype(a.dtype))
    return binomial_estimate(frac, a.shape[0])


@poisons(tau="tau", eps="delta")
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


@poisons(tau="tau", delta="delta")
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


#: a power law is rejected ("misfit") when the χ² p-value of the fit is below this
MISFIT_P = 1e-3


class TailResidual(NamedTuple):
    """Goodness of fit of the power law `log M(w) = log C_m + α log w` on the grid.

    Attributes:
        chi2: the generalised-least-squares `χ²` of `log M̂(w_i)` about the best
            power law, with the delta-method covariance of the nested masses.
        dof: its degrees of freedom, `W − 2` (fewer for repeated widths; 0: no test).
        p_value: `P(χ²_dof ≥ chi2)`; 1 when `dof = 0`.
        max_z: the largest `|r_i| / sd(r_i)` of the OLS residuals `r` of the fit.
    """

    chi2: jax.Array  # scalar
    dof: int
    p_value: jax.Array  # scalar
    max_z: jax.Array  # scalar


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
        mass: `Estimate` `[W]` of `M(ws)` (the whole profile, atom included).
        atom: `Estimate` of the atom `P(Δ = 0)`, the fraction of exact ties (binomial stderr).
        residual: `TailResidual`, the goodness of fit (χ², dof, p-value, max |z|).
        status: `"ok"`; `"atom"` when the sample has exact ties (`atom > 0`):
            `(C_m, α, C_env)` then describe the continuous part
            `P(0 < Δ ≤ w) = M(w) − P(Δ = 0)` only, (4.4) fails (`M(w) ≥ P(Δ = 0)`
            for every `w > 0`) and no certificate may use the fit; or
            `"misfit"` when the power law is rejected (`p_value < MISFIT_P`).
        k: the top-k of the margin `Δ_k` (T.1); 1 for `Δ` and for the pairwise `δ`.
    """

    C_m: Estimate  # scalar
    alpha: Estimate  # scalar
    w0: jax.Array  # scalar
    C_env: jax.Array  # scalar
    ws: jax.Array  # [W]
    mass: Estimate  # [W]
    atom: Estimate  # scalar
    residual: TailResidual
    status: str
    k: int


def _check_ws(ws) -> np.ndarray:
    """`[W]` widths, finite, `> 0`, at least two distinct: returned sorted, float64."""
    ws_np = np.sort(np.asarray(ws, dtype=np.float64).reshape(-1))
    if np.ndim(ws) != 1 or ws_np.size < 2 or np.unique(ws_np).size < 2:
        raise ValueError(
            f"`ws` must be a 1-D array [W] with at least two distinct widths, got {ws}"
        )
    if not (np.all(ws_np > 0) and np.all(np.isfinite(ws_np))):
        raise ValueError(f"`ws` must hold finite widths > 0, got {ws_np}")
    return ws_np


def margin_tail_fit(
    logits: jax.Array, ws=None, *, kind: str = "top2", k: int = 1, z: float = 2.0
) -> MarginTail:
    """Fit the margin-tail bound `P(Δ ≤ w) ≤ C_m w^α` (4.4) on log-log axes.

    The profile `M̂(ws)` and the atom `P̂(Δ = 0)` are taken from the logits
    (`boundary_mass`) and handed to `fit_tail_profile`, which documents the
    regression, its stderrs, the goodness of fit and the atom rule. With
    `k > 1` the margin is the top-k margin `Δ_k` (T.1) and the bound is
    `P(Δ_k ≤ w) ≤ C_m w^α` (T.10).

    Args:
        logits: `[N, K]` router logits (the selection scores).
        ws: `[W]` widths `> 0` (W ≥ 2, at least two distinct), each with
            `M̂(w) > P̂(Δ = 0)`; sorted internally. `None`: `tail_widths` of the margin.
        kind: `"top2"` (default, `Δ`, or `Δ_k`) or `"pairwise"` (`δ`, only with `k = 1`).
        k: `1 <= k < K`.
        z: confidence multiplier for `C_env`.

    Returns:
        `MarginTail(C_m, alpha, w0, C_env, ws, mass, atom, residual, status, k)`.
    """
    a = _float_logits(logits)
    k = check_k(k, a.shape[1])
    if ws is None:
        check_kind(kind, "kind", KINDS)
        margin = pairwise_min_margin(a) if kind == "pairwise" else topk_margin(a, k)
        ws = tail_widths(np.asarray(margin, dtype=np.float64))
    ws_np = _check_ws(ws)
    mass = boundary_mass(a, jnp.asarray(ws_np, a.dtype), kind=kind, k=k)
    atom = boundary_mass(a, jnp.zeros((), a.dtype), kind=kind, k=k)  # P(Δ ≤ 0) = P(Δ = 0)
    return fit_tail_profile(ws_np, mass, a.shape[0], atom=atom, z=z, k=k)


def fit_tail_profile(
    ws, mass: Estimate, n: int, *, atom: Estimate | None = None, z=2.0, k=1
) -> MarginTail:
    """Fit `P(Δ ≤ w) ≤ C_m w^α` (4.4; T.10 for `Δ_k`) to a sampled profile, without logits.

    For profiles accumulated elsewhere (e.g. counted chunk by chunk over a
    streamed file): `mass.value[i]` is the fraction of the `n` samples with
    `Δ ≤ ws[i]`, `atom.value` the fraction with `Δ = 0`.

    Ordinary least squares of `log M̂(w_i)` on `log w_i`. The estimates
    `M̂(w_i)` share one sample and are nested, so their covariance is
    `(M(w_min(i,j)) − M(w_i) M(w_j))/n`; by the delta method
    `Cov(log M̂) = Cov(M̂)/(M M)`, and the stderrs of `log C_m` and `α` are
    the sandwich `A Cov Aᵀ` with `A = (XᵀX)^{-1}Xᵀ` (sampling error only).
    `se(C_m) = C_m se(log C_m)`. A misfit of the power law shows in
    `residual`: the generalised-least-squares `χ²` with that covariance, its
    p-value on `W − 2` degrees of freedom, and the largest standardised OLS
    residual; `status = "misfit"` when `p_value < MISFIT_P`.

    Atoms: with exact ties (`atom.value > 0`) `M(w) ≥ P(Δ = 0)` for every
    `w > 0`, so no power law bounds the profile near 0 and a fit across the
    atom would report a spurious small `α` (or 0). The fit is then taken on
    the continuous part above the atom, `M(w) − P(Δ = 0) = P(0 < Δ ≤ w)`
    (same regression, nested covariance and envelope, with binomial stderrs
    of those fractions), and `status = "atom"`: the profile is
    `P(Δ ≤ w) ≤ P(Δ = 0) + C_env w^α̂`, and a certificate must refuse it.

    Args:
        ws: `[W]` widths `> 0` (at least two distinct); `mass` is reordered with them.
        mass: `Estimate` `[W]` of `M(ws)` (`mass.stderr` is used for `C_env`
            when there is no atom).
        n: sample size `≥ 1` behind `mass`.
        atom: `Estimate` of `P(Δ = 0)`, or `None` when unknown (taken as 0:
            the status then cannot say "atom").
        z: confidence multiplier for `C_env`.
        k: the top-k of the margin, recorded in the result.

    Returns:
        `MarginTail(C_m, alpha, w0, C_env, ws, mass, atom, residual, status, k)`.
    """
    order = np.argsort(np.asarray(ws, dtype=np.float64).reshape(-1), kind="stable")
    ws_np = _check_ws(ws)
    n = check_count(n, "n")
    k = check_count(k, "k")
    if not float(z) >= 0:
        raise ValueError(f"`z` must be >= 0, got {z!r}")
    value, stderr = jnp.asarray(mass.value), jnp.asarray(mass.stderr)
    if value.shape != (ws_np.size,) or stderr.shape != value.shape:
        raise ValueError(
            f"`mass` must be an Estimate of shape [W] = ({ws_np.size},) like `ws`, "
            f"got {value.shape} and {stderr.shape}"
        )
    dt = value.dtype if jnp.issubdtype(value.dtype, jnp.floating) else jnp.result_type(float)
    if not np.array_equal(order, np.arange(order.size)):
        value, stderr = value[order], stderr[order]
    mass = Estimate(value, stderr)
    if atom is None:
        atom = Estimate(jnp.zeros((), dt), jnp.zeros((), dt))
    p0 = float(atom.value)
    M = np.asarray(mass.value, dtype=np.float64)
    if not (np.all(np.isfinite(M)) and np.all((M >= 0) & (M <= 1)) and 0 <= p0 <= 1):
        raise ValueError(f"`mass` and `atom` must be fractions in [0, 1], got {M} and {p0}")
    if p0 > 0:
        M = M - p0  # the continuous part P(0 < Δ ≤ w)
        se = np.sqrt(np.clip(M * (1.0 - M), 0.0, None) / n)
    else:
        se = np.asarray(mass.stderr, dtype=np.float64)
    if np.any(M <= 0):
        where = f"above the atom P(Δ = 0) = {p0:.3g}: " if p0 > 0 else ""
        raise ValueError(
            f"`ws` must lie above the smallest margin: M(w) {where}= 0 at w = {ws_np[M <= 0]}; "
            "choose larger widths"
        )
    X = np.stack([np.ones_like(ws_np), np.log(ws_np)], axis=1)
    A = np.linalg.pinv(X)  # (XᵀX)^{-1} Xᵀ
    coef = A @ np.log(M)
    Mmin = M[np.minimum.outer(np.arange(M.size), np.arange(M.size))]
    cov = (Mmin - np.outer(M, M)) / n / np.outer(M, M)
    cov_coef = A @ cov @ A.T
    se_coef = np.sqrt(np.clip(np.diag(cov_coef), 0.0, None))
    C = float(np.exp(coef[0]))
    alpha = float(coef[1])
    upper = M + z * se
    a_env = max(alpha, 0.0)
    gap = float(np.max(ws_np[1:] / ws_np[:-1]) ** a_env)
    C_env = float(np.max(upper / ws_np**a_env)) * gap
    residual = _tail_residual(X, A, np.log(M), cov, dt)
    if p0 > 0:
        status = "atom"
    elif residual.dof > 0 and float(residual.p_value) < MISFIT_P:
        status = "misfit"
    else:
        status = "ok"
    return MarginTail(
        C_m=Estimate(jnp.asarray(C, dt), jnp.asarray(C * se_coef[0], dt)),
        alpha=Estimate(jnp.asarray(alpha, dt), jnp.asarray(se_coef[1], dt)),
        w0=jnp.asarray(ws_np[-1], dt),
        C_env=jnp.asarray(C_env, dt),
        ws=jnp.asarray(ws_np, dt),
        mass=mass,
        atom=Estimate(jnp.asarray(atom.value, dt), jnp.asarray(atom.stderr, dt)),
        residual=residual,
        status=status,
        k=k,
    )


def _tail_residual(X, A, y, cov, dt) -> TailResidual:
    """GLS `χ²` of `y ≈ X β` under `Cov(y) = cov` (rank-aware), and the max |z| of OLS residuals."""
    evals, evecs = np.linalg.eigh(cov)
    keep = evals > 1e-10 * max(float(evals.max()), 0.0)
    white = evecs[:, keep] / np.sqrt(evals[keep])  # [W, r]: whitens y
    yw, Xw = white.T @ y, white.T @ X
    dof = int(keep.sum()) - 2
    if dof > 0:
        beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
        chi2 = float(np.sum((yw - Xw @ beta) ** 2))
        p = float(jax.scipy.special.gammaincc(dof / 2.0, chi2 / 2.0))
    else:
        dof, chi2, p = 0, 0.0, 1.0
    proj = np.eye(y.size) - X @ A  # OLS residual map
    r = proj @ y
    var_r = np.diag(proj @ cov @ proj.T)
    ok = var_r > 1e-12 * max(float(var_r.max()), 1e-300)
    max_z = float(np.max(np.abs(r[ok]) / np.sqrt(var_r[ok]))) if np.any(ok) else 0.0
    return TailResidual(jnp.asarray(chi2, dt), dof, jnp.asarray(p, dt), jnp.asarray(max_z, dt))


def tail_widths(margin: np.ndarray, num: int = 12) -> np.ndarray:
    """`num` geometric widths between the `max(200/n, 10⁻³)` and 25 % quantiles of a margin `[N]`.

    The default grid of a margin-tail fit. The quantiles are those of the
    continuous part `{Δ > 0}` (`n` of its samples): with an atom at 0 (tied
    logits on a set of positive mass, where (4.4) fails) the grid lies above
    the atom, and `fit_tail_profile` fits there with status `"atom"`. Raises
    when the margin is 0 on (nearly) every sample or is not finite.
    """
    num = check_count(num, "num", 2)
    margin = np.asarray(margin, dtype=np.float64).reshape(-1)
    if margin.size == 0 or not np.all(np.isfinite(margin)):
        raise ValueError("`margin` must be a non-empty array of finite margins [N]")
    pos = margin[margin > 0]
    n = pos.size
    if n < 2:
        raise ValueError(
            "the margin is 0 on (nearly) every sample (tied logits): the margin "
            "tail (4.4) fails, so no certificate applies"
        )
    lo_q = min(0.05, max(200.0 / n, 1e-3))
    lo, hi = np.quantile(pos, [lo_q, 0.25])
    if not hi > lo:
        raise ValueError(
            f"the margin's lower quantiles coincide ({lo!r}): no tail to fit; the margin "
            "takes too few distinct values near 0"
        )
    return np.geomspace(lo, hi, num)
