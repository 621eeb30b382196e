"""Section 6: the effective operator, its exact counterpart, and router-only training (§6, §7.3).

Three layers, each usable on its own:

* **The response model** (6.3)–(6.12). Under the project's [R] convention
  (EQUATIONS.md §6) the residual–contrast product responds to a small router
  score `z` through a slope `κ(t)` that depends on the teacher score
  `t = uᵀx` only, and the linearised router gradient is `∇_φ R = −M φ` with
  the effective operator `M = E[κ(T) X Xᵀ] / (2τ)` (6.6). `effective_operator`
  evaluates Lemma 6.1's closed form; `operator_spectrum`, `amplification`,
  `alignment_rate`, `alignment_rate_small_step`, `saturation_rate` and
  `is_sign_stable` turn `M` into the quantities of Prop 6.3 and (6.9)–(6.12).
* **The actual reduced model** ([P] setup, [R] parametrisation): a Gaussian
  input `X ~ N(0, Σ)`, a noiseless two-cell linear teacher and a two-expert
  linear student with antisymmetric router scores `±φᵀx/2`
  (`reduced_model`). Its risk `R(φ)` is available on a sample
  (`reduced_risk`) and exactly (`reduced_risk_exact`, a self-contained
  quadrature accurate to about 1e-12 that agrees with
  `softhard.gaussian.exact_soft_risk` to 1e-13 and, unlike it, accepts the
  degenerate router `φ = 0` and is differentiable there), and
  `exact_linearisation` differentiates the exact risk at the symmetric
  point `φ = 0` [X].
* **Router-only training** (`train_router`): gradient descent on one fixed
  sample, `vmap`ped over temperatures, recording the columns of Table 3.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from ._stats import chunk_size_for, stream_moments
from ._validate import check_tau, check_taus, check_xy, is_concrete
from .models import LinearExperts, LinearRouter, MoE, Teacher

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
    "ReducedModel",
    "reduced_model",
    "reduced_moe",
    "reduced_teacher",
    "reduced_sample",
    "reduced_risk",
    "reduced_risk_exact",
    "ExactLinearisation",
    "exact_linearisation",
    "TrainResult",
    "train_router",
    "table3_model",
    "TABLE3_TAUS",
]

_HP = jax.lax.Precision.HIGHEST
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

#: the temperatures of Table 3 (§7.3)
TABLE3_TAUS = (0.05, 0.1, 0.2, 0.4)


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------


def _float_dtype(*xs):
    # Python scalars stay weakly typed: float32 arrays with a float `tau` stay float32
    return jnp.result_type(*xs, float)


def _check_cov(cov, name: str = "cov"):
    cov = jnp.asarray(cov)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a square covariance matrix [d, d], got shape {cov.shape}"
        )
    if is_concrete(cov):
        c = np.asarray(cov, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"`{name}` must be finite")
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-12):
            raise ValueError(f"`{name}` must be symmetric")
        if np.linalg.eigvalsh(c).min() <= 0:
            raise ValueError(f"`{name}` must be positive definite")
    return cov


def _check_vector(v, d: int, name: str, *, nonzero: bool = False):
    v = jnp.asarray(v)
    if v.shape != (d,):
        raise ValueError(f"`{name}` must have shape [d] = ({d},), got shape {v.shape}")
    if is_concrete(v):
        a = np.asarray(v)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite, got {a}")
        if nonzero and not np.any(a != 0):
            raise ValueError(f"`{name}` must be a non-zero vector")
    return v


def _check_square(M, name: str = "M"):
    M = jnp.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
        raise ValueError(f"`{name}` must be a square symmetric matrix [d, d], got shape {M.shape}")
    if is_concrete(M):
        a = np.asarray(M, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite")
        if not np.allclose(a, a.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(a).max())):
            raise ValueError(f"`{name}` must be symmetric")
    return M


def _check_positive(x, name: str):
    if jnp.shape(x) != ():
        raise ValueError(f"`{name}` must be a positive scalar, got shape {jnp.shape(x)}")
    if is_concrete(x):
        v = float(np.asarray(x))
        if not (v > 0 and np.isfinite(v)):
            raise ValueError(f"`{name}` must be a finite number > 0, got {v!r}")
    return x


def _check_count(n, name: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_key(key, name: str = "key"):
    if key is None:
        raise ValueError(f"`{name}` must be a jax.random key (no default key is used)")
    return key


# ----------------------------------------------------------------------------
# the response model: κ and the moments c_0, c_2 (Lemma 6.1)
# ----------------------------------------------------------------------------


_GH_NODES = 64
_LOGISTIC_PANELS = ((-45.0, -15.0), (-15.0, -5.0), (-5.0, 5.0), (5.0, 15.0), (15.0, 45.0))
_LOGISTIC_NODES = 40
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
    _check_positive(scale, "scale")


@functools.lru_cache(maxsize=8)
def _hermite_e(n: int):
    x, w = hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


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
    cov = _check_cov(cov)
    u = _check_vector(u, cov.shape[0], "u", nonzero=True)
    check_tau(tau)
    _check_response(response, scale)
    dtype = _float_dtype(cov, u, tau)
    cov, u = cov.astype(dtype), u.astype(dtype)
    s_u = _sigma_u(cov, u)
    c0, c2 = response_moments(s_u, response, scale=scale)
    su = jnp.dot(cov, u, precision=_HP)
    coef = c2 / s_u**4 - c0 / s_u**2
    M = (c0 * cov + coef * jnp.outer(su, su)) / (2.0 * tau)
    return 0.5 * (M + M.T)


def effective_operator_mc(key, cov, u, tau, response="sign", n: int = 100_000, *, scale=1.0):
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
    _check_key(key)
    cov = _check_cov(cov)
    d = cov.shape[0]
    u = _check_vector(u, d, "u", nonzero=True)
    check_tau(tau)
    _check_response(response, scale)
    n = _check_count(n, "n", 2)
    dtype = _float_dtype(cov, u, tau)
    cov, u = cov.astype(dtype), u.astype(dtype)
    kappa = _response_kappa(response, scale)
    x = jax.random.normal(key, (n, d), dtype) @ jnp.linalg.cholesky(cov).T

    def per_sample(xc):
        k = kappa(jnp.dot(xc, u, precision=_HP))
        outer = jnp.einsum("ni,nj->ijn", xc, xc, precision=_HP)
        return k[None, None, :] * outer / (2.0 * tau)

    return stream_moments(per_sample, (x,), chunk_size_for(n, d * d))


# ----------------------------------------------------------------------------
# spectra, alignment and rates (Prop 6.3, (6.9)–(6.12))
# ----------------------------------------------------------------------------


def rayleigh_quotient(M, v):
    """Rayleigh quotient `vᵀMv / vᵀv` (Prop 6.3); `M: [d, d]`, `v: [d]` non-zero -> scalar."""
    M = _check_square(M)
    v = _check_vector(v, M.shape[0], "v", nonzero=True)
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
        M: `[d, d]` symmetric matrix (e.g. `effective_operator`).
        u: `[d]` non-zero direction.

    Returns:
        `OperatorSpectrum(eigenvalues [d], eigenvectors [d, d], overlaps [d], aligned_index [])`.
    """
    M = _check_square(M)
    u = _check_vector(u, M.shape[0], "u", nonzero=True)
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
    return _alignment(v, u)


def _alignment(v, u):
    num = jnp.abs(jnp.sum(v * u, axis=-1))
    den = jnp.linalg.norm(v, axis=-1) * jnp.linalg.norm(u)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def amplification(M, eta):
    """Per-step amplification `1 + η λ_i` of `φ ← (I + ηM)φ` (6.7, 6.9): `[d]`, descending."""
    M = _check_square(M)
    _check_positive(eta, "eta")
    return 1.0 + eta * _eigh_desc(M)[0]


def alignment_rate(M, eta):
    """Alignment rate `ρ(τ, η) = max_{i≥2} |1 + ηλ_i| / (1 + ηλ_1)` (6.11).

    The non-leading-to-leading coefficient ratio of `φ_t = (I + ηM)^t φ_0`
    decays like `ρ^t` (6.10) when `1 + ηλ_i > 0` for all `i`
    (`is_sign_stable`) and `1 + ηλ_1 > 0`.

    Args:
        M: `[d, d]` symmetric, `d ≥ 2`.
        eta: scalar step size `> 0`.

    Returns:
        scalar `ρ`.
    """
    M = _check_square(M)
    if M.shape[0] < 2:
        raise ValueError(f"`M` must be at least 2 x 2 for an alignment rate, got {M.shape}")
    _check_positive(eta, "eta")
    a = 1.0 + eta * _eigh_desc(M)[0]
    return jnp.max(jnp.abs(a[1:])) / a[0]


def alignment_rate_small_step(M, eta):
    """Small-step form `ρ ≈ 1 − η(λ_1 − λ_2)` of (6.11), i.e. (6.12): scalar.

    Args:
        M: `[d, d]` symmetric, `d ≥ 2`; eta: scalar `> 0`.
    """
    M = _check_square(M)
    if M.shape[0] < 2:
        raise ValueError(f"`M` must be at least 2 x 2 for an alignment rate, got {M.shape}")
    _check_positive(eta, "eta")
    lam = _eigh_desc(M)[0]
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
    cov = _check_cov(cov)
    if cov.shape[0] < 2:
        raise ValueError(f"`cov` must be at least 2 x 2 for an alignment rate, got {cov.shape}")
    lam = _eigh_desc(effective_operator(cov, u, 1.0, response, scale=scale))[0]
    return jnp.max(jnp.abs(lam[1:])) / lam[0]


def is_sign_stable(M, eta):
    """Sign-stability `1 + ηλ_i > 0` for every eigenvalue (the condition of (6.10)): bool scalar."""
    M = _check_square(M)
    _check_positive(eta, "eta")
    return jnp.all(1.0 + eta * _eigh_desc(M)[0] > 0)


# ----------------------------------------------------------------------------
# the actual reduced model (§6 setup)
# ----------------------------------------------------------------------------


class ReducedModel(NamedTuple):
    """The Section 6 teacher and two-expert student (a pytree; the router `φ` is separate).

    Teacher: `X ~ N(0, Σ)`, `Y = β_0ᵀX + ½γᵀX` on `C_+ = {uᵀX > 0}` and
    `β_0ᵀX − ½γᵀX` on `C_−` (noiseless). Student: `f_1 = β_1ᵀx`, `f_2 = β_2ᵀx`,
    gate `π_1 = σ(φᵀx/τ)` from the antisymmetric scores `±φᵀx/2`.

    Attributes:
        cov: `[d, d]` input covariance `Σ`.
        u: `[d]` teacher separator.
        beta0: `[d]` teacher shared baseline `β_0`.
        gamma: `[d]` teacher contrast `γ` (expert difference `f*_+ − f*_−`).
        beta1: `[d]` student expert 1 (used where `φᵀx > 0`).
        beta2: `[d]` student expert 2.
    """

    cov: jax.Array  # [d, d]
    u: jax.Array  # [d]
    beta0: jax.Array  # [d]
    gamma: jax.Array  # [d]
    beta1: jax.Array  # [d]
    beta2: jax.Array  # [d]


def reduced_model(cov, u, beta0, gamma, *, student_contrast=None, contrast=0.25):
    """Build the Section 6 teacher and student (setup of §6, parametrisation [R]).

    The student experts are a small contrast around the best shared linear
    predictor `β̄ = argmin_b E[(Y − bᵀX)²]`: `β_1 = β̄ + Δ/2`,
    `β_2 = β̄ − Δ/2`, so `f_1 − f_2 = Δᵀx`. For this teacher `β̄ = β_0`:
    `E[XY] = Σβ_0 + ½ E[sign(uᵀX) X Xᵀ] γ`, and the second term vanishes
    because `sign(uᵀX) X Xᵀ` is odd under `X → −X` (the two cells are
    mirror images); the tests check it by least squares on a sample.

    Args:
        cov: `[d, d]` covariance `Σ ≻ 0`.
        u: `[d]` non-zero teacher separator.
        beta0: `[d]` teacher baseline `β_0`.
        gamma: `[d]` teacher contrast `γ`.
        student_contrast: `[d]` student contrast `Δ = β_1 − β_2`; default
            `contrast · γ`.
        contrast: scalar used when `student_contrast` is None (default 0.25).

    Returns:
        `ReducedModel(cov, u, beta0, gamma, beta1, beta2)`.
    """
    cov = _check_cov(cov)
    d = cov.shape[0]
    u = _check_vector(u, d, "u", nonzero=True)
    beta0 = _check_vector(beta0, d, "beta0")
    gamma = _check_vector(gamma, d, "gamma")
    if student_contrast is None:
        if jnp.shape(contrast) != () or (is_concrete(contrast) and not np.isfinite(contrast)):
            raise ValueError(f"`contrast` must be a finite scalar, got {contrast!r}")
        delta = contrast * jnp.asarray(gamma)
    else:
        delta = _check_vector(student_contrast, d, "student_contrast")
    dtype = _float_dtype(cov, u, beta0, gamma, delta)
    cov, u, beta0, gamma, delta = (a.astype(dtype) for a in (cov, u, beta0, gamma, delta))
    bbar = beta0  # the best shared linear predictor (see above)
    return ReducedModel(cov, u, beta0, gamma, bbar + 0.5 * delta, bbar - 0.5 * delta)


def _check_model(model) -> ReducedModel:
    if not isinstance(model, ReducedModel):
        raise ValueError(
            f"`model` must be a ReducedModel (build it with reduced_model), got {type(model)}"
        )
    cov = _check_cov(model.cov, "model.cov")
    d = cov.shape[0]
    for name in ("u", "beta0", "gamma", "beta1", "beta2"):
        _check_vector(getattr(model, name), d, f"model.{name}", nonzero=name == "u")
    return model


def table3_model(d: int = 5, *, dtype=None) -> ReducedModel:
    """The reduced model behind this toolkit's reproduction of Table 3 (§7.3).

    `Σ = I_d`, `u = e_1`, `β_0 = (1, …, 1)/√d`, teacher contrast
    `γ = 0.25 e_1 + 2.94 e_2` (almost tangent to the separator, with a small
    positive component along `u`, (6.8)), and student contrast `Δ = γ/4`
    around the best shared predictor `β_0`. The paper does not print its
    configuration; these values were chosen so that the population risk
    along `u`, `R = R_0 + C τ/‖φ‖ + O((τ/‖φ‖)³)`, has the `R_0 ≈ 1.224` and
    `C ≈ 0.98` that Table 3's risk and norm columns imply
    (`R_0 = |γ − Δ|²/4`, `C = φ(0)(2 ln 2 γ_⊥·Δ_⊥ − |Δ_⊥|²)` [X]). With
    `train_router`'s defaults it gives Table 3 to within a few per cent.

    Args:
        d: input dimension `≥ 2`.
        dtype: float dtype (default: JAX's default float).

    Returns:
        `ReducedModel`.
    """
    d = _check_count(d, "d", 2)
    dtype = dtype or jnp.result_type(float)
    e = jnp.eye(d, dtype=dtype)
    gamma = 0.25 * e[0] + 2.94 * e[1]
    return reduced_model(e, e[0], jnp.ones(d, dtype) / math.sqrt(d), gamma, contrast=0.25)


def reduced_moe(model: ReducedModel, phi) -> MoE:
    """The student at router `φ` as a core `MoE(LinearRouter, LinearExperts)`.

    Router logits `(φᵀx/2, −φᵀx/2)`, experts `(β_1ᵀx, β_2ᵀx)`; so
    `softhard.soft_risk(reduced_moe(model, φ), x, y, τ) == reduced_risk(model, φ, x, y, τ)`.
    """
    model = _check_model(model)
    phi = _check_vector(phi, model.u.shape[0], "phi")
    W = jnp.stack([0.5 * phi, -0.5 * phi])
    z = jnp.zeros(2, W.dtype)
    return MoE(LinearRouter(W, z), LinearExperts(jnp.stack([model.beta1, model.beta2]), z))


def reduced_teacher(model: ReducedModel) -> Teacher:
    """The teacher as a core `Teacher`: cell 0 is `C_+ = {uᵀx > 0}` with expert `β_0 + γ/2`."""
    model = _check_model(model)
    u = model.u
    z = jnp.zeros(2, u.dtype)
    router = LinearRouter(jnp.stack([0.5 * u, -0.5 * u]), z)
    experts = LinearExperts(
        jnp.stack([model.beta0 + 0.5 * model.gamma, model.beta0 - 0.5 * model.gamma]), z
    )
    return Teacher(router, experts)


def reduced_sample(model: ReducedModel, key, n: int):
    """Draw `(x: [n, d], y: [n])`, `X ~ N(0, Σ)`, `Y` the noiseless teacher of §6."""
    model = _check_model(model)
    _check_key(key)
    n = _check_count(n, "n")
    d = model.u.shape[0]
    x = jax.random.normal(key, (n, d), model.cov.dtype) @ jnp.linalg.cholesky(model.cov).T
    return x, _teacher_y(model, x)


def _teacher_y(model, x):
    t = jnp.dot(x, model.u, precision=_HP)
    return jnp.dot(x, model.beta0, precision=_HP) + 0.5 * jnp.sign(t) * jnp.dot(
        x, model.gamma, precision=_HP
    )


@jax.jit
def _sample_risk(model, phi, x, y, tau):
    z = jnp.dot(x, phi, precision=_HP)
    f2 = jnp.dot(x, model.beta2, precision=_HP)
    df = jnp.dot(x, model.beta1 - model.beta2, precision=_HP)
    return jnp.mean((y - f2 - jax.nn.sigmoid(z / tau) * df) ** 2)


def reduced_risk(model: ReducedModel, phi, x, y, tau):
    """Empirical risk `R(φ) = (1/N) Σ (y_n − f(x_n))²`, `f = f_2 + σ(φᵀx/τ)(f_1 − f_2)` (§6).

    Args:
        model: `ReducedModel`; phi: `[d]` router; x: `[N, d]`; y: `[N]`;
        tau: scalar `> 0`.

    Returns:
        scalar objective (differentiable in `phi`).
    """
    model = _check_model(model)
    phi = _check_vector(phi, model.u.shape[0], "phi")
    x, y = check_xy(x, y)
    if x.shape[1] != model.u.shape[0]:
        raise ValueError(f"`x` must have shape [N, {model.u.shape[0]}], got {x.shape}")
    check_tau(tau)
    return _sample_risk(model, phi, x, y, tau)


# ----------------------------------------------------------------------------
# exact risk by quadrature
# ----------------------------------------------------------------------------
#
# Given T = uᵀX = t, X = b t + W with b = Σu/σ_u², W ~ N(0, Σ_W),
# Σ_W = Σ − Σuuᵀ Σ/σ_u². The residual is r = Dᵀ X − g(Z) Δᵀ X with
# D = β_0 − β_2 + sign(t) γ/2, Δ = β_1 − β_2, g(z) = σ(z/τ), Z = φᵀX. Given t
# the vector (DᵀX, ΔᵀX, Z) is Gaussian and Stein's identity gives, for
# jointly Gaussian L_1, L_2, Z (means m_i, μ; Cov(L_i, Z) = c_i; Var Z = v),
#
#     E[h(Z) L_1 L_2] = (m_1 m_2 + K_12) E h + (m_1 c_2 + m_2 c_1) E h' + c_1 c_2 E h'',
#
# so E[r² | t] needs E[(σ^k)^{(j)}(Z/τ)] for k = 1, 2 and j = 0, 1, 2 only.
# Those 1-D Gaussian smoothings H_{k,j}(m, w) = E[(σ^k)^{(j)}(m + √w ξ)] carry a
# custom JVP (∂_m H_{k,j} = H_{k,j+1}, ∂_w H_{k,j} = ½ H_{k,j+2}: the heat
# equation), so the risk is differentiable to any order, including at φ = 0
# where w = 0 and √w is not. Their values: Gauss–Hermite in ξ when w ≤ 1 (the
# sigmoid is wider than the Gaussian), and when w > 1 the identity
# E[σ(Z)^k] = P(M_k ≤ Z) = E[Φ((m − M_k)/√w)] with M_k the maximum of k
# standard logistic variables (cdf σ^k), by composite Gauss–Legendre in M_k.
# The outer integral over t is split at t = 0 (where sign(t) jumps and the
# router transition sits) and uses Gauss–Legendre in log t on (0, σ_u], which
# resolves transitions of any width down to 1e-14 σ_u, plus plain Gauss–Legendre
# on [σ_u, 10 σ_u].


@functools.lru_cache(maxsize=1)
def _logistic_nodes():
    xs, ws = zip(*(_gl(_LOGISTIC_NODES, a, b) for a, b in _LOGISTIC_PANELS), strict=True)
    return np.concatenate(xs), np.concatenate(ws)


@functools.lru_cache(maxsize=32)
def _sigma_power_coeffs(k: int, J: int) -> np.ndarray:
    """`d^j/dx^j σ(x)^k = Σ_{a,b} C[j, a, b] p^a q^b` (`p = σ(x)`, `q = σ(−x)`), `j ≤ J`.

    `dp/dx = pq = −dq/dx`, so `D(p^a q^b) = a p^a q^(b+1) − b p^(a+1) q^b`;
    keeping `q` separate avoids the cancellation in `1 − p`. Returns
    `C: [J+1, k+J+1, k+J+1]`.
    """
    n = k + J + 1
    C = np.zeros((J + 1, n, n))
    C[0, k, 0] = 1.0
    for j in range(J):
        for a, b in zip(*np.nonzero(C[j]), strict=True):
            c = C[j, a, b]
            C[j + 1, a, b + 1] += a * c
            C[j + 1, a + 1, b] -= b * c
    return C


def _sigma_power_derivatives(k: int, J: int, x):
    """`[J+1, *x.shape]`: `d^j/dx^j σ(x)^k`, `j = 0..J`."""
    C = jnp.asarray(_sigma_power_coeffs(k, J), x.dtype)
    e = jnp.arange(C.shape[1], dtype=x.dtype)
    P = jax.nn.sigmoid(x)[None] ** e.reshape((-1,) + (1,) * x.ndim)
    Q = jax.nn.sigmoid(-x)[None] ** e.reshape((-1,) + (1,) * x.ndim)
    return jnp.einsum("jab,a...,b...->j...", C, P, Q, precision=_HP)


def _hermite_prob(n: int, q):
    """Probabilists' Hermite polynomial `He_n(q)` by the three-term recurrence."""
    h0, h1 = jnp.ones_like(q), q
    if n == 0:
        return h0
    for i in range(1, n):
        h0, h1 = h1, q * h1 - i * h0
    return h1


def _smooth_impl(J: int, m, w):
    dtype = jnp.result_type(m, w)
    # regime (i): w ≤ 1, Gauss–Hermite in ξ
    xi, wxi = (jnp.asarray(a, dtype) for a in _hermite_e(_GH_NODES))
    w_small = jnp.where(w <= 1.0, w, 0.0)
    xs = m + jnp.sqrt(w_small) * xi
    v_i = jnp.stack([_sigma_power_derivatives(k, J, xs) @ wxi for k in (1, 2)])  # [2, J+1]
    # regime (ii): w > 1, E[Φ^{(j)}((m − M_k)/√w)] w^{−j/2}, M_k the max of k logistics
    lam, wl = (jnp.asarray(a, dtype) for a in _logistic_nodes())
    w_big = jnp.where(w > 1.0, w, 2.0)
    sw = jnp.sqrt(w_big)
    q = (m - lam) / sw
    pdf = jax.scipy.stats.norm.pdf(q)
    g = [jax.scipy.stats.norm.cdf(q)]
    g += [(-1.0) ** (j - 1) * _hermite_prob(j - 1, q) * pdf / sw**j for j in range(1, J + 1)]
    g = jnp.stack(g)  # [J+1, L]
    dens = jnp.stack([k * jax.nn.sigmoid(lam) ** k * jax.nn.sigmoid(-lam) for k in (1, 2)])
    v_ii = jnp.einsum("kl,jl->kj", dens * wl, g, precision=_HP)
    return jnp.where(w <= 1.0, v_i, v_ii)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _smooth(J: int, m, w):
    """`[2, J+1]`: `H_{k,j}(m, w) = E[(σ^k)^{(j)}(m + √w ξ)]`, `ξ ~ N(0,1)`, k = 1, 2, j ≤ J.

    The JVP is the heat equation: `∂_m H_{k,j} = H_{k,j+1}`, `∂_w H_{k,j} = ½ H_{k,j+2}`.
    """
    return _smooth_impl(J, m, w)


@_smooth.defjvp
def _smooth_jvp(J, primals, tangents):
    m, w = primals
    dm, dw = tangents
    big = _smooth(J + 2, m, w)
    out = big[:, : J + 1]
    return out, big[:, 1 : J + 2] * dm + 0.5 * big[:, 2 : J + 3] * dw


@jax.jit
def _exact_risk(model: ReducedModel, phi, tau):
    cov, u = model.cov, model.u
    dtype = jnp.result_type(cov, phi, tau)
    mv = lambda a, b: jnp.dot(a, b, precision=_HP)  # noqa: E731
    su = mv(cov, u)
    var_u = mv(u, su)
    s_u = jnp.sqrt(var_u)
    b = su / var_u
    cov_w = cov - jnp.outer(su, su) / var_u
    delta = model.beta1 - model.beta2
    alpha = model.beta0 - model.beta2
    half_g = 0.5 * model.gamma

    # coefficients of the conditional means (per unit t) and covariances
    db_a, db_g, db_d, db_p = mv(alpha, b), mv(half_g, b), mv(delta, b), mv(phi, b)
    cw_phi = mv(cov_w, phi)
    v = mv(phi, cw_phi)
    c_a, c_g, c_d = mv(alpha, cw_phi), mv(half_g, cw_phi), mv(delta, cw_phi)
    cwd = mv(cov_w, delta)
    k_dd = mv(delta, cwd)
    k_ad, k_gd = mv(alpha, cwd), mv(half_g, cwd)
    cwa, cwg = mv(cov_w, alpha), mv(cov_w, half_g)
    k_aa, k_gg, k_ag = mv(alpha, cwa), mv(half_g, cwg), mv(alpha, cwg)

    tn, wn = (jnp.asarray(a, dtype) for a in _t_nodes())
    w_std = v / tau**2

    def conditional(t, s):
        # E[r² | T = t] with sign(t) = s; D = α + s γ/2
        m_D = (db_a + s * db_g) * t
        m_d = db_d * t
        K_DD = k_aa + 2 * s * k_ag + k_gg
        K_Dd = k_ad + s * k_gd
        c_D = c_a + s * c_g
        mz = db_p * t / tau
        H = _smooth(2, mz, w_std) / jnp.array([1.0, tau, tau**2])
        (g0, g1, g2), (h0, h1, h2) = H[0], H[1]
        cross = (m_D * m_d + K_Dd) * g0 + (m_D * c_d + m_d * c_D) * g1 + c_D * c_d * g2
        sq = (m_d**2 + k_dd) * h0 + 2 * m_d * c_d * h1 + c_d**2 * h2
        return m_D**2 + K_DD - 2.0 * cross + sq

    t = s_u * tn
    signs = jnp.concatenate([jnp.ones_like(t), -jnp.ones_like(t)])
    vals = jax.vmap(conditional)(signs * jnp.concatenate([t, t]), signs)
    return jnp.sum(jnp.concatenate([wn, wn]) * vals)


def reduced_risk_exact(model: ReducedModel, phi, tau):
    """Population risk `R(φ) = E[(Y − f(X))²]` of the reduced model, by quadrature (§6).

    Self-contained: conditional on `T = uᵀX` the residual's moments are
    closed-form (Stein's identity for the Gaussian `(DᵀX, ΔᵀX, φᵀX)`),
    leaving six 1-D Gaussian smoothings of `σ(·)^k` and their derivatives
    and one outer integral over `T` split at the teacher boundary. Accurate
    to about 1e-12 (float64) for sharpness `|φ|/τ` up to 1e6 in any
    direction; differentiable to any order in `φ` (custom JVPs implement the
    heat equation), including at `φ = 0`.

    Args:
        model: `ReducedModel`; phi: `[d]` router; tau: scalar `> 0`.

    Returns:
        scalar `R(φ)`.
    """
    model = _check_model(model)
    phi = _check_vector(phi, model.u.shape[0], "phi")
    check_tau(tau)
    return _exact_risk(model, phi, tau)


class ExactLinearisation(NamedTuple):
    """The reduced model's exact first-order router dynamics at `φ = 0`, next to the response model.

    Attributes:
        drift: `[d]`, `∇_φ R(0)` (gradient descent moves along `−drift`).
        linear_part: `[d, d]`, `−∇²_φ R(0)`, so `∇_φ R(φ) = drift − linear_part φ + O(|φ|²)`.
        operator: `[d, d]`, the response model's `M` (6.6), for which `∇_φ R = −M φ + o(|φ|)` (6.5).
    """

    drift: jax.Array  # [d]
    linear_part: jax.Array  # [d, d]
    operator: jax.Array  # [d, d]


def exact_linearisation(model: ReducedModel, tau, *, response="sign", scale=1.0):
    """Exact linearisation of the reduced model's router gradient at `φ = 0` [X], beside `M`.

    By autodiff through `reduced_risk_exact`: `drift = ∇_φ R(0)` and
    `linear_part = −∇²_φ R(0)`, so `∇_φ R(φ) = drift − linear_part φ + O(|φ|²)`,
    compared with the response model's `∇_φ R(φ) = −M φ + o(|φ|)` (6.5),
    `M = effective_operator(model.cov, model.u, tau, response)`.

    What the comparison shows. In the actual reduced model the symmetric
    point is *not* a critical point. At `φ = 0` every gate is `1/2` and the
    drift is `∇_φ R(0) = −E[r_0 ΔᵀX X]/(2τ) = −E[sign(uᵀX)(γᵀX)(ΔᵀX) X]/(4τ)`
    (`r_0 = Y − (f_1 + f_2)/2`), non-zero as soon as the student contrast `Δ`
    correlates with the teacher contrast `γ` across the separator; for
    `Δ = cγ`, `c > 0`, its descent direction has a positive component
    `E[|uᵀX|(γᵀX)(ΔᵀX)]/(4τ)` along `u`. The exact linear part
    `−∇²_φ R(0) = −E[(ΔᵀX)² X Xᵀ]/(8τ²)` is negative definite: the router
    curvature at `φ = 0` is positive, so the linearised flow is a drift
    towards `φ* = linear_part⁻¹ drift`, a point at distance `O(τ)`, where the
    linearisation stops being valid — symmetry is broken by the drift, not by
    an instability. The response model (6.3) removes the drift (`ψ` is odd
    in `z`) and replaces it by the instability `+Mφ`, `M ≻ 0` for `κ ≥ 0`,
    whose unstable direction is correlated with `u` (Prop 6.3). The two
    agree on where the router goes (towards `u`) but not on how; `M`
    describes a configuration only where the drift is negligible against
    `Mφ`.

    Args:
        model: `ReducedModel`; tau: scalar `> 0`; response, scale: as in
            `effective_operator`.

    Returns:
        `ExactLinearisation(drift [d], linear_part [d, d], operator [d, d])`.
    """
    model = _check_model(model)
    check_tau(tau)
    _check_response(response, scale)
    drift, hess = _linearise(model, tau)
    M = effective_operator(model.cov, model.u, tau, response, scale=scale)
    return ExactLinearisation(drift, -0.5 * (hess + hess.T), M)


@jax.jit
def _linearise(model, tau):
    phi0 = jnp.zeros_like(model.u)
    grad = jax.grad(_exact_risk, argnums=1)
    return grad(model, phi0, tau), jax.jacfwd(grad, argnums=1)(model, phi0, tau)


# ----------------------------------------------------------------------------
# router-only training (§7.3, Table 3)
# ----------------------------------------------------------------------------


class TrainResult(NamedTuple):
    """Per-step records of router-only training at `T` temperatures (Table 3's columns).

    Row `i` belongs to `taus[i]`; column `s` is the state after `s` steps
    (column 0 is the initial router). All quantities are measured on the
    training sample.

    Attributes:
        risk: `[T, S+1]`, empirical risk `R(φ_s)`.
        alignment: `[T, S+1]`, `|cos(φ_s, u)|`.
        norm: `[T, S+1]`, `‖φ_s‖`.
        boundary_mass: `[T, S+1]`, the fraction of the sample with `|φ_sᵀx| ≤ 2τ` (2.13).
        entropy: `[T, S+1]`, mean binary gate entropy in nats, `0 log 0 = 0`.
        grad_norm: `[T, S+1]`, `‖∇_φ R(φ_s)‖`.
        phi: `[T, d]`, the final routers.
        stop_step: `[T]` int, the first step with `‖∇R‖ ≤ gtol` (updates stop
            there), or `S` if none.
    """

    risk: jax.Array  # [T, S+1]
    alignment: jax.Array  # [T, S+1]
    norm: jax.Array  # [T, S+1]
    boundary_mass: jax.Array  # [T, S+1]
    entropy: jax.Array  # [T, S+1]
    grad_norm: jax.Array  # [T, S+1]
    phi: jax.Array  # [T, d]
    stop_step: jax.Array  # [T] int


def _metrics(model, phi, x, y, tau):
    risk, g = jax.value_and_grad(_sample_risk, argnums=1)(model, phi, x, y, tau)
    a = jnp.abs(jnp.dot(x, phi, precision=_HP)) / tau
    # binary entropy of σ(±a), H = −p log p − q log q = log(1 + e^{−a}) + a σ(−a):
    # finite for every a, and → 0 as a → ∞ (0·log 0 = 0)
    ent = jnp.log1p(jnp.exp(-a)) + a * jax.nn.sigmoid(-a)
    mass = jnp.mean((a <= 2.0).astype(a.dtype))
    return (
        risk,
        _alignment(phi, model.u),
        jnp.linalg.norm(phi),
        mass,
        jnp.mean(ent),
        jnp.linalg.norm(g),
    ), g


@functools.partial(jax.jit, static_argnames=("steps", "optimizer"))
def _train(model, taus, x, y, phi0, gtol, steps, optimizer):
    def run(tau):
        state0 = (phi0, optimizer.init(phi0), jnp.array(False), jnp.array(steps))

        def step(carry, s):
            phi, opt, done, stop = carry
            rec, g = _metrics(model, phi, x, y, tau)
            done_now = done | (rec[-1] <= gtol)
            stop = jnp.where(done_now & ~done, s, stop)
            upd, opt_new = optimizer.update(g, opt, phi)
            phi_new = optax.apply_updates(phi, upd)
            keep = lambda a, b: jnp.where(done_now, a, b)  # noqa: E731
            phi = keep(phi, phi_new)
            opt = jax.tree.map(keep, opt, opt_new)
            return (phi, opt, done_now, stop), rec

        (phi, _, _, stop), recs = jax.lax.scan(step, state0, jnp.arange(steps))
        last, _ = _metrics(model, phi, x, y, tau)
        recs = tuple(jnp.concatenate([r, e[None]]) for r, e in zip(recs, last, strict=True))
        return recs, phi, stop

    recs, phi, stop = jax.vmap(run)(taus)
    return TrainResult(*recs, phi=phi, stop_step=stop)


def _default_init(model, key, init_norm, init_alignment):
    d = model.u.shape[0]
    u = model.u / jnp.linalg.norm(model.u)
    r = jax.random.normal(key, (d,), model.cov.dtype)
    r = r - jnp.dot(r, u) * u
    r = r / jnp.linalg.norm(r)
    c = init_alignment
    return init_norm * (c * u + jnp.sqrt(1.0 - c**2) * r)


def train_router(
    model: ReducedModel,
    taus,
    steps: int = 1500,
    *,
    key,
    n: int = 20_000,
    sample=None,
    optimizer=None,
    learning_rate=0.05,
    init=None,
    init_norm=0.01,
    init_alignment=0.1,
    gtol=0.025,
) -> TrainResult:
    """Router-only training of the reduced model on one fixed sample, at every temperature (§7.3).

    Keeps the student experts fixed and runs `steps` optimiser steps on the
    empirical risk `R(φ)` (`reduced_risk`) of one sample, from the same
    initial router at every temperature (`lax.scan` over steps, `vmap` over
    `taus`). Training at a temperature stops (the router is frozen) at the
    first step where `‖∇_φ R‖ ≤ gtol`; `gtol = 0` disables this.

    The sample is `reduced_sample(model, k1, n)` and the default initial
    router is drawn with `k2`, where `k1, k2 = jax.random.split(key)`. The
    default initial router has norm `init_norm` (near balance: every gate
    ≈ 1/2) and alignment `|cos(φ_0, u)| = init_alignment`, the rest of its
    direction uniform on the unit sphere orthogonal to `u`.

    With `table3_model()` and these defaults the final records reproduce
    Table 3 within a few per cent. The stopping rule is what makes
    `‖φ‖ ∝ sqrt(τ)`, as in the paper's norm column: along `u` the risk is
    `R_0 + C τ/‖φ‖ + …` (boundary-layer expansion), so `‖∇R‖ ≈ Cτ/‖φ‖²`
    and the router stops at `‖φ‖ ≈ sqrt(Cτ/gtol)`; with a fixed step budget
    and no stopping rule, gradient descent gives `‖φ‖ ∝ τ^{1/3}` instead.

    Args:
        model: `ReducedModel`.
        taus: `[T]` temperatures `> 0`.
        steps: number of optimiser steps `S ≥ 1` (static).
        key: `jax.random` key for the sample and the initial direction.
        n: sample size (ignored when `sample` is given).
        sample: optional `(x: [N, d], y: [N])` to train on instead.
        optimizer: an `optax.GradientTransformation` (static);
            default `optax.sgd(learning_rate)`.
        learning_rate: step size of the default optimiser.
        init: optional `[d]` initial router (overrides `init_norm`/`init_alignment`).
        init_norm: scalar `> 0`, norm of the default initial router.
        init_alignment: scalar in `[0, 1]`, its `|cos|` with `u`.
        gtol: scalar `≥ 0`, gradient-norm stopping tolerance.

    Returns:
        `TrainResult` with `[T, steps + 1]` per-step records and the final routers.
    """
    model = _check_model(model)
    taus = check_taus(taus)
    steps = _check_count(steps, "steps")
    _check_key(key)
    d = model.u.shape[0]
    if optimizer is None:
        _check_positive(learning_rate, "learning_rate")
        optimizer = optax.sgd(learning_rate)
    elif not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise ValueError(f"`optimizer` must be an optax.GradientTransformation, got {optimizer!r}")
    if jnp.shape(gtol) != () or not float(gtol) >= 0:
        raise ValueError(f"`gtol` must be a scalar >= 0, got {gtol!r}")
    if init is None:
        _check_positive(init_norm, "init_norm")
        c = init_alignment
        if jnp.shape(c) != () or not 0.0 <= float(c) <= 1.0 or (d == 1 and float(c) != 1.0):
            raise ValueError(
                f"`init_alignment` must be a scalar in [0, 1] (1 when d = 1), got {c!r}"
            )
    else:
        init = _check_vector(init, d, "init")
    kx, kd = jax.random.split(key)
    if sample is None:
        x, y = reduced_sample(model, kx, _check_count(n, "n"))
    else:
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise ValueError("`sample` must be a pair (x: [N, d], y: [N])")
        x, y = check_xy(*sample)
        if x.shape[1] != d:
            raise ValueError(f"`sample` x must have shape [N, {d}], got {x.shape}")
    if init is None:
        phi0 = _default_init(model, kd, init_norm, c) if d > 1 else init_norm * model.u
    else:
        phi0 = init
    dtype = model.cov.dtype
    return _train(
        model,
        taus.astype(dtype),
        x.astype(dtype),
        y.astype(dtype),
        jnp.asarray(phi0, dtype),
        jnp.asarray(gtol, dtype),
        steps,
        optimizer,
    )
