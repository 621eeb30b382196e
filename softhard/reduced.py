"""Section 6: the reduced model, its exact risk and linearisation, router training (§6, §7.3).

* **The reduced model** ([P] setup, [R] parametrisation): a Gaussian
  input `X ~ N(0, Σ)`, a noiseless two-cell linear teacher and a two-expert
  linear student with antisymmetric router scores `±φᵀx/2`
  (`reduced_model`). Its risk `R(φ)` is available on a sample
  (`reduced_risk`) and exactly (`reduced_risk_exact`, a self-contained
  quadrature accurate to about 1e-12 that agrees with
  `softhard.gaussian.exact_soft_risk` to 1e-13 and, unlike it, accepts the
  degenerate router `φ = 0` and is differentiable there), and
  `exact_linearisation` differentiates the exact risk at the symmetric
  point `φ = 0` [X], beside the response model's effective operator
  (6.6) from `softhard.symmetry`.
* **Router-only training** (`train_router`): gradient descent on one fixed
  sample, `vmap`ped over temperatures, recording the columns of Table 3.

The paper's Table 3 set-up is `softhard.diagnostics.setups.table3_model`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.polynomial.hermite_e import hermegauss

from ._validate import (
    check_count,
    check_cov,
    check_key,
    check_nonnegative,
    check_positive,
    check_tau,
    check_taus,
    check_vector,
    check_xy,
    float_dtype,
    floor_tau,
    is_concrete,
    poisons,
)
from .models import LinearExperts, LinearRouter, MoE, Teacher
from .symmetry import _gl, _t_nodes, alignment, effective_operator

__all__ = [
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
]

_HP = jax.lax.Precision.HIGHEST

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
    cov = check_cov(cov)
    d = cov.shape[0]
    u = check_vector(u, d, "u", nonzero=True)
    beta0 = check_vector(beta0, d, "beta0")
    gamma = check_vector(gamma, d, "gamma")
    if student_contrast is None:
        if jnp.shape(contrast) != () or (is_concrete(contrast) and not np.isfinite(contrast)):
            raise ValueError(f"`contrast` must be a finite scalar, got {contrast!r}")
        delta = contrast * jnp.asarray(gamma)
    else:
        delta = check_vector(student_contrast, d, "student_contrast")
    dtype = float_dtype(cov, u, beta0, gamma, delta)
    cov, u, beta0, gamma, delta = (a.astype(dtype) for a in (cov, u, beta0, gamma, delta))
    bbar = beta0  # the best shared linear predictor (see above)
    return ReducedModel(cov, u, beta0, gamma, bbar + 0.5 * delta, bbar - 0.5 * delta)


def _check_model(model) -> ReducedModel:
    if not isinstance(model, ReducedModel):
        raise ValueError(
            f"`model` must be a ReducedModel (build it with reduced_model), got {type(model)}"
        )
    cov = check_cov(model.cov, "model.cov")
    d = cov.shape[0]
    for name in ("u", "beta0", "gamma", "beta1", "beta2"):
        check_vector(getattr(model, name), d, f"model.{name}", nonzero=name == "u")
    return model


def reduced_moe(model: ReducedModel, phi) -> MoE:
    """The student at router `φ` as a core `MoE(LinearRouter, LinearExperts)`.

    Router logits `(φᵀx/2, −φᵀx/2)`, experts `(β_1ᵀx, β_2ᵀx)`; so
    `softhard.soft_risk(reduced_moe(model, φ), x, y, τ) == reduced_risk(model, φ, x, y, τ)`.
    """
    model = _check_model(model)
    phi = check_vector(phi, model.u.shape[0], "phi")
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
    check_key(key)
    n = check_count(n, "n")
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


@poisons(tau="tau")
def reduced_risk(model: ReducedModel, phi, x, y, tau):
    """Empirical risk `R(φ) = (1/N) Σ (y_n − f(x_n))²`, `f = f_2 + σ(φᵀx/τ)(f_1 − f_2)` (§6).

    Args:
        model: `ReducedModel`; phi: `[d]` router; x: `[N, d]`; y: `[N]`;
        tau: scalar `> 0`.

    Returns:
        scalar objective (differentiable in `phi`).
    """
    model = _check_model(model)
    phi = check_vector(phi, model.u.shape[0], "phi")
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
# on [σ_u, 10 σ_u]: the rule `symmetry.response_moments` uses (`_t_nodes`).


_GH_NODES = 64
_LOGISTIC_PANELS = ((-45.0, -15.0), (-15.0, -5.0), (-5.0, 5.0), (5.0, 15.0), (15.0, 45.0))
_LOGISTIC_NODES = 40


@functools.lru_cache(maxsize=8)
def _hermite_e(n: int):
    x, w = hermegauss(n)
    return x, w / math.sqrt(2.0 * math.pi)


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
    v_ii = jnp.einsum("kl,jl->kj", dens * wl[None, :], g, precision=_HP)
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
    mv = lambda a, b: jnp.dot(a, b, precision=_HP)
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
        H = _smooth(2, mz, w_std) / jnp.array([1.0, tau, tau**2])[None, :]
        (g0, g1, g2), (h0, h1, h2) = H[0], H[1]
        cross = (m_D * m_d + K_Dd) * g0 + (m_D * c_d + m_d * c_D) * g1 + c_D * c_d * g2
        sq = (m_d**2 + k_dd) * h0 + 2 * m_d * c_d * h1 + c_d**2 * h2
        return m_D**2 + K_DD - 2.0 * cross + sq

    t = s_u * tn
    signs = jnp.concatenate([jnp.ones_like(t), -jnp.ones_like(t)])
    vals = jax.vmap(conditional)(signs * jnp.concatenate([t, t]), signs)
    return jnp.sum(jnp.concatenate([wn, wn]) * vals)


@poisons(tau="tau")
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
    phi = check_vector(phi, model.u.shape[0], "phi")
    check_tau(tau)
    dtype = jnp.result_type(model.cov, phi, tau)
    # a τ below the floor is the τ → 0 limit to working precision (`_validate.floor_tau`)
    return _exact_risk(model, phi, floor_tau(tau, dtype))


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


@poisons(tau="tau", scale="positive")
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
    M = effective_operator(model.cov, model.u, tau, response, scale=scale)  # checks the response
    drift, hess = _linearise(model, tau)
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
        alignment(phi, model.u),
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
            keep = lambda a, b: jnp.where(done_now, a, b)
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

    With `softhard.diagnostics.setups.table3_model()` and these defaults the
    final records reproduce Table 3 within a few per cent. The stopping rule is what makes
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
    steps = check_count(steps, "steps")
    check_key(key)
    d = model.u.shape[0]
    if optimizer is None:
        check_positive(learning_rate, "learning_rate")
        optimizer = optax.sgd(learning_rate)
    elif not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise ValueError(f"`optimizer` must be an optax.GradientTransformation, got {optimizer!r}")
    check_nonnegative(gtol, "gtol")
    if init is None:
        check_positive(init_norm, "init_norm")
        c = init_alignment
        if jnp.shape(c) != () or not 0.0 <= float(c) <= 1.0 or (d == 1 and float(c) != 1.0):
            raise ValueError(
                f"`init_alignment` must be a scalar in [0, 1] (1 when d = 1), got {c!r}"
            )
    else:
        init = check_vector(init, d, "init")
    kx, kd = jax.random.split(key)
    if sample is None:
        x, y = reduced_sample(model, kx, check_count(n, "n"))
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
