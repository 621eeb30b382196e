"""Level-set densities, surface integrals and first-order gap coefficients (§3).

Everything here rests on one identity, the coarea formula (EQUATIONS.md §3,
[X]): for a score `s: R^d -> R` with `|∇_x s| > 0` near `{s = t}`, an input
density `p` and an integrand `g`,

    m_g(t) := ∫_{s=t} g p/|∇s| dH^{d-1} = lim_{h→0} E[k_h(s(X) − t) g(X)],

so a surface integral is the value at `t` of a one-dimensional function that
a kernel-smoothed sample mean estimates. `m_1(t) = G(t)` is the density of
`s(X)` at `t` (3.8); `g |∇s|` in place of `g` gives the plain surface
integral `∫_{s=t} g p dH^{d-1}` (`|∇_x s|` by autodiff).

Kernels and bandwidth (`kernel_smoothed_mean`):

* Two-sided: the Gaussian kernel `k(z) = φ(z)` (second order: `∫k = 1`,
  `∫z k = 0`, `μ₂ = ∫z² k = 1`, `R(k) = ∫k² = 1/(2√π)`).
* One-sided limits `m(t±)` (jumps across an interface): `m(t±) = p_s(t) μ(t±)`,
  `μ(t±) = lim E[g | s = t±]`, with `p_s(t)` from the two-sided kernel and
  `μ(t±)` by one-sided local-linear regression with half-Gaussian weights
  (self-normalised, so its variance is that of `g` about its local trend;
  equivalent kernel `(c₀ + c₁ z) φ(z) 1{z > 0}`, `c₀ ≈ 5.504`, `c₁ ≈ −4.391`,
  `μ₂ ≈ −0.752`, `R ≈ 1.786`; bias `O(h²)`). The curvature `μ''(t±)` and the
  residual variance come from a local-quadratic pilot fit at `2 σ̂ N^{-1/7}`;
  `h ≥ 200/(N p_s(t))` so the fit always sees a few hundred samples.
* Boundary densities (`gap_coefficient`, a pair holding only part of the
  sample): `p_on(t±) = E[K⁺_h(s − t) 1_on]` with the equivalent kernel
  `K⁺ = (c₀ + c₁ z) φ(z) 1{z > 0}` above (`∫ = 1`, `∫ z = 0`, bias `O(h²)`
  even where `p_on` has a kink at `t`), at its own AMSE bandwidth from a pilot
  `p_on''(t±)` (kernel of local-quadratic order 2 on the half-line).
* Bandwidth: the AMSE-optimal `h = (R(k) v / (N μ₂² m''²))^{1/5} ∝ N^{-1/5}`,
  which balances the squared bias `(h² μ₂ m''/2)²` against the variance
  `R(k) v/(N h)`, with `v = m_{g²}(t)` and `m''(t)` plugged in from a pilot
  pass at `h_p = σ̂ N^{-1/9}` (`σ̂ = min(sd, √(π/2) E|s − E s|)` of `s`;
  second derivative by the kernel `(z² − 1)φ(z)`); one-sided: `v = Var(g|s=t±)/p_s(t)`
  and `m''` replaced by `μ''(t±)`. `h` is kept in `[10⁻³ h_p, h_p]`.
* Standard error: `sqrt(var/N + b²)` with `var` the sample variance of the
  per-sample terms `k_h(s − t) g` (one-sided: the sandwich variance of the
  local-linear intercept, combined with the density's error by the delta
  method) and `b = h² |μ₂| sqrt(m̂''² + se(m̂'')²)/2` the estimated smoothing
  bias, so it covers both error sources.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._stats import Estimate, chunk_size_for, scale_estimate, stream_moments
from ._validate import (
    check_delta,
    check_finite_params,
    check_k,
    check_kind,
    check_logits,
    check_x,
    check_xy,
    is_concrete,
)
from .boundary import KINDS
from .models import is_top1, routing_of
from .routing import expert_outputs, logits, pair_indices

__all__ = [
    "kernel_smoothed_mean",
    "kernel_bandwidth",
    "level_set_density",
    "surface_integral",
    "pairwise_level_set_densities",
    "ambiguity_coefficient",
    "gap_coefficient",
]

_SIDES = ("both", "right", "left")
_MEASURES = ("coarea", "hausdorff")
_TWO_LN2 = 2.0 * math.log(2.0)

# ----------------------------------------------------------------------------
# kernels: polynomial × Gaussian, on the whole line or one half-line
# ----------------------------------------------------------------------------


class _Kernel(NamedTuple):
    coeffs: tuple  # polynomial coefficients c_0..c_p of K(z) = Σ c_k z^k φ(z)
    side: str  # "both" | "right" (z ≥ 0) | "left" (z < 0)
    order: int  # ν: K estimates the ν-th derivative (∫ z^ν K = ν!)
    R: float  # ∫ K²
    mu2: float  # ∫ z² K (the h² bias constant for ν = 0)


def _half_moment(k: int) -> float:
    # ∫_0^∞ z^k φ(z) dz
    return 2.0 ** (k / 2) * math.gamma((k + 1) / 2) / (2.0 * math.sqrt(math.pi))


def _moment(k: int, side: str) -> float:
    if side == "both":
        return 0.0 if k % 2 else 2.0 * _half_moment(k)
    return _half_moment(k) * (1.0 if side == "right" or k % 2 == 0 else -1.0)


def _sq_moment(k: int, side: str) -> float:
    # ∫ z^k φ(z)² dz over the support
    half = math.gamma((k + 1) / 2) / (4.0 * math.pi)
    if side == "both":
        return 0.0 if k % 2 else 2.0 * half
    return half * (1.0 if side == "right" or k % 2 == 0 else -1.0)


@functools.cache
def _kernel(order: int, degree: int, side: str) -> _Kernel:
    """Equivalent kernel of local-polynomial fitting: moments `∫ z^j K = ν! δ_jν`, j ≤ degree."""
    M = np.array([[_moment(i + j, side) for j in range(degree + 1)] for i in range(degree + 1)])
    rhs = np.zeros(degree + 1)
    rhs[order] = math.factorial(order)
    c = np.linalg.solve(M, rhs)
    R = sum(
        c[i] * c[j] * _sq_moment(i + j, side) for i in range(degree + 1) for j in range(degree + 1)
    )
    mu2 = sum(c[i] * _moment(i + 2, side) for i in range(degree + 1))
    return _Kernel(tuple(float(v) for v in c), side, order, float(R), float(mu2))


def _value_kernel(side: str) -> _Kernel:
    return _kernel(0, 0, "both") if side == "both" else _kernel(0, 1, side)


def _eval_kernel(k: _Kernel, z: jax.Array) -> jax.Array:
    poly = jnp.zeros_like(z)
    for c in reversed(k.coeffs):
        poly = poly * z + c
    val = poly * jnp.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    if k.side == "right":
        val = jnp.where(z >= 0, val, 0.0)
    elif k.side == "left":
        val = jnp.where(z < 0, val, 0.0)
    return val


# ----------------------------------------------------------------------------
# kernel-smoothed means
# ----------------------------------------------------------------------------


class _Smoothed(NamedTuple):
    value: jax.Array  # [P]
    se_var: jax.Array  # [P] sampling standard error
    bias: jax.Array  # [P] estimated smoothing bias magnitude
    bandwidth: jax.Array  # [P]


def _robust_scale(s: jax.Array) -> jax.Array:
    # min(sd, sqrt(π/2)·mean|s − mean|): Silverman's guard against heavy tails,
    # without the sort a quantile needs
    c = s - jnp.mean(s)
    sd = jnp.sqrt(jnp.mean(c * c))
    mad = math.sqrt(math.pi / 2.0) * jnp.mean(jnp.abs(c))
    scale = jnp.minimum(sd, mad)
    return jnp.where(scale > 0, scale, jnp.ones_like(scale))


def _auto_bandwidth(R, mu2, v, curv2, n, h_lo, h_hi):
    # AMSE-optimal h = (R v / (n μ₂² m''²))^{1/5}, kept in [h_lo, h_hi]
    ok = (curv2 > 0) & (v > 0)
    ratio = jnp.where(ok, R * v / (n * mu2**2 * jnp.where(ok, curv2, 1.0)), 1.0)
    h = jnp.where(ok, ratio**0.2, jnp.where(v > 0, h_hi, h_lo))
    return jnp.clip(h, h_lo, h_hi)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _two_sided(s, g, t, bandwidth, *, chunk) -> _Smoothed:
    # s: [N], g: [N, P], t: scalar, bandwidth: [P] (NaN: automatic)
    n = s.shape[0]
    k0, k2 = _value_kernel("both"), _kernel(2, 2, "both")
    h_p = _robust_scale(s) * n ** (-1.0 / 9.0)

    def pilot(sc, gc):
        z = (sc - t) / h_p
        w0 = _eval_kernel(k0, z) / h_p
        w2 = _eval_kernel(k2, z) / h_p**3
        gt = gc.T  # [P, n]
        return w2[None, :] * gt, w0[None, :] * gt * gt

    curv, second = stream_moments(pilot, (s, g), chunk)
    curv2 = curv.value**2 + curv.stderr**2  # conservative |m''|²
    v = jnp.maximum(second.value, 0.0)  # m_{g²}(t)
    h = _auto_bandwidth(k0.R, k0.mu2, v, curv2, n, 1e-3 * h_p, h_p)
    h = jnp.where(jnp.isnan(bandwidth), h, bandwidth)

    def final(sc, gc):
        z = (sc[None, :] - t) / h[:, None]  # [P, n]
        return (_eval_kernel(k0, z) / h[:, None] * gc.T,)

    (est,) = stream_moments(final, (s, g), chunk)
    bias = 0.5 * h**2 * abs(k0.mu2) * jnp.sqrt(curv2)
    return _Smoothed(est.value, est.stderr, bias, h)


class _LocalFit(NamedTuple):
    beta: jax.Array  # [D+1, P] coefficients of 1, z, …, z^D (z = (s − t)/h)
    se: jax.Array  # [D+1, P] sandwich standard errors
    sigma2: jax.Array  # [P] weighted residual variance ≈ Var(g | s = t±)
    ok: jax.Array  # [P] bool: enough samples in the window for a determined fit


def _local_fit(s, g, t, h, *, side, degree, chunk) -> _LocalFit:
    """One-sided local-polynomial regression of `g` on `z = (s − t)/h`, half-Gaussian weights."""
    half = _kernel(0, 0, "both")._replace(side=side)  # φ(z) on the half-line

    def weights(sc):
        z = (sc[None, :] - t) / h[:, None]  # [P, n]
        return z, _eval_kernel(half, z) / h[:, None]

    def moments(sc, gc):
        z, w = weights(sc)
        zp = jnp.stack([z**k for k in range(2 * degree + 1)])  # [2D+1, P, n]
        return w[None] * zp, w[None] * zp[: degree + 1] * gc.T[None]

    S, T = stream_moments(moments, (s, g), chunk)
    idx = np.add.outer(np.arange(degree + 1), np.arange(degree + 1))
    Smat = jnp.moveaxis(S.value[idx], -1, 0)  # [P, D+1, D+1]
    Sinv = jnp.linalg.inv(Smat)
    beta = jnp.einsum("pij,jp->ip", Sinv, T.value)  # [D+1, P]

    def residuals(sc, gc):
        z, w = weights(sc)
        zp = jnp.stack([z**k for k in range(degree + 1)])  # [D+1, P, n]
        eps = gc.T - jnp.einsum("kp,kpn->pn", beta, zp)
        infl = jnp.einsum("pij,jpn->ipn", Sinv, zp) * (w * eps)[None]
        return infl, w * eps * eps

    infl, r2 = stream_moments(residuals, (s, g), chunk)
    sigma2 = r2.value / S.value[0]
    # effective count of samples at the window's edge t: n Σ-weight · h · √(2π) ≈ #{z ≲ 1}
    count = s.shape[0] * S.value[0] * h * math.sqrt(2.0 * math.pi)
    ok = (count >= 3.0 * (degree + 1)) & jnp.all(jnp.isfinite(Sinv), axis=(1, 2))
    return _LocalFit(beta, infl.stderr, sigma2, ok)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _one_sided(s, g, t, p, se_p, bandwidth, *, chunk) -> _Smoothed:
    # m(t+) = p_s(t) · E[g | s = t+], given the density p = p_s(t) ± se_p; the
    # one-sided regression limit by local-linear fitting (self-normalised, so
    # its variance is that of g about its local trend, not of g itself).
    # The left limit is this one for (−s, −t).
    n = s.shape[0]
    P = g.shape[1]
    k0 = _value_kernel("right")  # the equivalent kernel of local-linear fitting
    p_safe = jnp.maximum(p, jnp.finfo(s.dtype).tiny)
    h_p = 2.0 * _robust_scale(s) * n ** (-1.0 / 7.0)
    pil = _local_fit(s, g, t, jnp.full((P,), h_p), side="right", degree=2, chunk=chunk)
    curv2 = (2.0 * pil.beta[2] / h_p**2) ** 2 + (2.0 * pil.se[2] / h_p**2) ** 2  # |μ''|²
    h_lo = jnp.maximum(1e-3 * h_p, 200.0 / (n * p_safe))
    h = _auto_bandwidth(k0.R, k0.mu2, pil.sigma2 / p_safe, curv2, n, h_lo, h_p)
    h = jnp.where(jnp.isnan(bandwidth), h, bandwidth)
    fit = _local_fit(s, g, t, h, side="right", degree=1, chunk=chunk)
    mu, se_mu = fit.beta[0], fit.se[0]
    bias_mu = 0.5 * h**2 * abs(k0.mu2) * jnp.sqrt(curv2)
    se_var = jnp.sqrt((p * se_mu) ** 2 + (mu * se_p) ** 2)
    # no data at the level (an interface far from the sample, a pair that never
    # meets): m(t+) = p μ with p ≈ 0 and |μ| ≤ max|g|, so 0 ± (p + se_p) max|g|
    ok = pil.ok & fit.ok
    g_max = jnp.max(jnp.abs(g), axis=0)
    value = jnp.where(ok, p * mu, 0.0)
    se_var = jnp.where(ok, se_var, (p + se_p) * g_max)
    return _Smoothed(value, se_var, jnp.where(ok, p * bias_mu, 0.0), h)


def _prepare(s, g, t, bandwidth, side, chunk_size):
    s = jnp.asarray(s)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(f"`s` must be a 1-D array [N] of scores with N >= 2, got shape {s.shape}")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.result_type(float))
    g = jnp.asarray(g)
    if g.ndim not in (1, 2) or g.shape[0] != s.shape[0]:
        raise ValueError(
            f"`g` must have shape [N] or [N, P] with N = {s.shape[0]} matching `s`, got {g.shape}"
        )
    dtype = jnp.result_type(s.dtype, g.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    if jnp.shape(t) != ():
        raise ValueError(f"`t` must be a scalar level, got shape {jnp.shape(t)}")
    check_kind(side, "side", _SIDES)
    g2 = g[:, None] if g.ndim == 1 else g
    P = g2.shape[1]
    if bandwidth is not None:
        bandwidth = jnp.asarray(bandwidth, dtype)
        if bandwidth.shape not in ((), (P,)):
            raise ValueError(
                f"`bandwidth` must be a scalar or have shape [P] = ({P},), got {bandwidth.shape}"
            )
        if is_concrete(bandwidth) and not bool(np.all(np.asarray(bandwidth) > 0)):
            raise ValueError(f"`bandwidth` must be > 0, got {np.asarray(bandwidth)}")
        bw = jnp.broadcast_to(bandwidth, (P,))
    else:
        bw = jnp.full((P,), jnp.nan, dtype)
    chunk = chunk_size_for(s.shape[0], 8 * P, chunk_size)
    return s.astype(dtype), g2.astype(dtype), jnp.asarray(t, dtype), bw, chunk, g.ndim == 1


def _smoothed_checked(s, g, t, bandwidth, side, chunk_size) -> tuple[_Smoothed, bool]:
    s, g2, t, bw, chunk, squeeze = _prepare(s, g, t, bandwidth, side, chunk_size)
    if side == "both":
        out = _two_sided(s, g2, t, bw, chunk=chunk)
    else:
        ones = jnp.ones((s.shape[0], 1), s.dtype)
        nan = jnp.full((1,), jnp.nan, s.dtype)
        dens = _two_sided(s, ones, t, nan, chunk=chunk_size_for(s.shape[0], 8, chunk_size))
        p, se_p = dens.value[0], jnp.sqrt(dens.se_var[0] ** 2 + dens.bias[0] ** 2)
        sign = 1.0 if side == "right" else -1.0
        out = _one_sided(sign * s, g2, sign * t, p, se_p, bw, chunk=chunk)
    return out, squeeze


def _to_estimate(out: _Smoothed, squeeze: bool) -> Estimate:
    stderr = jnp.sqrt(out.se_var**2 + out.bias**2)
    if squeeze:
        return Estimate(out.value[0], stderr[0])
    return Estimate(out.value, stderr)


def kernel_smoothed_mean(
    s: jax.Array,
    g: jax.Array,
    *,
    t=0.0,
    bandwidth=None,
    side: str = "both",
    chunk_size: int | None = None,
) -> Estimate:
    """Estimate `lim_{h→0} E[k_h(s − t) g]`, a level-set integral by coarea (§3, [X]).

    With `s = s(X)` and `g = g(X)` sampled from the input law, the limit is
    `m_g(t) = ∫_{s=t} g p/|∇s| dH^{d-1}` (EQUATIONS.md §3): with `g = 1` the
    density `G(t)` of `s(X)` (3.8), with `g |∇s|` the plain surface integral.
    The kernel, the automatic bandwidth (`∝ N^{-1/5}`, AMSE-optimal with a
    pilot estimate of `m''(t)`) and the standard error `sqrt(var/N + bias²)`
    are described in the module docstring. `side="right"`/`"left"` give the
    one-sided limits `m(t+)`, `m(t−)` (from `s > t` / `s < t`), by one-sided
    local-linear regression times the density of `s` at `t` (which must be
    continuous there), for integrands that jump across `{s = t}`.

    Args:
        s: `[N]` score values `s(X_n)`.
        g: `[N]` or `[N, P]` integrand values `g(X_n)`.
        t: scalar level.
        bandwidth: `None` for the automatic bandwidth, or `> 0`, scalar or `[P]`.
        side: `"both"` (default), `"right"` or `"left"`.
        chunk_size: samples per streamed chunk (default: automatic).

    Returns:
        `Estimate` with value and stderr of shape `g.shape[1:]`.

    >>> s = jax.random.normal(jax.random.key(0), (100_000,))
    >>> est = kernel_smoothed_mean(s, jnp.ones_like(s))  # density of N(0, 1) at 0
    >>> bool(abs(est.value - 0.398942) < 3 * est.stderr)
    True
    """
    out, squeeze = _smoothed_checked(s, g, t, bandwidth, side, chunk_size)
    return _to_estimate(out, squeeze)


def kernel_bandwidth(s: jax.Array, g: jax.Array, *, t=0.0, side: str = "both") -> jax.Array:
    """The automatic bandwidth `kernel_smoothed_mean` uses: scalar, or `[P]` for `g: [N, P]`.

    Args:
        s: `[N]` scores; g: `[N]` or `[N, P]` integrand values; t: scalar level;
        side: `"both"`, `"right"` or `"left"`.
    """
    out, squeeze = _smoothed_checked(s, g, t, None, side, None)
    return out.bandwidth[0] if squeeze else out.bandwidth


# ----------------------------------------------------------------------------
# level-set densities and surface integrals of a score function
# ----------------------------------------------------------------------------

_MAP_BATCH = 1 << 15


def _check_scalar_fn(fn, name: str, x: jax.Array, allow_vector: bool = False):
    if not callable(fn):
        raise ValueError(f"`{name}` must be a callable x: [d] -> scalar, got {type(fn).__name__}")
    try:
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    except Exception as e:
        raise ValueError(
            f"`{name}` must map x: [d] = {x.shape[1:]} to a scalar; calling it failed: {e}"
        ) from e
    shape = getattr(out, "shape", None)
    if shape is None or not (shape == () or (allow_vector and len(shape) == 1)):
        want = "a scalar or [P]" if allow_vector else "a scalar"
        raise ValueError(f"`{name}` must map x: [d] to {want}, got output {out}")
    return out


def _as_float_x(x):
    x = check_x(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _per_sample(fn, x):
    return jax.lax.map(fn, x, batch_size=min(_MAP_BATCH, x.shape[0]))


def level_set_density(score_fn, x: jax.Array, t=0.0, *, bandwidth=None) -> Estimate:
    """Level-set profile `G(t) = ∫_{s=t} p/|∇s| dH^{d-1}` (3.8): the density of `s(X)` at `t`.

    By the coarea formula `G(t)` is the density of the scalar `s(X)`; it is
    estimated by `kernel_smoothed_mean(s(X), 1)` (Gaussian kernel, automatic
    bandwidth, stderr including the smoothing bias). For a linear score and a
    Gaussian input it equals `φ(m/σ_s)/σ_s` (3.14).

    Args:
        score_fn: `[d] -> scalar` score `s(x)`, e.g. `lambda x: a(x)[0] - a(x)[1]`.
        x: `[N, d]` samples of the input law.
        t: scalar level.
        bandwidth: `None` (automatic) or a bandwidth `> 0`.

    Returns:
        scalar `Estimate` of `G(t)`.

    >>> x = jax.random.normal(jax.random.key(0), (100_000, 2))
    >>> est = level_set_density(lambda v: v[0] + v[1], x)  # s ~ N(0, 2)
    >>> bool(abs(est.value - 0.282095) < 3 * est.stderr)
    True
    """
    x = _as_float_x(x)
    _check_scalar_fn(score_fn, "score_fn", x)
    s = _per_sample(score_fn, x)
    return kernel_smoothed_mean(s, jnp.ones_like(s), t=t, bandwidth=bandwidth)


def surface_integral(
    score_fn, x: jax.Array, g=None, t=0.0, *, measure: str = "coarea", bandwidth=None
) -> Estimate:
    """Surface integral of `g` over the level set `{s = t}` by the coarea formula (§3, [X]).

    `measure="coarea"`: `∫_{s=t} g p/|∇_x s| dH^{d-1} = lim E[k_h(s(X) − t) g(X)]`.
    `measure="hausdorff"`: `∫_{s=t} g p dH^{d-1} = lim E[k_h(s(X) − t) g(X) |∇_x s(X)|]`,
    with `∇_x s` by autodiff. `p` is the density the samples `x` come from. For
    a linear score `βᵀx + b` and `X ~ N(μ, Σ)` the two are `φ(m/σ_s)/σ_s` (3.14)
    and `|β| φ(m/σ_s)/σ_s`.

    Args:
        score_fn: `[d] -> scalar` score `s(x)`.
        x: `[N, d]` samples of the input law.
        g: `[d] -> scalar` (or `[P]`) integrand; `None` for `g = 1`.
        t: scalar level.
        measure: `"coarea"` (default) or `"hausdorff"`.
        bandwidth: `None` (automatic) or a bandwidth `> 0`.

    Returns:
        `Estimate`, scalar (or `[P]` for a vector-valued `g`).

    >>> x = jax.random.normal(jax.random.key(0), (100_000, 2))
    >>> est = surface_integral(lambda v: 2.0 * v[0], x, measure="hausdorff")
    >>> bool(abs(est.value - 0.398942) < 3 * est.stderr)  # ∫_{x₀=0} p dH¹ = φ(0)
    True
    """
    check_kind(measure, "measure", _MEASURES)
    x = _as_float_x(x)
    _check_scalar_fn(score_fn, "score_fn", x)
    if g is not None:
        _check_scalar_fn(g, "g", x, allow_vector=True)

    def per(xi):
        if measure == "hausdorff":
            sv, grad = jax.value_and_grad(score_fn)(xi)
            w = jnp.sqrt(jnp.sum(grad * grad))
        else:
            sv, w = score_fn(xi), jnp.ones((), xi.dtype)
        gv = jnp.ones((), xi.dtype) if g is None else g(xi)
        return sv, gv * w

    s, vals = _per_sample(per, x)
    return kernel_smoothed_mean(s, vals, t=t, bandwidth=bandwidth)


# ----------------------------------------------------------------------------
# pairwise versions (Lemma 3.6, (3.9), Prop 3.5)
# ----------------------------------------------------------------------------


def _top_two(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    # a: [N, K] -> the indices [N] of the largest and second-largest logits
    # (max/argmax twice: cheaper than lax.top_k on CPU; ties go to the lower index)
    first = jnp.argmax(a, axis=-1)
    masked = jnp.where(jax.nn.one_hot(first, a.shape[1], dtype=bool), -jnp.inf, a)
    return first, jnp.argmax(masked, axis=-1)


def _pair_batch(n: int, num_pairs: int) -> int:
    # pairs per vectorised batch: about 2^24 score values live at once
    return max(1, min(num_pairs, (1 << 24) // max(n, 1)))


def pairwise_level_set_densities(logits: jax.Array, *, t=0.0, top_two: bool = False) -> Estimate:
    """`G_ij(t)` (3.8) for every pair `i < j`: the density of `s_ij(X) = a_i − a_j` (3.1) at `t`.

    Lemma 3.6 gives `P(|s_ij(X)| ≤ w) = 2 w G_ij(0) + o(w)`, and (3.9) bounds
    `M_pair(w) ≤ 2 w Σ_{i<j} G_ij(0) + o(w)`. With `top_two=True` the level set
    is restricted to where `i, j` are the two largest logits,
    `G_ij^top(t) = ∫_{s_ij=t, {i,j} top two} p/|∇s_ij|`, so that
    `M(w) = 2 w Σ_{i<j} G_ij^top(0) + o(w)` ([X]). Only score values are
    needed, so this takes logits; each pair is the two-sided estimate of
    `kernel_smoothed_mean`, vectorised over batches of pairs (`lax.map`), so
    `K(K−1)/2` pairs cost one compiled pass, not a Python loop.

    Args:
        logits: `[N, K]` router logits `a(X_n)`, `N >= 2`.
        t: scalar level.
        top_two: restrict to the top-two interface (default `False`).

    Returns:
        `Estimate` of shape `[K(K−1)/2]`, pairs in `routing.pair_indices` order.
    """
    a = check_logits(logits)
    if a.shape[0] < 2:
        raise ValueError(f"`logits` must hold N >= 2 samples [N, K], got shape {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    if jnp.shape(t) != ():
        raise ValueError(f"`t` must be a scalar level, got shape {jnp.shape(t)}")
    n, K = a.shape
    ii, jj = (jnp.asarray(v) for v in pair_indices(K))
    first, second = _top_two(a)
    t = jnp.asarray(t, a.dtype)
    nan = jnp.full((1,), jnp.nan, a.dtype)
    chunk = chunk_size_for(n, 8, None)

    def one(ij):
        i, j = ij
        s = a[:, i] - a[:, j]
        if top_two:
            hit = ((first == i) & (second == j)) | ((first == j) & (second == i))
            w = hit.astype(a.dtype)
        else:
            w = jnp.ones_like(s)
        out = _two_sided(s, w[:, None], t, nan, chunk=chunk)
        return out.value[0], jnp.sqrt(out.se_var[0] ** 2 + out.bias[0] ** 2)

    vals, errs = jax.lax.map(one, (ii, jj), batch_size=_pair_batch(n, ii.shape[0]))
    return Estimate(vals, errs)


def ambiguity_coefficient(logits: jax.Array, eps, *, kind: str = "top2") -> Estimate:
    """The boundary-layer coefficient `C` with `P(ambiguous at ε) = C τ + o(τ)` (Prop 3.5).

    `C = 2 L_ε Σ_{i<j} G_ij(0)`, `L_ε = log((1−ε)/ε)` (2.15). For K = 2 this is
    Prop 3.5's `2 L_ε G(0)` for `P(ε ≤ π_1^τ ≤ 1−ε)`. For K > 2, `kind="pairwise"`
    gives the coefficient of `M_pair(τ L_ε) = P(∪ A_ij(τ, ε))` (3.6, 3.9) and
    `kind="top2"` that of `M(τ L_ε)` (top-two interfaces only, [X]); both
    agree for K = 2. The stderr adds the pairwise stderrs (conservative).

    Args:
        logits: `[N, K]` router logits.
        eps: scalar in `(0, 1/2)`.
        kind: `"top2"` (default) or `"pairwise"`.

    Returns:
        scalar `Estimate` of `C`.
    """
    check_delta(eps, "eps")
    check_kind(kind, "kind", KINDS)
    dens = pairwise_level_set_densities(logits, top_two=kind == "top2")
    L = jnp.log((1.0 - eps) / eps)
    # the pair densities share one sample: their errors add (a conservative sum)
    return scale_estimate(Estimate(jnp.sum(dens.value), jnp.sum(dens.stderr)), 2.0 * L)


# ----------------------------------------------------------------------------
# first-order soft-to-hard gap coefficient
# ----------------------------------------------------------------------------


class _Interface(NamedTuple):
    pair: jax.Array  # [N] int: index (routing.pair_indices order) of each sample's own pair
    lo: jax.Array  # [N] int: the lower index i of the pair (i, j), i < j
    hi: jax.Array  # [N] int: the higher index j
    df: jax.Array  # [N] Δ̃f = F_i − F_j: hard predictor with i selected minus with j selected
    f0: jax.Array  # [N] the hard predictor f_0^(k) (T.5)
    shift: jax.Array  # [N] L = log(D_i/D_j), D = Σ_{l∈S} c_l (0 for ρ = ∞ or c_i = c_j)


@functools.partial(jax.jit, static_argnames=("k",))
def _interfaces(select: jax.Array, combine: jax.Array, f: jax.Array, k: int, rho) -> _Interface:
    """Each sample's own interface `Γ_ij^k` (T.11): `i, j` the k-th and (k+1)-th selection scores.

    `T` = the top `k − 1` (capped in the layer). With `i` selected the hard
    predictor is `F_i = Σ_{T∪{i}} c_l f_l / D_i`, `D_i = Σ_{T∪{i}} c_l` (T.5), and
    across the layer the soft predictor is `F_j + (F_i − F_j) σ(s_ij/τ + L)`
    with `L = log(D_i/D_j)` (the Möbius map of `μ_i = σ(s_ij/τ)` is a shift).
    On `Γ_ij^k` with `c_i = c_j` (one score for selection and combine), `L = 0`
    and `F_i − F_j = ω (f_i − f_j)`, `ω = c_i/Σ_{S_k} c_l` (ρ = ∞: `1/k`).
    """
    K = select.shape[1]
    # the k-th and (k+1)-th in the order (−a_j, j) of `_gating.ranks` (T.2), in O(N K):
    # argmax k + 1 times, masking each winner (equal values: the lower index first)
    if k == 1:
        kth, nxt = _top_two(select)
        order = None
    else:
        picked, rest = [], select
        for _ in range(k + 1):
            picked.append(jnp.argmax(rest, axis=-1))
            rest = jnp.where(jax.nn.one_hot(picked[-1], K, dtype=bool), -jnp.inf, rest)
        order = jnp.stack(picked, axis=1)  # [N, k + 1]
        kth, nxt = order[:, k - 1], order[:, k]
    lo, hi = jnp.minimum(kth, nxt), jnp.maximum(kth, nxt)
    table = np.zeros((K, K), np.int32)
    ii, jj = pair_indices(K)
    table[np.asarray(ii), np.asarray(jj)] = np.arange(len(ii))
    pair = jnp.asarray(table)[lo, hi]
    if k == 1 and rho is None:  # top-1: F_i = f_i, exactly as the paper's K = 2 formula
        F_lo = jnp.take_along_axis(f, lo[:, None], axis=1)[:, 0]
        F_hi = jnp.take_along_axis(f, hi[:, None], axis=1)[:, 0]
        shift = jnp.zeros_like(F_lo)
    else:
        top = (
            jnp.zeros(select.shape, bool)
            if order is None
            else jnp.any(jax.nn.one_hot(order[:, : k - 1], K, dtype=bool), axis=1)
        )
        in_lo = top | jax.nn.one_hot(lo, K, dtype=bool)
        in_hi = top | jax.nn.one_hot(hi, K, dtype=bool)
        if rho is None:
            F_lo = jnp.sum(jnp.where(in_lo, f, 0.0), axis=1) / k
            F_hi = jnp.sum(jnp.where(in_hi, f, 0.0), axis=1) / k
            shift = jnp.zeros_like(F_lo)
        else:
            z = combine / rho  # log c_l (T.4), by log-sum-exp

            def side(mask):
                lD = jax.nn.logsumexp(jnp.where(mask, z, -jnp.inf), axis=1)
                w = jnp.where(mask, jnp.exp(z - lD[:, None]), 0.0)
                return jnp.sum(w * f, axis=1), lD

            (F_lo, lD_lo), (F_hi, lD_hi) = side(in_lo), side(in_hi)
            shift = lD_lo - lD_hi
    s_own = jnp.take_along_axis(select, lo[:, None], axis=1) - jnp.take_along_axis(
        select, hi[:, None], axis=1
    )
    f0 = jnp.where(s_own[:, 0] >= 0, F_lo, F_hi)  # ties: the lower index is selected (T.2)
    return _Interface(pair, lo, hi, F_lo - F_hi, f0, shift)


def _gap_terms(it: _Interface, y: jax.Array, on: jax.Array, top1: bool):
    """Integrands `(g_right, g_left, g_sq)` on one pair's samples `on: [N]` (T.11, residual form).

    Returns them with the constants `(c_side, c_sq)` of `c = c_side [m(0+) − m(0−)] + c_sq m_sq`.
    With `L` the layer shift, `∫_0^∞ (1 − σ(u + L)) du = softplus(−L)`,
    `∫_{−∞}^0 σ(u + L) du = softplus(L)` and `∫ (1{u>0} − σ(u + L))² du =
    softplus(L) + softplus(−L) − 1` (`= ln 2, ln 2, 2 ln 2 − 1` at `L = 0`).
    """
    g = on * it.df * (y - it.f0)
    g_sq = on * it.df * it.df
    if top1:
        return (g, g, g_sq), (_TWO_LN2, _TWO_LN2 - 1.0)
    a_plus, a_minus = jax.nn.softplus(-it.shift), jax.nn.softplus(it.shift)
    return (a_plus * g, a_minus * g, (a_plus + a_minus - 1.0) * g_sq), (2.0, 1.0)


def _segment_stream(fn, arrays, pair, num: int, chunk: int):
    """Per-pair sums `[num, ...]` of the per-sample terms `fn(*arrays_chunk)`, chunk by chunk.

    `arrays` are `[N, ...]`; `fn` returns a pytree of `[c, ...]` terms of the
    `c = chunk` samples it is given, summed into the segments `pair: [N]` by
    `jax.ops.segment_sum`. One `lax.fori_loop` over the chunks (memory `O(chunk)`
    per term); a ragged last chunk is clamped to the end of the sample and its
    re-read samples go to a discarded extra segment (`reduce_chunks`' clamp).
    """
    n = pair.shape[0]
    chunk = int(min(chunk, n))
    n_chunks = -(-n // chunk)

    def part(i):
        first = i * chunk
        start = jnp.minimum(first, n - chunk)
        sl = [jax.lax.dynamic_slice_in_dim(a, start, chunk, axis=0) for a in arrays]
        ids = jax.lax.dynamic_slice_in_dim(pair, start, chunk, axis=0)
        ids = jnp.where(start + jnp.arange(chunk) >= first, ids, num)
        return jax.tree.map(
            lambda v: jax.ops.segment_sum(v, ids, num_segments=num + 1)[:num], fn(*sl)
        )

    init = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(part, 0))
    return jax.lax.fori_loop(0, n_chunks, lambda i, acc: jax.tree.map(jnp.add, acc, part(i)), init)


_Z_CLIP = 40.0  # |z| beyond which every Gaussian weight is 0 (keeps z^4 finite in float32)


def _powers(z: jax.Array, count: int) -> jax.Array:
    return jnp.stack([z**k for k in range(count)], axis=-1)  # [..., count]


def _se_of_sum(total, total_sq, n):
    # stderr of a mean of n per-sample terms from their sum and sum of squares
    m2 = jnp.maximum(total_sq - total * total / n, 0.0)
    return jnp.sqrt(m2 / (n - 1) / n)


class _GapParts(NamedTuple):
    value: jax.Array  # [P, 2, 2] m_pc(0±): pair p, side (0: 0+, 1: 0−), part c (0: jump, 1: Δf²)
    stderr: jax.Array  # [P, 2, 2] sqrt(sampling² + bias²)
    bandwidth: jax.Array  # [P, 2, 2]


@functools.partial(jax.jit, static_argnames=("num", "chunk"))
def _gap_parts(s, pair, G, bandwidth, *, num: int, chunk: int) -> _GapParts:
    """One-sided limits `m(0±) = p_on(0±) μ_on(0±)` of every pair in one O(N) pass per stage.

    `s: [N]` each sample's own score `s_n = sel_i − sel_j` of its pair
    `pair: [N]` (`num` pairs), `G: [N, 2, 2]` the integrands (side 0: `s > 0`,
    side 1: `s < 0`, the right limit for `−s`; part 0: the jump term, part 1:
    `Δf²`), `bandwidth` a scalar (NaN: automatic). Every stage is a
    segment-summed stream over the samples (`_segment_stream`):

    1. count, mean and robust scale `σ̂_p` of `s` over the pair's own samples;
    2. pilot at `h_p = 2 σ̂_p n_p^{-1/7}`: one-sided local-quadratic fit of `g`
       (curvature `μ''`, residual variance), boundary densities `p_on(0±)` and
       `p_on''(0±)` (kernel `_kernel(2, 2, "right")`);
    3. the AMSE bandwidth `h = (R σ² / (p_on N μ₂² μ''²))^{1/5}` in
       `[max(10⁻³ h_p, 200/(N p_on)), h_p]` per pair, side and part;
    4. the one-sided local-linear fit `μ_on(0±)` (sandwich stderr) and the
       boundary-kernel density `p_on(0±) = E[K⁺_h(s) 1_on]`, `K⁺ = (c₀ + c₁ z)φ 1{z ≥ 0}`,
       at that `h`; bias `h² |μ₂| (p_on |μ''| and |p''|)/2`, delta method for the product.

    A fit with fewer than a few samples in its window (`ok` false) gives
    `0 ± (|p_on| + se_p) max|g|`; a pair without samples gives exactly `0 ± 0`.
    """
    dt = s.dtype
    n = s.shape[0]
    half = _kernel(0, 0, "both")._replace(side="right")  # φ(z) on the half-line z ≥ 0
    kd, kd2 = _value_kernel("right"), _kernel(2, 2, "right")
    U = jnp.stack([s, -s], axis=1)  # [N, 2]: the left limit is the right one of −s
    root2pi = math.sqrt(2.0 * math.pi)

    # 1. per-pair count, mean and robust scale (min(sd, √(π/2) mean|s − mean|))
    cnt, tot = _segment_stream(lambda u: (jnp.ones_like(u), u), (s,), pair, num, chunk)
    mean = tot / jnp.maximum(cnt, 1.0)

    def spread(p, u):
        c = u - mean[p]
        return c * c, jnp.abs(c)

    c2, c1 = _segment_stream(spread, (pair, s), pair, num, chunk)
    nn = jnp.maximum(cnt, 1.0)
    scale = jnp.minimum(jnp.sqrt(c2 / nn), math.sqrt(math.pi / 2.0) * c1 / nn)
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    h_p = 2.0 * scale * nn ** (-1.0 / 7.0)  # [P]

    # 2. pilot: local-quadratic fit and boundary density derivatives at h_p
    def pilot_window(p, u):
        h = h_p[p][:, None]  # [c, 1]
        z = jnp.clip(u / h, -_Z_CLIP, _Z_CLIP)  # [c, 2]
        return h, z, _eval_kernel(half, z) / h

    def pilot(p, u, g):
        h, z, w = pilot_window(p, u)
        zp = _powers(z, 5)  # [c, 2, 5]
        S = w[..., None] * zp
        T = (w[..., None] * zp[..., :3])[:, :, None, :] * g[..., None]  # [c, 2, 2, 3]
        d0 = _eval_kernel(kd, z) / h
        d2 = _eval_kernel(kd2, z) / h**3
        return S, T, d0, d2, d2 * d2

    S, T, d0, d2, d2sq = _segment_stream(pilot, (pair, U, G), pair, num, chunk)
    idx = np.add.outer(np.arange(3), np.arange(3))
    Sinv = jnp.linalg.inv(S[..., idx] / n)  # [P, 2, 3, 3]
    beta = jnp.einsum("psij,psgj->psgi", Sinv, T / n)  # [P, 2, 2, 3]
    row2 = Sinv[:, :, 2, :]  # [P, 2, 3]: the influence row of the quadratic coefficient

    def pilot_res(p, u, g):
        _, z, w = pilot_window(p, u)
        zp = _powers(z, 3)  # [c, 2, 3]
        eps = g - jnp.sum(beta[p] * zp[:, :, None, :], axis=-1)  # [c, 2, 2]
        infl = jnp.sum(row2[p] * zp, axis=-1)[..., None] * w[..., None] * eps
        return infl, infl * infl, w[..., None] * eps * eps

    i_sum, i_sq, r2 = _segment_stream(pilot_res, (pair, U, G), pair, num, chunk)
    S0 = S[..., 0]  # [P, 2] (sums: n × the mean weight)
    ok_pil = (S0 * h_p[:, None] * root2pi >= 9.0) & jnp.all(jnp.isfinite(Sinv), axis=(-2, -1))
    ok_pil = ok_pil[..., None]  # [P, 2, 1]
    se_b2 = _se_of_sum(i_sum, i_sq, n)
    hp2 = (h_p**2)[:, None, None]
    curv2 = (2.0 * beta[..., 2] / hp2) ** 2 + (2.0 * se_b2 / hp2) ** 2  # |μ''|², [P, 2, 2]
    curv2 = jnp.where(ok_pil, curv2, 0.0)
    sigma2 = jnp.where(ok_pil, r2 / jnp.where(S0 > 0, S0, 1.0)[..., None], 0.0)
    p_pil = d0 / n  # [P, 2]
    p2 = d2 / n
    curv_p2 = p2**2 + _se_of_sum(d2, d2sq, n) ** 2  # |p''|²
    p_safe = jnp.maximum(p_pil, jnp.finfo(dt).tiny)

    # 3. bandwidths [P, 2, 2]
    h_lo = jnp.maximum(1e-3 * h_p[:, None], 200.0 / (n * p_safe))[..., None]
    v = sigma2 / p_safe[..., None]
    H = _auto_bandwidth(kd.R, kd.mu2, v, curv2, n, h_lo, h_p[:, None, None])
    H = jnp.where(jnp.isnan(bandwidth), H, bandwidth).astype(dt)
    Hd = _auto_bandwidth(kd.R, kd.mu2, p_safe, curv_p2, n, h_lo[..., 0], h_p[:, None])
    Hd = jnp.where(jnp.isnan(bandwidth), Hd, bandwidth).astype(dt)  # [P, 2] density

    # 4. local-linear fit and boundary-kernel density at h
    def window(p, u):
        h = H[p]  # [c, 2, 2]
        z = jnp.clip(u[:, :, None] / h, -_Z_CLIP, _Z_CLIP)
        return h, z, _eval_kernel(half, z) / h

    def fit(p, u, g):
        _, z, w = window(p, u)
        zp = _powers(z, 3)  # [c, 2, 2, 3]
        hd = Hd[p]  # [c, 2]
        d = _eval_kernel(kd, jnp.clip(u / hd, -_Z_CLIP, _Z_CLIP)) / hd
        return w[..., None] * zp, w[..., None] * zp[..., :2] * g[..., None], d, d * d

    S1, T1, dens, dens_sq = _segment_stream(fit, (pair, U, G), pair, num, chunk)
    idx1 = np.add.outer(np.arange(2), np.arange(2))
    Sinv1 = jnp.linalg.inv(S1[..., idx1] / n)  # [P, 2, 2, 2, 2]
    beta1 = jnp.einsum("...ij,...j->...i", Sinv1, T1 / n)  # [P, 2, 2, 2]
    row0 = Sinv1[..., 0, :]  # [P, 2, 2, 2]

    def fit_res(p, u, g):
        _, z, w = window(p, u)
        b = beta1[p]
        eps = g - b[..., 0] - b[..., 1] * z
        r = row0[p]
        infl = (r[..., 0] + r[..., 1] * z) * w * eps
        return infl, infl * infl

    f_sum, f_sq = _segment_stream(fit_res, (pair, U, G), pair, num, chunk)
    mu, se_mu = beta1[..., 0], _se_of_sum(f_sum, f_sq, n)
    ok_fit = (S1[..., 0] * H * root2pi >= 6.0) & jnp.all(jnp.isfinite(Sinv1), axis=(-2, -1))
    ok = ok_pil & ok_fit & (cnt > 0)[:, None, None]
    p = (dens / n)[..., None]  # [P, 2, 1]
    bias_p = 0.5 * Hd**2 * abs(kd.mu2) * jnp.sqrt(curv_p2)
    se_p = jnp.sqrt(_se_of_sum(dens, dens_sq, n) ** 2 + bias_p**2)[..., None]
    bias_mu = 0.5 * H**2 * abs(kd.mu2) * jnp.sqrt(curv2)
    se_var = jnp.sqrt((p * se_mu) ** 2 + (mu * se_p) ** 2)
    # no data at the level: |m(0±)| ≤ (|p_on| + se_p) max|g| over the pair
    g_max = jax.ops.segment_max(jnp.abs(G), pair, num_segments=num)
    g_max = jnp.where((cnt > 0)[:, None, None], g_max, 0.0)
    fallback = (jnp.abs(jnp.where(jnp.isfinite(p), p, 0.0)) + jnp.nan_to_num(se_p)) * g_max
    value = jnp.where(ok, p * mu, 0.0)
    se_var = jnp.where(ok, se_var, fallback)
    bias = jnp.where(ok, p * bias_mu, 0.0)
    stderr = jnp.where((cnt > 0)[:, None, None], jnp.sqrt(se_var**2 + bias**2), 0.0)
    return _GapParts(value, stderr, H)


def _gap_full_pair(s, terms, bandwidth) -> Estimate:
    """The gap coefficient of a pair that holds every sample (K = 2, or dead experts).

    The integrand is smooth across `s = 0` apart from the jump of `g`, and the
    pair's density is that of `s` over all samples (continuous at 0): `m(0±) =
    p_s(0) μ(0±)` with `p_s(0)` from the two-sided kernel and `μ(0±)` by
    one-sided local-linear regression (`kernel_smoothed_mean(side=...)`), the
    `Δf²` term by the two-sided kernel.
    """
    (g_r, g_l, g_sq), (c, c_sq) = terms
    right = kernel_smoothed_mean(s, g_r, side="right", bandwidth=bandwidth)
    left = kernel_smoothed_mean(s, g_l, side="left", bandwidth=bandwidth)
    both = kernel_smoothed_mean(s, g_sq, bandwidth=bandwidth)
    value = c * (right.value - left.value) + c_sq * both.value
    return Estimate(value, c * (right.stderr + left.stderr) + c_sq * both.stderr)


def gap_coefficient(model, x: jax.Array, y: jax.Array, *, bandwidth=None) -> Estimate:
    """First-order coefficient `c` in `L_τ − L_0 = c τ + o(τ)` (EQUATIONS.md §3, T.11, [X]).

    For K = 2 with `s = a_1 − a_2`, `Δf = f_1 − f_2` and the jump
    `J = E[Y | x⁺] − E[Y | x⁻]` of the regression function across `{s = 0}`
    (from the expert-1 side `s > 0`),

        c = ∫_{s=0} (2 ln 2 · Δf · J − Δf²) p/|∇s| dH^{d-1}.

    It is computed in the equivalent residual form (from (4.5) with
    `f_0 − f_τ = Δf (1{s>0} − σ(s/τ))` and `∫_0^∞ (1 − σ) = ln 2`)

        c = 2 ln 2 · [m(0+) − m(0−)] + (2 ln 2 − 1) ∫_{s=0} Δf² p/|∇s| dH^{d-1},

    `m(u) = E[Δf (Y − f_0) | s = u] p_s(u)`, whose jump is `∫ Δf (J − Δf) p/|∇s|`.
    A realizable target (`Y = f_0(X)`) gives `(2 ln 2 − 1) ∫ Δf² p/|∇s|`; a
    target continuous across `S` gives `−∫ Δf² p/|∇s|`.

    For K > 2 and top-k routing (T.11) the coefficient is the sum over the
    interfaces `Γ_ij^k` where `i < j` are the k-th and (k+1)-th selection
    scores, `s_ij` the difference of the selection scores, and `Δf` replaced
    by `Δ̃f = F_i − F_j`, the jump of the hard predictor (T.5) across `Γ_ij^k`
    (`= ω (f_i − f_j)`, `ω = c_i/Σ_{S_k} c_l` from the combine logits; ρ = ∞:
    `1/k`). Where selection and combine scores differ, `c_i ≠ c_j` on the
    interface and the layer profile is `σ(u + L)`, `L = log(D_i/D_j)`: the
    constants `ln 2, 2 ln 2 − 1` become `softplus(∓L)`, `softplus(L) +
    softplus(−L) − 1` (`_gap_terms`).

    Estimators. Each sample belongs to exactly one pair (its own top-two
    interface), so `m_p(0±) = p_on(0±) μ_on(0±)` with `p_on` the density of
    `s_ij` over the pair's samples (normalised by `N`) and `μ_on` the
    conditional mean of the integrand over them:

    * a pair that holds every sample (K = 2, or K > 2 with dead experts): the
      kernels of `kernel_smoothed_mean` (`p_s(0)` two-sided, `μ(0±)` one-sided
      local-linear, the `Δf²` term two-sided), as in the module docstring;
    * otherwise, all pairs at once in one jitted pass per stage (`_gap_parts`,
      `O(N)` each, per-pair sums by `jax.ops.segment_sum` streamed over
      chunks): `μ_on(0±)` by one-sided local-linear regression over the pair's
      samples (self-normalised: its variance is that of `g` about its local
      trend) times the one-sided boundary-kernel density `p_on(0±) =
      E[K⁺_h(s) 1_on]`, `K⁺ = (c₀ + c₁ z) φ(z) 1{z ≥ 0}` (`∫K⁺ = 1`, `∫z K⁺ = 0`:
      unbiased to `O(h²)` although `p_on` has a kink at 0, where a third logit
      can fall between `i` and `j`). The `Δf²` term is the mean of its two
      one-sided limits (a two-sided kernel would be biased by `O(h)` at the
      kink); its stderr is their sum halved. The pilot (`h_p = 2 σ̂_p
      n_p^{-1/7}`, `σ̂_p, n_p` the robust scale and count of the pair's
      scores) and the AMSE bandwidth per pair, side and part follow the
      one-sided rules of the module docstring with `p_on(0±)` for `p_s(0)`.

    Every part's stderr is `sqrt(sampling² + bias²)`; the stderrs of the parts
    and pairs add (conservative). Pairs no sample meets (a dead expert)
    contribute exactly `0 ± 0`, and an interface far from every sample (or a
    pair with too few samples for a fit) `0 ± (p + se_p) max|g|`, finite.

    Args:
        model: pytree with `.router` and `.experts` (e.g. `MoE`), `x: [d] -> [K]` each;
            top-k routing is read off it (`models.routing_of`).
        x: `[N, d]` inputs, `N >= 2`; y: `[N]` targets.
        bandwidth: `None` (automatic) or a scalar bandwidth `> 0` for every part.

    Returns:
        scalar `Estimate` of `c`.
    """
    x, y = check_xy(x, y)
    if x.shape[0] < 2:
        raise ValueError(f"`x` must hold N >= 2 samples [N, d], got shape {x.shape}")
    check_finite_params(model, "model")
    k, rho, selection = routing_of(model)
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y = x.astype(dtype), y.astype(dtype)
    if bandwidth is not None:
        bandwidth = jnp.asarray(bandwidth, dtype)
        if bandwidth.shape != ():
            raise ValueError(f"`bandwidth` must be a scalar > 0 or None, got {bandwidth.shape}")
        if is_concrete(bandwidth) and not bool(np.asarray(bandwidth) > 0):
            raise ValueError(f"`bandwidth` must be > 0, got {np.asarray(bandwidth)}")
    a = logits(model.router, x)
    f = expert_outputs(model.experts, x)
    if f.shape != a.shape:
        raise ValueError(
            f"`model.experts` must return [K] = {a.shape[1:]} outputs to match the router, "
            f"got batched shape {f.shape}"
        )
    n, K = a.shape
    check_k(k, K, "k", allow_all=False)
    sel = a if selection is None else jax.vmap(selection)(a)
    it = _interfaces(sel, a, f, k, rho)
    terms = _gap_terms(it, y, jnp.ones((), dtype), is_top1(model))
    num = K * (K - 1) // 2
    counts = np.bincount(np.asarray(it.pair), minlength=num)
    if int(counts.max()) == n:  # one pair holds every sample
        i, j = (int(v[int(np.argmax(counts))]) for v in pair_indices(K))
        return _gap_full_pair(sel[:, i] - sel[:, j], terms, bandwidth)
    (g_r, g_l, g_sq), (c, c_sq) = terms
    s = (
        jnp.take_along_axis(sel, it.lo[:, None], axis=1)
        - jnp.take_along_axis(sel, it.hi[:, None], axis=1)
    )[:, 0]
    G = jnp.stack([jnp.stack([g_r, g_sq], -1), jnp.stack([g_l, g_sq], -1)], 1)  # [N, 2, 2]
    bw = jnp.asarray(jnp.nan if bandwidth is None else bandwidth, dtype)
    parts = _gap_parts(s, it.pair, G.astype(dtype), bw, num=num, chunk=chunk_size_for(n, 128, None))
    v, e = parts.value, parts.stderr
    value = jnp.sum(c * (v[:, 0, 0] - v[:, 1, 0]) + c_sq * 0.5 * (v[:, 0, 1] + v[:, 1, 1]))
    stderr = jnp.sum(c * (e[:, 0, 0] + e[:, 1, 0]) + c_sq * 0.5 * (e[:, 0, 1] + e[:, 1, 1]))
    return Estimate(value, stderr)
