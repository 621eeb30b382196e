"""Critical points of a loss and their type: minimum, strict saddle, degenerate (§5).

`find_critical_points` runs `optax` searches (Adam, then L-BFGS, then Newton
polishing for minima; Levenberg–Marquardt on `∇L = 0` for saddles) from a list
of starts and merges runs that reach the same point up to the router gauge and
an expert relabelling (`softhard.landscape.gauge`). `classify_critical_point`
reads the type off the gauge-fixed Hessian spectrum (Theorem 5.17: every
critical point whose hard partition is not teacher-equivalent is a strict
saddle, `λ_min(∇²L_τ) < 0`), through the operator layer.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._trees import combine, filter_jit, partition, ravel_arrays
from .._validate import check_count, check_kind
from ._operator import (
    LinearOperator,
    _hessian_operator,
    as_operator,
    check_loss,
    hessian_operator,
    loss_value_and_gradient,
)
from .gauge import (
    _registered,
    canonical_form,
    gauge_basis,
    permutable,
    permute_experts,
    resolve_gauge,
)
from .spectra import hessian_spectrum

__all__ = [
    "CriticalPoint",
    "CriticalSearch",
    "Classification",
    "SearchRun",
    "default_grad_tol",
    "find_critical_points",
    "classify_critical_point",
]


class CriticalPoint(NamedTuple):
    """A critical point found by `find_critical_points`.

    Attributes:
        params: the parameter pytree.
        loss: scalar loss value.
        grad_norm: scalar `‖∇L‖` (Euclidean, raveled inexact-array leaves).
        count: how many initialisations converged to it (up to permutation/gauge).
        method: `"minimum"` (Adam/L-BFGS/Newton) or `"saddle"` (gradient-norm
            minimisation/Newton), the search that found it first.
        tol: the gradient-norm tolerance it met.
    """

    params: object
    loss: float
    grad_norm: float
    count: int
    method: str
    tol: float = math.nan


class SearchRun(NamedTuple):
    """One optimiser run of `find_critical_points`, converged or not.

    Attributes:
        start: index of its starting point in `inits`.
        method: `"minimum"` or `"saddle"`.
        status: `"converged"` (`‖∇L‖ ≤ tol`), `"stalled"` (no trial step
            lowers `‖∇L‖` any more: the rounding floor or a non-smooth point),
            `"max_iters"` (the iteration cap was reached first) or
            `"diverged"` (a non-finite loss or gradient).
        loss: final loss.
        grad_norm: final `‖∇L‖`.
        tol: the gradient-norm tolerance of the run.
        iterations: L-BFGS plus Newton iterations (minimum), or
            Levenberg–Marquardt trials (saddle); the Adam warm-up not counted.
        params: the final (gauge-fixed) parameters.
    """

    start: int
    method: str
    status: str
    loss: float
    grad_norm: float
    tol: float
    iterations: int
    params: object


class CriticalSearch(list):
    """What `find_critical_points` returns: the critical points found, and every run.

    A `list` of `CriticalPoint` (the converged runs, merged up to gauge and
    permutation, sorted by loss), as before, with the attribute `runs`: every
    `SearchRun` (start, method, status, final loss and gradient norm), so a
    search in which nothing converged still says how close each run came.
    `repr` summarises the statuses.
    """

    def __init__(self, points, runs):
        super().__init__(points)
        self.runs: list[SearchRun] = list(runs)

    @property
    def statuses(self) -> dict[str, int]:
        """Number of runs per status."""
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.statuses.items()))
        best = min(self.runs, key=lambda r: r.grad_norm if math.isfinite(r.grad_norm) else math.inf)
        return (
            f"CriticalSearch({len(self)} critical points from {len(self.runs)} runs: {counts}; "
            f"smallest |grad| {best.grad_norm:.3g} (tol {best.tol:.3g}))"
        )


def default_grad_tol(loss, dtype) -> float:
    """Default gradient-norm tolerance `sqrt(eps) · max(1, |L|)` (`eps` of `dtype`).

    `1.5e-8 · max(1, |L|)` in float64, `3.5e-4 · max(1, |L|)` in float32: the
    gradient of a loss of size `|L|` computed in `dtype` has rounding noise
    well below this at a critical point, and a point whose gradient is
    larger is not one to the working precision.
    """
    loss = float(loss)
    scale = max(1.0, abs(loss)) if math.isfinite(loss) else 1.0
    return math.sqrt(float(jnp.finfo(dtype).eps)) * scale


class Classification(NamedTuple):
    """The type of a critical point (`classify_critical_point`).

    Attributes:
        kind: `"minimum"`, `"strict saddle"` (λ_min < −tol; includes maxima),
            `"degenerate"` (|λ_min| ≤ tol) or `"not critical"` (‖∇L‖ > grad_tol:
            the spectrum is still reported, but the point is no critical point).
        lambda_min: smallest (gauge-fixed) Hessian eigenvalue.
        lambda_max: largest (gauge-fixed) Hessian eigenvalue.
        grad_norm: `‖∇L‖` (NaN when an operator was classified: no gradient).
        num_negative: number of eigenvalues `< −tol` (the Morse index; `-1`
            when only the extreme eigenvalues were computed).
        tol: the eigenvalue tolerance used.
        gauge_dim: number of gauge directions projected out.
        grad_tol: the gradient-norm tolerance used (NaN for an operator).
    """

    kind: str
    lambda_min: float
    lambda_max: float
    grad_norm: float
    num_negative: int
    tol: float
    gauge_dim: int
    grad_tol: float = math.nan


# ----------------------------------------------------------------------------
# deduplication up to gauge and permutation
# ----------------------------------------------------------------------------


def _num_experts_of(params):
    """`K` for a model whose router and bank can be permuted, else `None`."""
    if not permutable(params):
        return None
    K = getattr(params.router, "num_experts", None)
    return getattr(params.experts, "num_experts", None) if K is None else K


def _same_point(p, q, tol) -> bool:
    """Whether `p` and `q` coincide up to gauge and expert permutation."""
    a = np.asarray(ravel_arrays(canonical_form(p))[0])
    scale = 1.0 + np.linalg.norm(a)
    K = _num_experts_of(q)
    perms = [None] if K is None or K > 7 else itertools.permutations(range(K))
    for perm in perms:
        qq = q if perm is None else permute_experts(q, perm)
        b = np.asarray(ravel_arrays(canonical_form(qq))[0])
        if np.linalg.norm(a - b) <= tol * scale:
            return True
    return False


# ----------------------------------------------------------------------------
# the optimiser runs (on raveled vectors of the inexact-array leaves)
# ----------------------------------------------------------------------------
#
# Every compiled run is a `filter_jit` function: the model's non-array leaves
# (an equinox activation, a flax module's static fields), `loss_fn` and the
# Python step counts are static, arrays are traced; the optimisers see only the
# raveled inexact-array leaves (`ravel_arrays`).


def _flat_with(loss_fn, params, args):
    """`(f, flat, unravel)`: `f(p) = loss_fn(unravel(p), *args)` on the raveled arrays."""
    flat, unravel = ravel_arrays(params)

    def f(p):
        return loss_fn(unravel(p), *args)

    return f, flat, unravel


@filter_jit
def _adam_run(loss_fn, params, args, steps, learning_rate):
    """`steps` Adam steps from `params`: the raveled `[P]` end point."""
    # optimisers run on the raveled vector: tree utilities that reduce leaves to
    # scalars cannot rebuild shape-validated model dataclasses
    f, flat, unravel = _flat_with(loss_fn, params, args)
    opt = optax.adam(learning_rate)

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(f)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (flat, opt.init(flat)), None, length=steps)
    return p


@filter_jit
def _lbfgs_run(loss_fn, params, args, tol, max_iters):
    """`optax.lbfgs` (backtracking line search) until `‖∇L‖ ≤ tol`: `(flat [P], iterations)`."""
    f, flat, unravel = _flat_with(loss_fn, params, args)
    # the line search's stored gradient transposes the loss's jvp against a
    # Python `1.0`, which jax types as the default float: with float32
    # parameters under `jax_enable_x64` that cotangent is float64 and
    # `linear_transpose` refuses it, so there the gradient is recomputed
    store = jnp.dtype(flat.dtype) == jnp.dtype(jnp.result_type(float))
    opt = optax.lbfgs(
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=40, store_grad=store
        )
    )
    if store:
        vg = optax.value_and_grad_from_state(f)
    else:
        vg_plain = jax.value_and_grad(f)

        def vg(p, state):
            return vg_plain(p)

    def cond(carry):
        _, _, it, gn = carry  # gn: the gradient norm at the last point evaluated
        return (it == 0) | ((it < max_iters) & (gn > tol) & jnp.isfinite(gn))

    def body(carry):
        p, s, it, _ = carry
        value, g = vg(p, state=s)
        u, s = opt.update(g, s, p, value=value, grad=g, value_fn=f)
        return optax.apply_updates(p, u), s, it + 1, jnp.linalg.norm(g)

    init = (flat, opt.init(flat), 0, jnp.asarray(jnp.inf, flat.dtype))
    p, _, it, _ = jax.lax.while_loop(cond, body, init)
    return p, it


@filter_jit
def _levenberg_marquardt(loss_fn, params, args, tol, steps):
    """Minimise `½‖∇L‖²` by Levenberg–Marquardt on `∇L = 0` (Jacobian `∇²L`).

    Trial step `−V diag(λ_i/(λ_i² + μ)) Vᵀ ∇L` from the eigendecomposition
    `∇²L = V diag(λ) Vᵀ` (the dense `hessian_operator` at each iterate);
    accepted when it lowers `‖∇L‖`, after which `μ` is divided by 10,
    otherwise multiplied by 10. Newton's method (quadratic convergence to a
    critical point of any index) once `μ → 0`, a descent method for `‖∇L‖`
    far from one. Exact null directions (gauge, `λ_i = 0`) are never moved
    along. `steps` trials at most, in one `lax.while_loop`.

    Returns `(flat params [P], ‖∇L‖, stalled, trials)` (compiled functions
    return arrays only; the caller unravels); `stalled` is True when `μ`
    outgrew `1e30 · max|λ|²` (no step lowers `‖∇L‖`: the rounding floor).
    """
    f, flat, unravel = _flat_with(loss_fn, params, args)

    def system(p):
        g = jax.grad(f)(p)
        vals, vecs = jnp.linalg.eigh(_hessian_operator(f, p).dense(None))
        return g, vals, vecs, jnp.linalg.norm(g)

    g0, vals0, vecs0, gn0 = system(flat)
    scale0 = jnp.maximum(jnp.max(jnp.abs(vals0)), jnp.finfo(flat.dtype).tiny)
    mu0 = 1e-4 * scale0**2

    def stuck(c):
        scale = jnp.maximum(jnp.max(jnp.abs(c[2])), jnp.finfo(flat.dtype).tiny)
        return c[5] >= 1e30 * scale**2

    def cond(c):
        _, _, _, _, gn, mu, it = c
        return (it < steps) & (gn > 1e-3 * tol) & jnp.isfinite(gn) & ~stuck(c)

    def body(c):
        p, g, vals, vecs, gn, mu, it = c
        scale = jnp.max(jnp.abs(vals))
        keep = jnp.abs(vals) > 1e-12 * scale
        coef = jnp.where(keep, vals / (vals**2 + mu) * (vecs.T @ g), 0.0)
        cand = p - vecs @ coef
        g2, vals2, vecs2, gn2 = system(cand)
        ok = jnp.isfinite(gn2) & (gn2 < gn)
        pick = functools.partial(jnp.where, ok)
        return (
            pick(cand, p),
            pick(g2, g),
            pick(vals2, vals),
            pick(vecs2, vecs),
            pick(gn2, gn),
            jnp.where(ok, mu / 10.0, jnp.maximum(mu * 10.0, 1e-30 * scale**2)),
            it + 1,
        )

    out = jax.lax.while_loop(cond, body, (flat, g0, vals0, vecs0, gn0, mu0, 0))
    return out[0], out[4], stuck(out), out[6]


@filter_jit
def _value_and_grad_norm(loss_fn, params, args):
    f, flat, _ = _flat_with(loss_fn, params, args)
    v, g = jax.value_and_grad(f)(flat)
    return v, jnp.linalg.norm(g)


def _dtype_of(params):
    return ravel_arrays(params)[0].dtype


def _check_tol(tol, name: str):
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol > 0:
        raise ValueError(
            f"`{name}` must be a number > 0 or None (scaled to the dtype), got {tol!r}"
        )
    return float(tol)


def _check_params_loss(loss_fn, params, args):
    """`check_loss` on the inexact-array leaves of `params` (the rest are static)."""
    arrays, static = partition(params)
    check_loss(lambda a: loss_fn(combine(a, static), *args), arrays)


def _status(gn, loss, tol, stalled) -> str:
    if gn <= tol:
        return "converged"
    if not (math.isfinite(gn) and math.isfinite(loss)):
        return "diverged"
    return "stalled" if stalled else "max_iters"


def _search(loss_fn, p0, args, method, tol, opts):
    """One run from `p0`: `(params, loss, ‖∇L‖, tol, stalled, iterations)`."""
    # the gauge-fixed representative between stages: for a scale-invariant
    # router (NormalizedRouter) the raw gradient shrinks as the rows grow,
    # which would fake convergence
    p = canonical_form(p0)
    dtype = _dtype_of(p)
    unravel = ravel_arrays(p)[1]
    if method == "minimum":
        if opts["adam_steps"] > 0:
            p = unravel(_adam_run(loss_fn, p, args, opts["adam_steps"], opts["learning_rate"]))
        p = canonical_form(p)
    run_tol = tol
    if run_tol is None:
        run_tol = default_grad_tol(_value_and_grad_norm(loss_fn, p, args)[0], dtype)
    t = jnp.asarray(run_tol, dtype)
    iters = 0
    if method == "minimum":
        v, it = _lbfgs_run(loss_fn, p, args, t, opts["max_iters"])
        iters += int(it)
        v, _, stalled, it = _levenberg_marquardt(
            loss_fn, canonical_form(unravel(v)), args, t, opts["newton_steps"]
        )
    else:
        v, _, stalled, it = _levenberg_marquardt(loss_fn, p, args, t, opts["saddle_steps"])
    iters += int(it)
    p = canonical_form(unravel(v))
    value, gn = (float(v) for v in _value_and_grad_norm(loss_fn, p, args))
    if tol is None:  # the default at the final loss (the scale the verdict is read at)
        run_tol = default_grad_tol(value, dtype)
    return p, value, gn, run_tol, bool(stalled), iters


def find_critical_points(
    loss_fn: Callable,
    inits: Sequence,
    *,
    args: tuple = (),
    kind: str = "minimum",
    tol: float | None = None,
    adam_steps: int = 300,
    learning_rate: float = 1e-2,
    max_iters: int = 2000,
    newton_steps: int = 30,
    saddle_steps: int = 200,
    dedup_tol: float = 1e-5,
) -> CriticalSearch:
    """Critical points of `loss_fn` from a list of starting points, deduplicated, and every run.

    * `kind="minimum"`: Adam (`adam_steps`, `optax.adam`), then L-BFGS
      (`optax.lbfgs`, backtracking line search) until `‖∇L‖ ≤ tol`, then
      Newton polishing (`newton_steps` damped steps, below).
    * `kind="saddle"`: gradient-norm minimisation of `½‖∇L‖²` by
      Levenberg–Marquardt on `∇L = 0` with the dense Hessian as Jacobian
      (`saddle_steps` steps): a descent method for `‖∇L‖` far from a critical
      point and Newton's method near one, so it converges quadratically to
      critical points of any index. The exact gauge null directions of the
      Hessian are never moved along.
    * `kind="any"`: both searches from every start.

    A run counts as converged when it reaches `‖∇L‖ ≤ tol`; the default
    (`tol=None`) is `default_grad_tol`: `sqrt(eps) · max(1, |L|)` in the
    parameters' dtype at the run's final loss (`1.5e-8 · max(1, |L|)` in
    float64, `3.5e-4 · max(1, |L|)` in float32), the level
    `classify_critical_point` checks by default. Every run is reported
    (`CriticalSearch.runs`) with its status (`"converged"`, `"stalled"`,
    `"max_iters"`, `"diverged"`), final loss and gradient norm; a
    `RuntimeWarning` says so when no run converged.

    Points are returned in their gauge-fixed form (`canonical_router`: linear
    router output rows centred; `NormalizedRouter` rows of unit length,
    where the raw gradient and Hessian scale with `1/‖w_k‖`). Converged runs
    that reach the same point up to the router gauge and an expert
    relabelling (`permute_experts`, registered models, `K ≤ 7`) are merged
    (relative distance `≤ dedup_tol`).

    Parameters are the inexact-array leaves of the pytree
    (`softhard._trees.ravel_arrays`); function, integer and other leaves of
    an equinox or flax model are carried unchanged. Dense Newton steps make
    this a tool for small models (`P` up to a few thousand); the optimiser
    loops are jitted once per `loss_fn` object, so pass changing data (a
    temperature, a sample) through `args`.

    Args:
        loss_fn: `(params, *args) -> scalar`.
        inits: a sequence of parameter pytrees (starting points).
        args: extra arguments passed to `loss_fn` (traced, no recompilation).
        kind: `"minimum"`, `"saddle"` or `"any"`.
        tol: gradient-norm tolerance `> 0`, or `None` (scaled to the dtype and the loss).
        adam_steps, learning_rate: the Adam warm-up (minima only).
        max_iters: L-BFGS iteration cap.
        newton_steps: Newton polishing iteration cap (minima).
        saddle_steps: Levenberg–Marquardt iteration cap (saddles).
        dedup_tol: relative distance below which two points are the same.

    Returns:
        `CriticalSearch`: a list of `CriticalPoint` (converged, merged, sorted
        by loss) whose `.runs` lists every `SearchRun`.
    """
    check_kind(kind, "kind", ("minimum", "saddle", "any"))
    if not isinstance(inits, (list, tuple)) or len(inits) == 0:
        raise ValueError("`inits` must be a non-empty list of parameter pytrees")
    tol = _check_tol(tol, "tol")
    opts = {
        "adam_steps": check_count(adam_steps, "adam_steps", minimum=0),
        "learning_rate": float(learning_rate),
        "max_iters": check_count(max_iters, "max_iters", minimum=1),
        "newton_steps": check_count(newton_steps, "newton_steps", minimum=0),
        "saddle_steps": check_count(saddle_steps, "saddle_steps", minimum=1),
    }
    args = tuple(args)
    _check_params_loss(loss_fn, inits[0], args)
    methods = ["minimum", "saddle"] if kind == "any" else [kind]
    found: list[CriticalPoint] = []
    runs: list[SearchRun] = []
    for start, p0 in enumerate(inits):
        for method in methods:
            p, value, gn, run_tol, stalled, iters = _search(loss_fn, p0, args, method, tol, opts)
            status = _status(gn, value, run_tol, stalled)
            runs.append(SearchRun(start, method, status, value, gn, run_tol, iters, p))
            if status != "converged":
                continue
            for i, c in enumerate(found):
                if _same_point(p, c.params, dedup_tol):
                    found[i] = c._replace(count=c.count + 1)
                    break
            else:
                found.append(CriticalPoint(p, value, gn, 1, method, run_tol))
    result = CriticalSearch(sorted(found, key=lambda c: c.loss), runs)
    if not found:
        warnings.warn(
            f"find_critical_points: no run reached its gradient tolerance; {result!r}. "
            "See `.runs` for each run's status, loss and gradient norm.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


# ----------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------


@filter_jit
def _dense_classify(loss_fn, params, args, G):
    """`L`, `‖∇L‖` and the (gauge-fixed) dense spectrum, in one compiled call."""
    f, flat, _ = _flat_with(loss_fn, params, args)
    value, g = jax.value_and_grad(f)(flat)
    vals = jnp.linalg.eigvalsh(_hessian_operator(f, flat, G).restricted(None)[0])
    return value, jnp.linalg.norm(g), vals


def _operator_spectrum(op: LinearOperator, dense_limit: int):
    """`(eigenvalues ascending, all?)`: the dense spectrum, or Lanczos extremes above the limit."""
    if op.free_size <= dense_limit:
        return jnp.linalg.eigvalsh(op.restricted(None)[0]), True
    return hessian_spectrum(op, None, 1, which="both").eigenvalues, False


def _unregistered_router(params) -> bool:
    router = getattr(params, "router", params)
    return callable(router) and not _registered(gauge_basis, router)


def classify_critical_point(
    loss_fn,
    params=None,
    tol=None,
    *,
    gauge="auto",
    gauge_x=None,
    grad_tol=None,
    args: tuple = (),
    dense_limit: int = 4000,
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    **loss_kwargs,
) -> Classification:
    """Not critical, minimum, strict saddle or degenerate, from `‖∇L‖` and the gauge-fixed spectrum.

    A point is classified only when it is critical: `‖∇L‖ ≤ grad_tol`, by
    default `default_grad_tol` = `sqrt(eps) · max(1, |L|)` in the
    parameters' dtype (`1.5e-8 · max(1, |L|)` in float64, `3.5e-4 ·
    max(1, |L|)` in float32, the tolerance `find_critical_points` uses);
    otherwise `kind = "not critical"` (with its `grad_norm`; the spectrum is
    still reported). Pass `grad_tol=math.inf` to read the curvature of a
    non-critical point. At a critical point, `λ_min(∇²L) < 0` makes it a
    *strict saddle* (Theorem 5.17): `λ_min < −tol` gives `"strict saddle"`
    (local maxima included), `λ_min > tol` gives `"minimum"`, and otherwise
    `"degenerate"`.

    The gauge directions (`gauge_directions`) are exact null vectors of the
    Hessian of a softmax-routed model at a critical point, so by default
    (`gauge="auto"`) the spectrum is taken on their orthogonal complement;
    with `gauge=None` a minimum of a linear router is reported `"degenerate"`.
    `"auto"` knows the built-in (and registered) routers analytically; for
    any other router (an equinox or flax one) pass a sample `gauge_x=x`: its
    gauge is then found numerically (`gauge_directions(params, x=gauge_x)`).
    Without it such a router has no gauge projected out, so its minima read
    `"degenerate"` (a `RuntimeWarning` says so).

    `loss_fn` may also be a `LinearOperator` (e.g. `hessian_operator(...,
    gauge=G)`) or a symmetric matrix, with `params=None`: the Hessian is then
    given, `"auto"` keeps the operator's own gauge, and there is no gradient
    (`grad_norm` is NaN, `grad_tol` must be `None`).

    Args:
        loss_fn: `(params, *args) -> scalar`, or an operator or a matrix.
        params: the candidate critical point (with a loss function); its
            inexact-array leaves are the parameters.
        tol: eigenvalue tolerance (default `sqrt(eps) · max(1, max|λ|)`:
            `1.5e-8` relative in float64).
        gauge: `"auto"`, `None` or a `[P, G]` basis.
        gauge_x: `[N, d]` sample for the numerical gauge of an unregistered
            router (only with `gauge="auto"`).
        grad_tol: gradient-norm tolerance `> 0` (`None`: the default above).
        args: extra arguments, `loss_fn(params, *args)`; the dense path is
            compiled once per `loss_fn` object, so pass changing data here.
        dense_limit: above this many (gauge-fixed) parameters the extreme
            eigenvalues come from Lanczos (`num_negative` is then `-1`).
        data, chunk_size, mesh, **loss_kwargs: as in `hessian_operator`: with
            `data=(x, y)` the loss is per chunk, `loss_fn(params, x_c, y_c,
            **loss_kwargs)`, and its value, gradient and Hessian are streamed
            (and sharded) over the sample, e.g.
            `classify_critical_point(sh.soft_risk, model, data=(x, y), tau=0.1)`.

    Returns:
        `Classification(kind, lambda_min, lambda_max, grad_norm, num_negative, tol,
        gauge_dim, grad_tol)`.
    """
    args = tuple(args)
    if data is not None or loss_kwargs or chunk_size is not None or mesh is not None:
        if data is None:
            raise ValueError("`chunk_size`, `mesh` and loss keywords need `data=(x, y)`")
        if args or not callable(loss_fn):
            raise ValueError(
                "with `data`, `loss_fn` must be a per-chunk loss `(params, x_c, y_c, **kw)` "
                "and `args` empty (bind extra arguments as keywords)"
            )
        grad_tol = _check_tol(grad_tol, "grad_tol")
        G = resolve_gauge(gauge, params, gauge_x)
        stream = {"data": data, "chunk_size": chunk_size, "mesh": mesh, **loss_kwargs}
        value, g = loss_value_and_gradient(loss_fn, params, **stream)
        op = hessian_operator(loss_fn, params, gauge=G, **stream)
        gn, dtype, gdim = jnp.linalg.norm(g), op.dtype, op.gauge_dim
        vals, full = _operator_spectrum(op, dense_limit)
        if grad_tol is None:
            grad_tol = default_grad_tol(value, dtype)
    elif callable(loss_fn):  # a loss; an operator or a matrix is not callable
        grad_tol = _check_tol(grad_tol, "grad_tol")
        _check_params_loss(loss_fn, params, args)
        G = resolve_gauge(gauge, params, gauge_x)
        f, flat, _ = _flat_with(loss_fn, params, args)
        dtype, gdim = flat.dtype, 0 if G is None else int(G.shape[1])
        if flat.shape[0] - gdim <= dense_limit:
            (value, gn, vals), full = _dense_classify(loss_fn, params, args, G), True
        else:
            value, g = jax.value_and_grad(f)(flat)
            gn = jnp.linalg.norm(g)
            vals, full = _operator_spectrum(_hessian_operator(f, flat, G), dense_limit)
        if grad_tol is None:
            grad_tol = default_grad_tol(value, dtype)
    else:
        if grad_tol is not None:
            raise ValueError("`grad_tol` needs a loss function: an operator has no gradient")
        if gauge_x is not None:
            raise ValueError("`gauge_x` needs a loss function and its parameters")
        op = as_operator(loss_fn, params, gauge=gauge)
        gn, dtype, gdim, grad_tol = math.nan, op.dtype, op.gauge_dim, math.nan
        vals, full = _operator_spectrum(op, dense_limit)
    gn, vals = float(gn), np.asarray(vals)
    lmin, lmax = float(vals[0]), float(vals[-1])
    if tol is None:
        eps = float(jnp.finfo(dtype).eps)
        tol = math.sqrt(eps) * max(1.0, abs(lmin), abs(lmax))
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0, got {tol!r}")
    nneg = int(np.sum(vals < -tol)) if full else -1
    if callable(loss_fn) and not gn <= grad_tol:  # a NaN gradient is not critical either
        kind = "not critical"
    else:
        kind = "strict saddle" if lmin < -tol else "minimum" if lmin > tol else "degenerate"
    if (
        kind == "degenerate"
        and callable(loss_fn)
        and isinstance(gauge, str)
        and gauge_x is None
        and gdim == 0
        and _unregistered_router(params)
    ):
        warnings.warn(
            "classify_critical_point: the router has no registered gauge and no `gauge_x` "
            "sample was given, so no gauge direction was projected out; pass `gauge_x=x` "
            "to find it numerically",
            RuntimeWarning,
            stacklevel=2,
        )
    return Classification(kind, lmin, lmax, gn, nneg, tol, gdim, float(grad_tol))
