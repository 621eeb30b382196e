"""The Theorem 5.17 experiment: critical points, their type and teacher recovery (§5).

`strict_saddle_report` searches the critical points of the sample soft risk
`L_τ` of a teacher–student instance at several temperatures, classifies each
(minimum / strict saddle / degenerate, gauge-fixed), compares its hard
partition with the teacher's and fits the recovery rates of the global
minimiser (5.16–5.17); `format_report` prints it. Each critical point is one
typed `SaddleRow`, the rates one `SaddleRecovery`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._stats import Estimate
from .._validate import check_count, check_taus
from ..landscape import (
    classify_critical_point,
    find_critical_points,
    recovery_error,
    teacher_equivalence,
)
from ..landscape.transfer import loglog_slope
from ..risk import soft_risk
from ..routing import logits

__all__ = ["SaddleRow", "SaddleRecovery", "SaddleReport", "strict_saddle_report", "format_report"]


class SaddleRow(NamedTuple):
    """One critical point at one temperature.

    Attributes:
        K: number of experts.
        tau: the temperature.
        point: index of the point among those found at `tau`.
        count: how many starts reached it (`CriticalPoint.count`).
        loss: `L_τ` at the point.
        grad_norm: `‖∇L_τ‖`.
        kind: `Classification.kind` (`"minimum"`, `"strict saddle"`, ...).
        lambda_min, lambda_max: extreme gauge-fixed Hessian eigenvalues.
        index: the Morse index (`Classification.num_negative`).
        partition_error: `Σ_k P(C_k Δ C_π(k))` (5.17) on the evaluation sample.
        teacher_equivalent: `partition_error ≤ equivalence_tol`.
        min_cell_mass: smallest hard-cell mass of the student.
        permutation: the matching `π` as a tuple of ints.
        expert_error: the expert recovery error (5.16).
        consistent: `True` (equivalent or a strict saddle), `False` (violates
            the dichotomy) or `None` (a dead expert: outside Assumption 5.14).
        global_min: the lowest-loss point at this `tau`.
    """

    K: int
    tau: float
    point: int
    count: int
    loss: float
    grad_norm: float
    kind: str
    lambda_min: float
    lambda_max: float
    index: int
    partition_error: float
    teacher_equivalent: bool
    min_cell_mass: float
    permutation: tuple
    expert_error: float
    consistent: bool | None
    global_min: bool


class SaddleRecovery(NamedTuple):
    """Recovery errors of the global minimiser over temperatures, and their rates.

    Attributes:
        taus: `[T]` temperatures.
        expert_error: `Estimate` `[T]` of the expert error (5.16).
        partition_error: `Estimate` `[T]` of the partition error (5.17).
        expert_rate, partition_rate: log-log slopes against `tau` (1 for `O(τ)`).
    """

    taus: np.ndarray  # [T]
    expert_error: Estimate  # [T]
    partition_error: Estimate  # [T]
    expert_rate: float
    partition_rate: float


class SaddleReport(NamedTuple):
    """The Theorem 5.17 experiment (`strict_saddle_report`).

    Attributes:
        rows: one `SaddleRow` per critical point and temperature.
        recovery: `SaddleRecovery` of the global minimiser over temperatures
            (NaN at a temperature where no critical point was found).
        consistent: True when every critical point within the theorem's
            hypotheses is teacher-equivalent or a strict saddle (the dichotomy);
            degenerate points with an empty hard cell (`consistent = None` in
            their row) are not counted.
    """

    rows: list  # [SaddleRow]
    recovery: SaddleRecovery
    consistent: bool


def _soft_objective(model, x, y, tau):
    return soft_risk(model, x, y, tau)


def strict_saddle_report(
    teacher,
    student_family: Callable,
    taus: jax.Array,
    *,
    law,
    key: jax.Array,
    num_samples: int = 4096,
    num_eval: int = 1 << 16,
    num_inits: int = 6,
    extra_inits: Sequence = (),
    objective: Callable | None = None,
    kind: str = "any",
    equivalence_tol=None,
    empty_cell_tol: float = 1e-3,
    **find_kwargs,
) -> SaddleReport:
    """The Theorem 5.17 experiment on one teacher–student instance.

    For every temperature, the critical points of the sample objective
    `L_τ` (default `soft_risk` on `num_samples` teacher samples, the same
    sample at every τ) are searched from `num_inits` random students
    (`student_family(key)`) plus `extra_inits` (e.g. hand-built symmetric
    points), with `find_critical_points(kind=kind)`. Each is classified
    (`classify_critical_point`, gauge-fixed), its hard partition compared
    with the teacher's on a fresh sample of `num_eval` inputs
    (`teacher_equivalence`; "equivalent" when `Σ_k P(C_k Δ C_π(k)) ≤
    equivalence_tol`, by default `0.05 + τ/2`: at τ > 0 the minimiser's
    partition is only `O(τ)`-close, while a wrong partition misroutes a fixed
    mass), and its recovery errors computed (`recovery_error`). The theorem's
    dichotomy holds when every non-equivalent critical point is a strict
    saddle (and so every minimum is equivalent). Non-equivalent critical
    points that are not strict saddles but have an (almost) empty hard cell,
    `min_k P(C_k(φ)) < empty_cell_tol` (a dead expert: its parameters and the
    interfaces that could revive it have curvature exponentially small in
    `1/τ`), violate Assumption 5.14 (no unique expert minimiser on an empty
    cell); they are marked outside the theorem (`consistent = None`) rather
    than counted.
    Finally the recovery errors of the global minimiser (lowest loss) are
    fitted against τ on log-log axes ((5.16–5.17) predict `O(τ)`).

    Students should have a bounded sharpness (e.g. `NormalizedRouter`): with
    a free linear router and a realisable teacher `L_τ` has no finite minimiser.

    Args:
        teacher: a `Teacher`.
        student_family: `key -> model`, a random student initialisation.
        taus: `[T]` temperatures.
        law: the input law (`.sample(key, n)`).
        key: PRNG key (data, evaluation sample and initialisations).
        num_samples: training-sample size defining `L_τ`.
        num_eval: evaluation-sample size for partitions and recovery errors.
        num_inits: random initialisations per temperature (the same at every τ).
        extra_inits: further starting points.
        objective: `(model, x, y, tau) -> scalar` (default `soft_risk`).
        kind: passed to `find_critical_points` (`"any"` finds minima and saddles).
        equivalence_tol: partition-mismatch mass counted as equivalent
            (default `0.05 + τ/2`).
        empty_cell_tol: hard-cell mass below which an expert counts as dead.
        **find_kwargs: further options for `find_critical_points`.

    Returns:
        `SaddleReport(rows, recovery, consistent)`; print with `format_report`.
    """
    taus = check_taus(taus)
    num_inits = check_count(num_inits, "num_inits", minimum=0)
    objective = objective or _soft_objective
    k_data, k_eval, k_init = jax.random.split(key, 3)
    x, y = teacher.sample(k_data, law, int(num_samples))
    x_ev = teacher.sample(k_eval, law, int(num_eval))[0]
    keys = jax.random.split(k_init, num_inits) if num_inits > 0 else []
    inits = [student_family(k) for k in keys] + list(extra_inits)
    if not inits:
        raise ValueError("no starting points: `num_inits` is 0 and `extra_inits` is empty")
    K = int(logits(teacher.router, x[:1]).shape[1])

    def loss(p, xx, yy, t):
        return objective(p, xx, yy, t)

    rows: list[SaddleRow] = []
    best_of_tau = []  # per tau: the global minimiser's Recovery, or None
    for tau in np.asarray(taus).tolist():
        t = jnp.asarray(tau, x.dtype)
        etol = 0.05 + 0.5 * tau if equivalence_tol is None else float(equivalence_tol)
        cps = find_critical_points(loss, inits, args=(x, y, t), kind=kind, **find_kwargs)
        best = None
        for n, cp in enumerate(cps):
            cls = classify_critical_point(loss, cp.params, args=(x, y, t))
            teq = teacher_equivalence(cp.params, teacher, x_ev)
            r = recovery_error(cp.params, teacher, x_ev)
            equiv = float(teq.total.value) <= etol
            cell_mass = float(np.min(teq.confusion.sum(0)))
            ok = equiv or cls.kind == "strict saddle"
            if not ok and cell_mass < empty_cell_tol:
                ok = None  # a dead expert: outside Assumption 5.14
            rows.append(
                SaddleRow(
                    K=K,
                    tau=float(tau),
                    point=n,
                    count=cp.count,
                    loss=cp.loss,
                    grad_norm=cp.grad_norm,
                    kind=cls.kind,
                    lambda_min=cls.lambda_min,
                    lambda_max=cls.lambda_max,
                    index=cls.num_negative,
                    partition_error=float(teq.total.value),
                    teacher_equivalent=equiv,
                    min_cell_mass=cell_mass,
                    permutation=tuple(int(v) for v in teq.permutation),
                    expert_error=float(r.expert_error.value),
                    consistent=ok,
                    global_min=False,
                )
            )
            if best is None or cp.loss < best[0]:
                best = (cp.loss, len(rows) - 1, r)
        if best is not None:
            rows[best[1]] = rows[best[1]]._replace(global_min=True)
        best_of_tau.append(None if best is None else best[2])
    recovery = _recovery(np.asarray(taus), best_of_tau)
    consistent = bool(rows) and all(row.consistent is not False for row in rows)
    return SaddleReport(rows, recovery, consistent)


def _recovery(taus: np.ndarray, recs: list) -> SaddleRecovery:
    """`SaddleRecovery` from one `Recovery` (or `None`: NaN) per temperature."""

    def column(field: str) -> Estimate:
        ests = [getattr(r, field) if r is not None else Estimate(np.nan, np.nan) for r in recs]
        return Estimate(*(np.asarray([float(e[i]) for e in ests]) for i in (0, 1)))

    expert, partition = column("expert_error"), column("partition_error")
    return SaddleRecovery(
        taus=taus,
        expert_error=expert,
        partition_error=partition,
        expert_rate=loglog_slope(taus, expert.value),
        partition_rate=loglog_slope(taus, partition.value),
    )


_OK = {True: "yes", False: "NO", None: "n/a"}


def format_report(report: SaddleReport) -> str:
    """A plain-text table of a `SaddleReport`: one line per critical point, then the rates."""
    head = (
        f"{'K':>2} {'tau':>6} {'#':>2} {'hits':>4} {'loss':>10} {'|grad|':>8} {'kind':>13} "
        f"{'lam_min':>10} {'lam_max':>9} {'idx':>3} {'P(CΔC)':>8} {'equiv':>5} "
        f"{'perm':>9} {'min cell':>8} {'exp.err':>9} {'ok':>3}"
    )
    lines = [head, "-" * len(head)]
    for r in report.rows:
        star = "*" if r.global_min else " "
        lines.append(
            f"{r.K:>2} {r.tau:>6.3f} {r.point:>2}{star}{r.count:>4} "
            f"{r.loss:>10.6f} {r.grad_norm:>8.1e} {r.kind:>13} "
            f"{r.lambda_min:>10.3e} {r.lambda_max:>9.3e} {r.index:>3} "
            f"{r.partition_error:>8.4f} {str(r.teacher_equivalent):>5} "
            f"{str(r.permutation):>9} {r.min_cell_mass:>8.4f} {r.expert_error:>9.2e} "
            f"{_OK[r.consistent]:>3}"
        )
    rec = report.recovery
    lines.append("")
    lines.append("global minimiser (*) recovery vs tau:")
    lines.append(f"{'tau':>8} {'expert err (5.16)':>20} {'partition err (5.17)':>22}")
    for i, t in enumerate(np.asarray(rec.taus).tolist()):
        lines.append(
            f"{t:>8.3f} {rec.expert_error.value[i]:>11.3e} ± {rec.expert_error.stderr[i]:.1e} "
            f"{rec.partition_error.value[i]:>12.4e} ± {rec.partition_error.stderr[i]:.1e}"
        )
    lines.append(
        f"log-log slopes: expert error {rec.expert_rate:.2f}, "
        f"partition error {rec.partition_rate:.2f}"
    )
    lines.append(
        "Theorem 5.17 dichotomy (non-equivalent => strict saddle) on every critical point "
        f"with no empty cell: {report.consistent}"
    )
    return "\n".join(lines)
