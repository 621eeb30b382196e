"""Exact population values for Gaussian inputs and linear models (Example 3.8, §3, §5).

For `X ~ N(μ, Σ)`, a `LinearRouter`, `LinearExperts` and a linear target
(a hard-routed linear `Teacher` or a `LinearTarget`), every population quantity
of the paper reduces to a low-dimensional Gaussian integral:

- the closed forms of Example 3.8: `gaussian_slab_probability` (3.11),
  `gaussian_interface_density` (3.14) and its Hausdorff-measure variant
  `gaussian_interface_area` ([X], `|β| φ(m/σ_s)/σ_s`);
- `exact_soft_risk` (2.5), `exact_hard_risk` (2.11), `exact_risk_gap` (4.5),
  including the noise variance `σ_ξ²` (5.3);
- `exact_boundary_mass` (2.13, 2.14) and `exact_ambiguity_mass` (5.5);
- `exact_gap_coefficient`: the first-order coefficient `c` in
  `L_τ − L_0 = c τ + o(τ)` (EQUATIONS.md §3, "General target, K=2" [X]).

How the integrals are done
--------------------------
All linear functionals involved (student logit differences `z_k = a_k − a_K`,
teacher logit differences `t_k = a*_k − a*_{K*}`, the experts' outputs and the
target) are jointly Gaussian. A (guarded) partial Cholesky factorisation
conditions everything on the student coordinates, whitened so that the tie
point of the router (all logits equal) is the origin: `ζ = L_zz⁻¹ z ~ N(μ', I)`.
Given `ζ`,

- the gates `π^τ(ζ)` and the hard winner are known;
- the teacher coordinates are Gaussian with a mean affine in `ζ` and a fixed
  (possibly singular) covariance, so each teacher cell — an intersection of at
  most two half-planes for `K* ≤ 3` — has closed-form probability and first and
  second moments (half-plane: `Φ`, `φ`; quadrant: the bivariate normal CDF
  computed by the Drezner–Wesolowsky/Genz method, plus Tallis' boundary terms);
- the squared error is a square of a Gaussian: `E[U²] = mean² + variance`.

What is left is an integral over `ζ ∈ R^{K−1}`: along the two half-lines from
the tie point for `K = 2`, and in polar coordinates around the tie point for
`K = 3`, where the three top-two interfaces are rays. Every integral is split
at the features — the student interface (the boundary layer of width `τ`),
the (conditional-mean) teacher interfaces, the mode of the density — and each
panel is integrated with a geometrically graded composite Gauss–Legendre rule
clustered at both ends. That rule resolves a layer of *any* width at a panel
end without knowing its scale (down to `1e-16` of the panel for `K = 2`,
`2e-7` for `K = 3`), so one fixed node set serves every `τ`, a teacher
interface that coincides with, nearly coincides with, or crosses the
student's, and the node count stays fixed: everything is `jit`-able,
`vmap`-able over `τ` and differentiable in the model parameters (gradients
flow through the node positions; see `_soft_integrals` for the one place
where the derivative needs care, a teacher that shares the student's
interface). Measured relative accuracy: about `1e-13` for `K = 2` with
`τ ∈ [1e-4, 10]`; for `K = 3` about `1e-10` for risks and `1e-8` for gaps with
`τ ≥ 1e-4`; about `1e-13` for the masses, whose radial integrals are closed
form.

Scope: `K ∈ {2, 3}` student experts; a `Teacher` with `K* ∈ {2, 3}` experts or
a `LinearTarget`. Top-k routing (EQUATIONS.md §T) wherever the span of the
logit differences is at most 2-D: a `MoE(..., k=2, combine_temperature=ρ)`
student with K = 3 (ρ = ∞ or finite; the soft top-2 mask T.3, the hard top-2
set T.2 = "drop the minimum", the combine weights T.4), and top-2 teachers
(K* = 3; finite ρ* only when the teacher's logit differences are functions of
the student's, e.g. its own router). For `k = 2` the angular rule is also
split at the top-2 interfaces `a_i = a_j < a_m` (the rays opposite the
top-two ones) and the radial rule where the soft mask's cap switches; the
gap coefficient (T.11) integrates along the top-2 interfaces with the
combine weight ω of the swapped expert; `exact_boundary_mass(k=2)` gives
`M_2(w)` (T.7). The top-k ambiguity mass is not built (its region is not
star-shaped about the tie point). The radial integrals are also split at the
angle of the teacher's tie point, where its cells meet. Selection maps
(`selection=`) are refused. For `K ≥ 4` the integral is over `K − 1 ≥ 3` dimensions with
boundary layers on a polyhedral fan; the functions raise a `ValueError`
pointing to the Monte Carlo estimators (`softhard.risk_sweep`) instead.

Conventions: score `s(x) = βᵀx + b` for the closed forms (Example 3.8); for
`K = 2` the student score is `s = a_1 − a_2`, expert 1 wins on `s > 0` (ties go
to the lowest index, (2.9), a null set here).

Modules: `closed_forms` (Example 3.8), `risks` (2.5, 2.11, 4.5), `masses`
(2.13, 2.14, 5.5) and `gap` (§3) hold the public functions; `_normal` the
bivariate normal and the truncated moments, `_quadrature` the graded rules and
the integration over ζ, `_problem` the checks and the reduction to ζ.
"""

from .closed_forms import gaussian_interface_area as gaussian_interface_area
from .closed_forms import gaussian_interface_density as gaussian_interface_density
from .closed_forms import gaussian_slab_probability as gaussian_slab_probability
from .gap import exact_gap_coefficient as exact_gap_coefficient
from .masses import exact_ambiguity_mass as exact_ambiguity_mass
from .masses import exact_boundary_mass as exact_boundary_mass
from .risks import ExactRisks as ExactRisks
from .risks import exact_hard_risk as exact_hard_risk
from .risks import exact_risk_gap as exact_risk_gap
from .risks import exact_risk_sweep as exact_risk_sweep
from .risks import exact_soft_risk as exact_soft_risk

__all__ = [
    "gaussian_slab_probability",
    "gaussian_interface_density",
    "gaussian_interface_area",
    "exact_soft_risk",
    "exact_hard_risk",
    "exact_risk_gap",
    "exact_risk_sweep",
    "ExactRisks",
    "exact_boundary_mass",
    "exact_ambiguity_mass",
    "exact_gap_coefficient",
]
