"""Section 6: the effective operator, its spectrum and the alignment rates (§6).

Under the project's [R] convention (EQUATIONS.md §6) the residual–contrast
product responds to a small router score `z` through a slope `κ(t)` (6.3)
that depends on the teacher score `t = uᵀx` only, and the linearised router
gradient is `∇_φ R = −M φ` with the effective operator
`M = E[κ(T) X Xᵀ] / (2τ)` (6.6). `effective_operator` evaluates Lemma 6.1's
closed form (`effective_operator_mc` estimates it by Monte Carlo, for
checking); `operator_spectrum`, `amplification`, `alignment_rate`,
`alignment_rate_small_step`, `saturation_rate` and `is_sign_stable` turn `M`
into the quantities of Prop 6.3 and (6.9)–(6.12). The actual reduced model
whose router gradient `M` approximates, and router-only training, are in
`softhard.reduced`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from ._stats import chunk_size_for, stream_moments
from ._validate import (
    check_count,
    check_cov,
    check_key,
    check_positive,
    check_tau,
    check_vector,
    float_dtype,
    inv_temperature,
    poisons,
)
from .landscape._operator import LinearOperator, as_operator

__all__ = [
    "effective_operator",
    "effective_operator_mc",
    "response_moments",
    "rayleigh_quotient",
    "OperatorSpectrum",
    "operator_spectrum",
    "alignment",
    "amplification",
    "alignment_rate",
    "alignment_rate_small_step",
    "saturation_rate",
    "is_sign_stable",
]

_HP = jax.lax.Precision.HIGHEST
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------
# the response model: κ and the moments c_0, c_2 (Lemma 6.1)
# ----------------------------------------------------------------------------


_T_LOG_RANGE = (-32.0, 0.0)  # log(t/σ_u)
_T_LOG_NODES = 160
_T_LIN_RANGE = (1.0, 10.0)
_T_LIN_NODES = 64


@functools.lru_cache(maxsize=16)
def _gl(n: int, a: float, b: float):
    x, w = leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


@functools.lru_cache(maxsize=1)
def _t_nodes():
    y, wy = _gl(_T_LOG_NODES, *_T_LOG_RANGE)
    t1, w1 = np.exp(y), wy * np.exp(y)
    t2, w2 = _gl(_T_LIN_NODES, *_T_LIN_RANGE)
    t = np.concatenate([t1, t2])
    w = np.concatenate([w1, w2]) * np.exp(-0.5 * t**2) / math.sqrt(2.0 * math.pi)
    return t, w  # ∫_0^∞ f(t) φ(t) dt ≈ Σ w f(t)


def _response_kappa(response, scale) -> Callable:
    """The slope `κ(t)` (6.3) of a response, as a vectorised function of `t`."""
    if isinstance(response, str):
        if response == "sign":
            return jnp.abs
        if response == "smooth":
            return lambda t: t * jnp.tanh(t / scale)
        raise ValueError(
            f'`response` must be "sign", "smooth" or a callable κ(t), got {response!r}'
        )
    if callable(response):
        return response
    raise ValueError(f'`response` must be "sign", "smooth" or a callable κ(t), got {response!r}')


def _check_response(response, scale):
    _response_kappa(response, scale)
    check_positive(scale, "scale")


def response_moments(sigma_u, response="sign", *, scale=1.0):
    """The response moments `c_0 = E[κ(T)]`, `c_2 = E[κ(T) T²]`, `T ~ N(0, σ_u²)` (Lemma 6.1).

    For the sign response `κ(t) = |t|` they are exact (Lemma 6.2):
    `c_0 = σ_u sqrt(2/π)`, `c_2 = 2 σ_u³ sqrt(2/π)`. For any other `κ` they
    are computed by Gauss–Legendre quadrature on each half-line `t ≷ 0`,
    graded geometrically towards `t = 0` (the same rule as
    `reduced_risk_exact`'s outer integral): a slope `κ(t) = t h(t)` is
    typically kinked or sharp at `t = 0` (`|t|`, `t tanh(t/s)` with small `s`),
    where Gauss–Hermite converges slowly (1e-6 relative at 160 nodes for
    `"smooth"` with `s = 0.35 σ_u`, 3e-3 for `|t|`); this rule is exact to
    about 1e-13 relative for both.

    Args:
        sigma_u: scalar `σ_u = sqrt(uᵀΣu) > 0`.
        response: `"sign"` (`h(t) = sign t`, `κ = |t|`), `"smooth"`
            (`h(t) = tanh(t/scale)`, `κ = t tanh(t/scale)`), or a callable
            **κ** (the slope itself, not `h`), vectorised over `t: [n]`.
        scale: the smooth response's scale `s > 0`.

    Returns:
        `(c_0, c_2)`, two scalars.
    """
    _check_response(response, scale)
    if isinstance(response, str) and response == "sign":
        return sigma_u * _SQRT_2_OVER_PI, 2.0 * sigma_u**3 * _SQRT_2_OVER_PI
    kappa = _response_kappa(response, scale)
    dtype = jnp.result_type(sigma_u, float)
    x, w = (jnp.asarray(a, dtype) for a in _t_nodes())
    t = sigma_u * jnp.concatenate([x, -x])
    w = jnp.concatenate([w, w])
    k = jnp.asarray(kappa(t))
    if k.shape != t.shape:
        raise ValueError(
            f"`response` must map t: [n] to κ(t): [n] elementwise, got {k.shape} for {t.shape}"
        )
    k = k.astype(dtype)
    return jnp.sum(w * k), jnp.sum(w * k * t**2)


def _sigma_u(cov, u):
    return jnp.sqrt(jnp.dot(u, jnp.dot(cov, u, precision=_HP), precision=_HP))


@poisons(tau="tau", scale="positive")
def effective_operator(cov, u, tau, response="sign", *, scale=1.0):
    """The effective operator `M = E[κ(T) X Xᵀ] / (2τ)` (6.6), by Lemma 6.1's closed form.

    With `X ~ N(0, Σ)`, `T = uᵀX`, `σ_u² = uᵀΣu`, `c_0 = E[κ(T)]` and
    `c_2 = E[κ(T) T²]` (Lemma 6.1, [R]):

        M = (1/(2τ)) [ c_0 Σ + (c_2/σ_u⁴ − c_0/σ_u²) Σ u uᵀ Σ ],

    from `X = (Σu/σ_u²) T + W` with `W` independent of `T`. The response
    follows the project's [R] convention (EQUATIONS.md §6): `κ(t) = t h(t)`.
    For `"sign"`, `c_0` and `c_2` are exact (Lemma 6.2) and
    `uᵀMu = σ_u³ sqrt(2/π)/τ`; otherwise they come from Gauss–Hermite
    quadrature (`response_moments`). The formula holds for any integrable
    `κ`, even or not.

    Args:
        cov: `[d, d]` covariance `Σ ≻ 0`.
        u: `[d]` teacher separator (any non-zero length; `C_+ = {uᵀx > 0}`).
        tau: scalar temperature `> 0`.
        response: `"sign"`, `"smooth"` or a callable `κ(t)` (the slope, vectorised).
        scale: the smooth response's scale `s` in `h(t) = tanh(t/s)`.

    Returns:
        `[d, d]` symmetric matrix `M`.

    >>> M = effective_operator(jnp.eye(2), jnp.array([1.0, 0.0]), 0.5)
    >>> bool(jnp.allclose(M[0, 0], math.sqrt(2 / math.pi) / 0.5))
    True
    """
    cov = check_cov(cov)
    u = check_vector(u, cov.shape[0], "u", nonzero=True)
    check_tau(tau)
    _check_response(response, scale)
    dtype = float_dtype(cov, u, tau)
    cov, u = cov.astype(dtype), u.astype(dtype)
    s_u = _sigma_u(cov, u)
    c0, c2 = response_moments(s_u, response, scale=scale)
    su = jnp.dot(cov, u, precision=_HP)
    coef = c2 / s_u**4 - c0 / s_u**2
    # × min(1/τ, max)/2 rather than /(2τ): a τ that underflows gives inf, never NaN
    M = (c0 * cov + coef * jnp.outer(su, su)) * (0.5 * inv_temperature(tau, dtype))
    return 0.5 * M + 0.5 * M.T


@poisons(tau="tau", scale="positive")
def effective_operator_mc(key, cov, u, tau, response="sign", *, n: int = 100_000, scale=1.0):
    """Monte Carlo estimate of `M = E[κ(T) X Xᵀ] / (2τ)` (6.6), for checking.

    Draws `n` inputs `X ~ N(0, Σ)` and averages `κ(uᵀX) X Xᵀ / (2τ)`,
    streaming over chunks.

    Args:
        key: a `jax.random` key.
        cov, u, tau, response, scale: as in `effective_operator`.
        n: number of draws.

    Returns:
        `Estimate(value, stderr)`, both `[d, d]` (elementwise standard errors).
    """
    check_key(key)
    cov = check_cov(cov)
    d = cov.shape[0]
    u = check_vector(u, d, "u", nonzero=True)
    check_tau(tau)
    _check_response(response, scale)
    n = check_count(n, "n", 2)
    dtype = float_dtype(cov, u, tau)
    cov, u = cov.astype(dtype), u.astype(dtype)
    kappa = _response_kappa(response, scale)
    x = jax.random.normal(key, (n, d), dtype) @ jnp.linalg.cholesky(cov).T

    def per_sample(xc):
        k = kappa(jnp.dot(xc, u, precision=_HP))
        outer = jnp.einsum("ni,nj->ijn", xc, xc, precision=_HP)
        return k[None, None, :] * outer * (0.5 * inv_temperature(tau, dtype))

    return stream_moments(per_sample, (x,), chunk_size_for(n, d * d))


# ----------------------------------------------------------------------------
# spectra, alignment and rates (Prop 6.3, (6.9)–(6.12))
# ----------------------------------------------------------------------------


def _as_matrix(M, name: str = "M") -> jax.Array:
    """`M: [d, d]` as a dense symmetric matrix: a matrix, or a `LinearOperator` materialised.

    The Section 6 operator is `d × d` with `d` the input dimension, so its
    spectrum is taken densely; an operator (e.g. `linear_operator(matvec, d)`
    or `hessian_operator`) goes through the same normalising helper as the
    Hessian routines (`softhard.landscape.as_operator`).
    """
    if callable(M) and not isinstance(M, LinearOperator):
        raise ValueError(
            f"`{name}` must be a square matrix [d, d] or a LinearOperator; wrap a matvec "
            "with `softhard.landscape.linear_operator(matvec, d)`"
        )
    return as_operator(M, name=name).dense()


def rayleigh_quotient(M, v):
    """Rayleigh quotient `vᵀMv / vᵀv` (Prop 6.3); `M: [d, d]` or an operator, `v: [d]` -> scalar."""
    M = _as_matrix(M)
    v = check_vector(v, M.shape[0], "v", nonzero=True)
    return jnp.dot(v, jnp.dot(M, v, precision=_HP), precision=_HP) / jnp.dot(v, v)


class OperatorSpectrum(NamedTuple):
    """Eigen-decomposition of a symmetric operator, with its overlap with a direction `u`.

    Attributes:
        eigenvalues: `[d]`, descending (`λ_1 ≥ λ_2 ≥ …`).
        eigenvectors: `[d, d]`, column `i` is the unit eigenvector `e_i` of `λ_i`.
        overlaps: `[d]`, `|⟨e_i, u/|u|⟩|`.
        aligned_index: scalar int, the index `i` with the largest overlap.
    """

    eigenvalues: jax.Array  # [d] descending
    eigenvectors: jax.Array  # [d, d] columns
    overlaps: jax.Array  # [d]
    aligned_index: jax.Array  # [] int


def _eigh_desc(M):
    lam, vec = jnp.linalg.eigh(0.5 * (M + M.T))
    return lam[::-1], vec[:, ::-1]


def operator_spectrum(M, u) -> OperatorSpectrum:
    """Eigenvalues (descending), eigenvectors and the eigenvector most aligned with `u`.

    Prop 6.3: if `uᵀMu > 0` some eigenpair has `λ_i > 0` and `⟨e_i, u⟩ ≠ 0`;
    `overlaps` shows which.

    Args:
        M: `[d, d]` symmetric matrix (e.g. `effective_operator`) or a
            `LinearOperator` of size `d`.
        u: `[d]` non-zero direction.

    Returns:
        `OperatorSpectrum(eigenvalues [d], eigenvectors [d, d], overlaps [d], aligned_index [])`.
    """
    M = _as_matrix(M)
    u = check_vector(u, M.shape[0], "u", nonzero=True)
    lam, vec = _eigh_desc(M)
    ov = jnp.abs(jnp.dot(vec.T, u, precision=_HP)) / jnp.linalg.norm(u)
    return OperatorSpectrum(lam, vec, ov, jnp.argmax(ov))


def alignment(v, u):
    """Alignment `|cos(v, u)| = |⟨v, u⟩| / (|v| |u|)`; `v: [..., d]`, `u: [d]` -> `[...]`.

    Zero for `v = 0` (no direction yet).
    """
    v = jnp.asarray(v)
    u = jnp.asarray(u)
    if v.ndim < 1 or u.ndim != 1 or v.shape[-1] != u.shape[0]:
        raise ValueError(f"`v` must be [..., d] and `u` [d]; got {v.shape} and {u.shape}")
    num = jnp.abs(jnp.sum(v * jnp.broadcast_to(u, v.shape), axis=-1))
    den = jnp.linalg.norm(v, axis=-1) * jnp.linalg.norm(u)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def amplification(M, eta):
    """Per-step amplification `1 + η λ_i` of `φ ← (I + ηM)φ` (6.7, 6.9): `[d]`, descending."""
    M = _as_matrix(M)
    check_positive(eta, "eta")
    return 1.0 + eta * _eigh_desc(M)[0]


def alignment_rate(M, eta):
    """Alignment rate `ρ(τ, η) = max_{i≥2} |1 + ηλ_i| / (1 + ηλ_1)` (6.11).

    The non-leading-to-leading coefficient ratio of `φ_t = (I + ηM)^t φ_0`
    decays like `ρ^t` (6.10) when `1 + ηλ_i > 0` for all `i`
    (`is_sign_stable`) and `1 + ηλ_1 > 0`.

    Args:
        M: `[d, d]` symmetric, `d ≥ 2`, or a `LinearOperator` of size `d`.
        eta: scalar step size `> 0`.

    Returns:
        scalar `ρ`.
    """
    a = 1.0 + eta * _rate_eigenvalues(M, eta)
    return jnp.max(jnp.abs(a[1:])) / a[0]


def _rate_eigenvalues(M, eta) -> jax.Array:
    """Checked eigenvalues `[d]` (descending, `d ≥ 2`) of `M` for the alignment rates."""
    M = _as_matrix(M)
    if M.shape[0] < 2:
        raise ValueError(f"`M` must be at least 2 x 2 for an alignment rate, got {M.shape}")
    check_positive(eta, "eta")
    return _eigh_desc(M)[0]


def alignment_rate_small_step(M, eta):
    """Small-step form `ρ ≈ 1 − η(λ_1 − λ_2)` of (6.11), i.e. (6.12): scalar.

    Args:
        M: `[d, d]` symmetric, `d ≥ 2`, or a `LinearOperator`; eta: scalar `> 0`.
    """
    lam = _rate_eigenvalues(M, eta)
    return 1.0 - eta * (lam[0] - lam[1])


def saturation_rate(cov, u, response="sign", *, scale=1.0):
    """The `τ → 0` limit of the alignment rate at fixed `η` (6.12): `max_{i≥2} |λ̃_i| / λ̃_1`.

    `M = M̃/τ` with `M̃ = τ M` independent of `τ`, so
    `ρ = max_{i≥2} |1 + ηλ̃_i/τ| / (1 + ηλ̃_1/τ) → max_{i≥2} |λ̃_i| / λ̃_1`;
    when all `λ̃_i > 0` (every response with `κ ≥ 0`) this is `λ̃_2/λ̃_1`:
    the rate saturates instead of improving like `1/τ`.

    Args:
        cov: `[d, d]`, `d ≥ 2`; u: `[d]`; response, scale: as in `effective_operator`.

    Returns:
        scalar.
    """
    cov = check_cov(cov)
    if cov.shape[0] < 2:
        raise ValueError(f"`cov` must be at least 2 x 2 for an alignment rate, got {cov.shape}")
    lam = _eigh_desc(effective_operator(cov, u, 1.0, response, scale=scale))[0]
    return jnp.max(jnp.abs(lam[1:])) / lam[0]


def is_sign_stable(M, eta):
    """Sign-stability `1 + ηλ_i > 0` for every eigenvalue (the condition of (6.10)): bool scalar."""
    M = _as_matrix(M)
    check_positive(eta, "eta")
    return jnp.all(1.0 + eta * _eigh_desc(M)[0] > 0)
