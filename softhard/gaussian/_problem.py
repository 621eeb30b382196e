"""Problem checking and the reduction to the student's logit differences.

- `_check_problem`, `_check_router_law`: validate `(model, teacher, law)` or
  `(router, law)` in Python and return the static structure `_Struct`;
- `_reduce`: condition every linear functional (logit differences, experts,
  target) on the whitened student coordinates `ζ ~ N(μ', I)` (`_Reduced`);
  `_reduce_router`: the same for the router alone (`_Router`);
- the teacher cells and lines over the teacher coordinates and their
  conditional moments (`_cell_moments`, `_complement`, `_line_coefficients`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import check_finite_params, check_k, check_vector, float_dtype, is_concrete
from ..models import Gaussian, LinearExperts, LinearRouter, LinearTarget, Teacher, routing_of
from ._normal import _halfspace_moments, _Moments, _quadrant_moments, _safe_div

# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------


class _Struct(NamedTuple):
    """Static description of a problem (hashable; a `jit` static argument)."""

    K: int  # student experts
    Kt: int  # teacher experts; 0 for a LinearTarget or no target
    linear: bool  # the target is a LinearTarget
    k: int = 1  # student experts per input (T.2)
    rho: float | None = None  # student combine temperature (T.4); None: ρ = ∞
    kt: int = 1  # teacher experts per input
    rho_t: float | None = None  # teacher combine temperature; only kept for kt >= 2

    @property
    def top1(self) -> bool:
        """The student routes top-1 with equal combine weights (the paper's softmax gates)."""
        return self.k == 1 and self.rho is None

    @property
    def det_teacher(self) -> bool:
        """The teacher's target needs its logits as functions of ζ (top-k with finite ρ)."""
        return self.rho_t is not None


def _dtype_of(*trees):
    leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t) if hasattr(x, "dtype")]
    return float_dtype(*leaves)


def _check_law(law, d: int | None = None, name: str = "law") -> int:
    if not isinstance(law, Gaussian):
        raise ValueError(
            f"`{name}` must be a softhard.Gaussian(mean, cov) input law (the exact values "
            f"are for Gaussian inputs), got {type(law).__name__}"
        )
    if law.mean.ndim != 1 or law.cov.ndim != 2:
        raise ValueError(
            f"`{name}` must have mean [d] and cov [d, d] (no stacked laws), got "
            f"{law.mean.shape}, {law.cov.shape}"
        )
    check_finite_params(law, name)
    if d is not None and law.dim != d:
        raise ValueError(f"`{name}` has dimension d = {law.dim} but the models take d = {d}")
    return law.dim


def _check_router(router, name: str) -> tuple[int, int]:
    if not isinstance(router, LinearRouter):
        raise ValueError(
            f"`{name}` must be a softhard.LinearRouter (exact Gaussian values need linear "
            f"routing), got {type(router).__name__}"
        )
    if router.W.ndim != 2:
        raise ValueError(
            f"`{name}.W` must have shape [K, d] (no stacked routers), got {router.W.shape}"
        )
    return router.W.shape


def _check_experts(experts, K: int, d: int, name: str) -> None:
    if not isinstance(experts, LinearExperts):
        raise ValueError(
            f"`{name}` must be softhard.LinearExperts (exact Gaussian values need linear "
            f"experts), got {type(experts).__name__}"
        )
    if experts.B.shape != (K, d):
        raise ValueError(
            f"`{name}.B` must have shape [K, d] = ({K}, {d}) to match the router, got "
            f"{experts.B.shape}"
        )


def _check_student_k(K: int, name: str) -> None:
    if K > 3:
        raise ValueError(
            f"`{name}` has K = {K} experts; exact Gaussian values are implemented for "
            f"K <= 3 (for K >= 4 the integral runs over K - 1 >= 3 dimensions with boundary "
            f"layers on a polyhedral fan); use the Monte Carlo estimators (softhard.risk_sweep)"
        )


def _check_nondegenerate(router, law, name: str) -> None:
    """The student logit differences must have a non-singular covariance under `law`."""
    if not (is_concrete(router.W) and is_concrete(law.cov)):
        return
    W = np.asarray(router.W, dtype=np.float64)
    D = W[:-1] - W[-1]
    C = D @ np.asarray(law.cov, dtype=np.float64) @ D.T
    ev = np.linalg.eigvalsh(C)
    if not ev.min() > 1e-12 * max(ev.max(), 1e-300):
        raise ValueError(
            f"`{name}` has logit differences a_k - a_K with a singular covariance under the "
            f"input law (eigenvalues {ev}); the router's interfaces must be proper hyperplanes"
        )


def _check_routing(obj, K: int, name: str) -> tuple[int, float | None]:
    """`(k, ρ)` of a `MoE` or `Teacher` (T.2–T.4): raw-logit selection, `1 <= k < K`."""
    k, rho, sel = routing_of(obj)
    if sel is not None:
        raise ValueError(
            f"`{name}.selection` must be None for the exact Gaussian values (selection "
            f"scores other than the linear logits have no closed form here), got {sel!r}; use "
            f"the Monte Carlo estimators (softhard.risk_sweep)"
        )
    k = check_k(k, K, f"{name}.k")
    return k, None if rho is None else float(rho)


def _check_teacher_span(model, teacher, law) -> None:
    """A top-k teacher with finite ρ: its logit differences must be functions of the student's.

    Its target is then a deterministic function of ζ (the combine weights
    `exp(a*_j/ρ)` have no closed-form Gaussian moments otherwise).
    """
    leaves = (model.router.W, teacher.router.W, law.cov)
    if not all(is_concrete(v) for v in leaves):
        return  # checked in the graph: NaN (see `risks._exact_risks`)
    W, Wt, C = (np.asarray(v, dtype=np.float64) for v in leaves)
    D, Dt = W[:-1] - W[-1], Wt[:-1] - Wt[-1]
    Czz, Ctz, Ctt = D @ C @ D.T, Dt @ C @ D.T, Dt @ C @ Dt.T
    S = Ctt - Ctz @ np.linalg.solve(Czz, Ctz.T)
    if np.abs(S).max() > 1e-9 * max(np.abs(np.diag(Ctt)).max(), 1e-300):
        raise ValueError(
            "`teacher.combine_temperature` must be None (rho = inf) for a top-k teacher whose "
            "logit differences are not functions of the student's under the law (e.g. the "
            "student's own router): the exact values need the teacher's combine weights "
            "as functions of the student's logits; use the Monte Carlo estimators"
        )


def _check_problem(model, teacher, law) -> _Struct:
    """Validate `(model, teacher, law)` in Python and return the static structure."""
    router = getattr(model, "router", None)
    experts = getattr(model, "experts", None)
    if router is None or experts is None:
        raise ValueError(
            f"`model` must have `.router` and `.experts` (e.g. softhard.MoE), got "
            f"{type(model).__name__}"
        )
    K, d = _check_router(router, "model.router")
    _check_student_k(K, "model")
    _check_experts(experts, K, d, "model.experts")
    k, rho = _check_routing(model, K, "model")
    check_finite_params(model, "model")
    _check_law(law, d)
    kt, rho_t = 1, None
    if isinstance(teacher, LinearTarget):
        check_vector(teacher.w, d, "teacher.w")
        Kt, linear = 0, True
    elif isinstance(teacher, Teacher):
        Kt, dt = _check_router(teacher.router, "teacher.router")
        if dt != d:
            raise ValueError(f"`teacher` takes inputs of dimension {dt} but `model` takes d = {d}")
        if Kt > 3:
            raise ValueError(
                f"`teacher` has K* = {Kt} experts; exact Gaussian values are implemented for "
                f"K* <= 3 (each teacher cell an intersection of at most two half-planes)"
            )
        _check_experts(teacher.experts, Kt, d, "teacher.experts")
        kt, rho_t = _check_routing(teacher, Kt, "teacher")
        rho_t = rho_t if kt > 1 else None  # the hard top-1 predictor ignores ρ
        linear = False
    else:
        raise ValueError(
            f"`teacher` must be a softhard.Teacher with linear router and experts or a "
            f"softhard.LinearTarget, got {type(teacher).__name__}"
        )
    if jnp.shape(teacher.noise_std) != ():
        raise ValueError(
            f"`teacher.noise_std` must be a scalar, got {jnp.shape(teacher.noise_std)}"
        )
    check_finite_params(teacher, "teacher")
    _check_nondegenerate(router, law, "model")
    if rho_t is not None:
        _check_teacher_span(model, teacher, law)
    return _Struct(K=K, Kt=Kt, linear=linear, k=k, rho=rho, kt=kt, rho_t=rho_t)


# ----------------------------------------------------------------------------
# the reduced Gaussian
# ----------------------------------------------------------------------------


class _Reduced(NamedTuple):
    """Everything conditioned on the whitened student coordinates `ζ ~ N(mu, I)`.

    Layout of the outputs `o`: the K student experts, then the target (the K*
    teacher experts, or the one linear target). Given ζ and the teacher residual
    coordinates `ξ_t ~ N(0, I)`: `z = Lzz ζ` (logits a_k − a_K),
    `t = t0 + Atz ζ + Ltt ξ_t`, `o = o0 + Aoz ζ + Aot ξ_t + (residual, cov R)`.
    """

    mu: jax.Array  # [nz]
    Lzz: jax.Array  # [nz, nz] lower triangular
    t0: jax.Array  # [nt]
    Atz: jax.Array  # [nt, nz]
    Ltt: jax.Array  # [nt, nt]
    o0: jax.Array  # [no]
    Aoz: jax.Array  # [no, nz]
    Aot: jax.Array  # [no, nt]
    R: jax.Array  # [no, no]


def _logit_differences(router):
    """Rows and offsets of the logit differences `a_k − a_K`: `[K−1, d]`, `[K−1]`."""
    W, b = router.W, router.b
    return W[:-1] - W[-1:], b[:-1] - b[-1]


def _partial_cholesky(G, m: int, eps, jitter):
    """First `m` columns of the lower Cholesky factor of the PSD matrix `G: [n, n]`.

    A pivot below `eps · G_jj` — a coordinate that is, to rounding, a function
    of the previous ones (a teacher with the student's separator) — counts as
    zero. A pivot `v` of column `j` with `jitter[j] > 0` becomes
    `v + ε² exp(−v/ε²)`, `ε² = jitter[j]² G_jj`: an independent Gaussian jitter of
    about `jitter[j]` standard deviations where the conditional variance is
    below that, and none where it is well above (see `_soft_integrals`). A
    coordinate with zero variance gives a zero column.
    """
    n = G.shape[0]
    rows = jnp.arange(n)
    L = jnp.zeros((n, m), G.dtype)
    for j in range(m):
        col = G[:, j] - jnp.dot(L[:, :j], L[j, :j], precision=jax.lax.Precision.HIGHEST)
        piv = jnp.where(col[j] > eps * G[j, j], col[j], 0.0)
        if jitter[j]:
            floor = jitter[j] ** 2 * G[j, j]
            piv = piv + floor * jnp.exp(-_safe_div(piv, floor))
        ok = piv > 0
        root = jnp.sqrt(jnp.where(ok, piv, 1.0))
        col = jnp.where(ok & (rows >= j), col.at[j].set(piv) / root, 0.0)
        L = L.at[:, j].set(col)
    return L


def _reduce(model, target, law, st: _Struct, jitter: float = 0.0) -> _Reduced:
    hp = jax.lax.Precision.HIGHEST
    D, q = _logit_differences(model.router)
    rows, offs = [D], [q]
    if not st.linear and st.Kt:
        Dt, qt = _logit_differences(target.router)
        rows.append(Dt)
        offs.append(qt)
    rows.append(model.experts.B)
    offs.append(model.experts.c)
    if st.linear:
        rows.append(target.w[None, :])
        offs.append(jnp.reshape(target.c, (1,)))
    else:
        rows.append(target.experts.B)
        offs.append(target.experts.c)
    dt = _dtype_of(model, target, law)
    P = jnp.concatenate(rows, axis=0).astype(dt)
    q = jnp.concatenate(offs, axis=0).astype(dt)
    mean, cov = law.mean.astype(dt), law.cov.astype(dt)
    nu = jnp.dot(P, mean, precision=hp) + q
    G = jnp.dot(P, jnp.dot(cov, P.T, precision=hp), precision=hp)
    G = 0.5 * (G + G.T)
    nz = st.K - 1
    nt = 0 if st.linear else st.Kt - 1
    m = nz + nt
    eps = 100.0 * jnp.finfo(dt).eps
    L = _partial_cholesky(G, m, eps, (0.0,) * nz + (jitter,) * nt)
    Lzz = L[:nz, :nz]
    mu = jax.scipy.linalg.solve_triangular(Lzz, nu[:nz], lower=True)
    Lt = L[nz:m]
    Lo = L[m:]
    nu_t, nu_o = nu[nz:m], nu[m:]
    Atz, Ltt = Lt[:, :nz], Lt[:, nz:m]
    Aoz, Aot = Lo[:, :nz], Lo[:, nz:m]
    R = G[m:, m:] - jnp.dot(Lo, Lo.T, precision=hp)
    return _Reduced(
        mu=mu,
        Lzz=Lzz,
        t0=nu_t - jnp.dot(Atz, mu, precision=hp),
        Atz=Atz,
        Ltt=Ltt,
        o0=nu_o - jnp.dot(Aoz, mu, precision=hp),
        Aoz=Aoz,
        Aot=Aot,
        R=R,
    )


# ----------------------------------------------------------------------------
# the router alone (boundary and ambiguity masses)
# ----------------------------------------------------------------------------


class _Router(NamedTuple):
    """The router's logit differences `z = Lzz ζ`, `ζ ~ N(mu, I)` (tie point at ζ = 0)."""

    mu: jax.Array  # [nz]
    Lzz: jax.Array  # [nz, nz]


def _check_router_law(router, law, name: str = "router") -> int:
    K, d = _check_router(router, name)
    _check_student_k(K, f"{name}")
    check_finite_params(router, name)
    _check_law(law, d)
    _check_nondegenerate(router, law, name)
    return K


def _reduce_router(router, law) -> _Router:
    hp = jax.lax.Precision.HIGHEST
    dt = _dtype_of(router, law)
    D, q = _logit_differences(router)
    D, q = D.astype(dt), q.astype(dt)
    nu = jnp.dot(D, law.mean.astype(dt), precision=hp) + q
    C = jnp.dot(D, jnp.dot(law.cov.astype(dt), D.T, precision=hp), precision=hp)
    Lzz = jnp.linalg.cholesky(0.5 * (C + C.T))
    return _Router(jax.scipy.linalg.solve_triangular(Lzz, nu, lower=True), Lzz)


# ----------------------------------------------------------------------------
# teacher cells and lines
# ----------------------------------------------------------------------------


def _teacher_cells(Kt: int, kt: int = 1) -> list[np.ndarray]:
    """Teacher cells as constraints `c·t ≥ 0` on `t_k = a*_k − a*_{K*}` (`[n_c, K*−1]` each).

    `kt = 1`: cell `m` is where expert `m` wins; `kt = 2` (`K* = 3`): where
    expert `m` is the one left out (the hard top-2 of 3 drops the minimum, T.2),
    the same constraints reversed. Ties are null sets.
    """
    if kt == 2:
        return [-c for c in _teacher_cells(Kt)]
    if Kt == 2:
        return [np.array([[1.0]]), np.array([[-1.0]])]
    if Kt == 3:
        return [
            np.array([[1.0, 0.0], [1.0, -1.0]]),  # a1 ≥ a3, a1 ≥ a2
            np.array([[-1.0, 1.0], [0.0, 1.0]]),  # a2 ≥ a1, a2 ≥ a3
            np.array([[-1.0, 0.0], [0.0, -1.0]]),  # a3 ≥ a1, a3 ≥ a2
        ]
    return [np.zeros((0, 0))]  # a linear target: one "cell", everything


def _cell_targets(st: _Struct) -> list[list[float]]:
    """The target in each teacher cell as coefficients over the target outputs (ρ* = ∞).

    `kt = 1`: expert `m` in cell `m`; `kt = 2`: the mean of the two others (T.5);
    a linear target: its one output.
    """
    if st.linear:
        return [[1.0]]
    eye = np.eye(st.Kt)
    rows = eye if st.kt == 1 else (1.0 - eye) / st.kt
    # Python floats: weakly typed, so a float32 problem stays float32
    return [[float(v) for v in row] for row in rows]


def _teacher_lines(Kt: int) -> np.ndarray:
    """All teacher pair scores `a*_k − a*_l` as rows over `t` (`[n_lines, K*−1]`)."""
    if Kt == 2:
        return np.array([[1.0]])
    if Kt == 3:
        return np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    return np.zeros((0, 0))


def _combine(coeffs, comps):
    """`Σ_j coeffs[j] comps[j]` for static NumPy coefficients, skipping zeros."""
    out = None
    for cj, v in zip(coeffs, comps):
        if cj == 0.0:
            continue
        term = v if cj == 1.0 else (-v if cj == -1.0 else cj * v)
        out = term if out is None else out + term
    return jnp.zeros_like(comps[0]) if out is None else out


def _affine(offset, matrix, comps):
    """Components of `offset + matrix @ comps`: `offset: [n]`, `matrix: [n, m]`, m × [N]."""
    out = []
    for i in range(offset.shape[0]):
        v = offset[i]
        for j, c in enumerate(comps):
            v = v + matrix[i, j] * c
        out.append(v)
    return out


def _cell_moments(red: _Reduced, tm, cell: np.ndarray) -> _Moments | None:
    """Moments of the teacher residual over one cell; `tm`: teacher means, nt × [N]."""
    if cell.shape[0] == 0:
        return None
    ms = [_combine(c, tm) for c in cell]
    ells = [red.Ltt.T @ jnp.asarray(c, red.Ltt.dtype) for c in cell]  # ℓ = Lttᵀ c
    if cell.shape[0] == 1:
        return _halfspace_moments(ms[0], ells[0])
    return _quadrant_moments(ms[0], ells[0], ms[1], ells[1])


def _complement(moms: list[_Moments]) -> _Moments:
    """Moments over the complement of disjoint cells: `1 − Σ P`, `−Σ m1`, `I − Σ m2`."""
    nt = len(moms[0].m1)
    p = 1.0 - sum(m.p for m in moms)
    m1 = tuple(-sum(m.m1[i] for m in moms) for i in range(nt))
    m2 = tuple(
        tuple((1.0 if i == j else 0.0) - sum(m.m2[i][j] for m in moms) for j in range(nt))
        for i in range(nt)
    )
    return _Moments(p, m1, m2)


def _line_coefficients(red: _Reduced, st: _Struct):
    """Teacher lines `g0 + gᵀζ = 0` (conditional-mean pair scores): `g0: [n_l]`, `g: [n_l, nz]`."""
    if st.linear:
        return None
    c = jnp.asarray(_teacher_lines(st.Kt), red.t0.dtype)
    return c @ red.t0, c @ red.Atz
