"""Closed forms of Example 3.8 for a linear score `s(x) = βᵀx + b`, `X ~ N(μ, Σ)`.

`gaussian_slab_probability` (3.11), `gaussian_interface_density` (3.14) and
its Hausdorff-measure variant `gaussian_interface_area` ([X]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import (
    as_real_array,
    check_cov,
    check_real_scalar,
    check_vector,
    check_width,
    is_concrete,
    poisons,
)
from ._normal import _ncdf_between, _npdf


def _score_moments(beta, b, mean, cov):
    beta, mean, cov = jnp.asarray(beta), jnp.asarray(mean), jnp.asarray(cov)
    hp = jax.lax.Precision.HIGHEST
    m = jnp.dot(beta, mean, precision=hp) + b
    var = jnp.dot(beta, jnp.dot(cov, beta, precision=hp), precision=hp)
    return m, jnp.sqrt(var)


def _check_score_args(beta, b, mean, cov):
    """`beta: [d]`, scalar `b`, `mean: [d]` and a covariance `cov: [d, d]` (as `Gaussian`)."""
    beta = as_real_array(beta, "beta", "a vector [d]")
    if beta.ndim != 1:
        raise ValueError(f"`beta` must have shape [d], got {beta.shape}")
    d = beta.shape[0]
    check_vector(beta, d, "beta")
    check_vector(mean, d, "mean")
    cov = check_cov(cov, "cov")
    if cov.shape != (d, d):
        raise ValueError(f"`cov` must have shape [d, d] = ({d}, {d}), got {cov.shape}")
    check_real_scalar(b, "b", "a scalar offset (a real number)")
    if jnp.shape(b) != ():
        raise ValueError(f"`b` must be a scalar offset, got shape {jnp.shape(b)}")
    if is_concrete(beta) and is_concrete(cov):
        var = float(np.asarray(beta) @ np.asarray(cov) @ np.asarray(beta))
        if not var > 0:
            raise ValueError(
                f"`beta` must give the score a positive variance βᵀΣβ under `cov`, got {var!r}"
            )


@poisons(r="width")
def gaussian_slab_probability(beta, b, mean, cov, r):
    """Slab probability `P(|s(X)| ≤ r)` for `s(x) = βᵀx + b`, `X ~ N(μ, Σ)` (3.11).

    `P(|s(X)| ≤ r) = Φ((r − m)/σ_s) − Φ((−r − m)/σ_s)` with `m = βᵀμ + b`,
    `σ_s = (βᵀΣβ)^{1/2}`; evaluated without cancellation in either tail.

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.
        r: scalar or `[R]` half-widths `≥ 0`.

    Returns:
        scalar or `[R]` probabilities.

    >>> p = gaussian_slab_probability(jnp.array([1.0, 0.0]), 0.0, jnp.zeros(2), jnp.eye(2), 1.0)
    >>> round(float(p), 6)  # P(|Z| ≤ 1)
    0.682689
    """
    _check_score_args(beta, b, mean, cov)
    r = check_width(r, "r")
    m, sd = _score_moments(beta, b, mean, cov)
    return _ncdf_between((-r - m) / sd, (r - m) / sd)


def gaussian_interface_density(beta, b, mean, cov):
    """Level-set density `G(0) = ∫_{s=0} p/|∇s| dH^{d−1} = φ(m/σ_s)/σ_s` (3.14).

    This is the density of the score `s(X) = βᵀX + b` at 0 (coarea formula, 3.8).

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.

    Returns:
        scalar.

    >>> G = gaussian_interface_density(jnp.array([2.0]), 0.0, jnp.zeros(1), jnp.eye(1))
    >>> round(float(G), 6)  # φ(0)/2
    0.199471
    """
    _check_score_args(beta, b, mean, cov)
    m, sd = _score_moments(beta, b, mean, cov)
    return _npdf(m / sd) / sd


def gaussian_interface_area(beta, b, mean, cov):
    """Surface integral `∫_{s=0} p dH^{d−1} = |β| φ(m/σ_s)/σ_s` (Example 3.8, [X]).

    The Hausdorff-measure variant of (3.14): the Gaussian mass density of the
    hyperplane `{βᵀx + b = 0}` per unit area (`|∇s| = |β|` is constant).

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.

    Returns:
        scalar.

    >>> A = gaussian_interface_area(jnp.array([2.0]), 0.0, jnp.zeros(1), jnp.eye(1))
    >>> round(float(A), 6)  # |β| φ(0)/2 = φ(0)
    0.398942
    """
    _check_score_args(beta, b, mean, cov)
    m, sd = _score_moments(beta, b, mean, cov)
    return jnp.linalg.norm(jnp.asarray(beta)) * _npdf(m / sd) / sd
