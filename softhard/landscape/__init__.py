"""Curvature and critical points of the soft risk: Hessians, spectra, gauge, saddles (§5).

The Section 5 landscape-transfer principle (Theorem 5.17) is a statement about
critical points of the soft risk `L_τ` (2.5): global minimisers recover the
teacher (5.16–5.17), and every critical point whose hard partition is not
teacher-equivalent is a *strict saddle* (`λ_min(∇²L_τ) < 0`). This package
computes what is needed to check it on a given model, one kind of thing per
module:

* `_operator`: the operator layer. `hessian_operator` (the Hessian's matvec
  linearised once, size, dtype, dense), `linear_operator` (wrap a bare
  matvec) and `as_operator` (operator, matrix or `(loss_fn, params)` →
  operator), which every spectral routine calls.
* `spectra`: `hessian`, `hessian_blocks` (Assumption 5.13), `hvp`,
  `hessian_spectrum` (dense `eigh` or Lanczos extremes), `spectrum_sweep`,
  `spectral_density` (SLQ) and `hessian_trace` (Hutch++, Hutchinson, XTrace).
* `gauge`: the softmax gauge (EQUATIONS.md §2, "Symmetries") and expert
  relabellings by `functools.singledispatch`: `gauge_basis`,
  `permute_router`, `permute_bank`, `canonical_router` (register your own
  router or bank), `gauge_directions`, `permute_experts`.
* `critical`: `find_critical_points` (optax searches, deduplicated up to
  permutation and gauge) and `classify_critical_point`.
* `teacher`: `teacher_equivalence` (5.10), `misrouting_mass` (5.11),
  `recovery_error` (5.16–5.17), `expert_separation` (5.9).
* `transfer`: `hard_risk_gradient` (the shape derivative (5.8)) and
  `transfer_gap` (Assumption 5.13).

The Theorem 5.17 experiment runner and its printer live in
`softhard.diagnostics.saddles`; `NormalizedRouter` (re-exported here) in
`softhard.models`.

Parameter vectors are *raveled* over their inexact-array leaves only
(`softhard._trees.ravel_arrays`, leaf order of `jax.tree_util.tree_leaves`;
functions and other static leaves are carried): Hessians are `[P, P]`,
eigenvectors and gauge bases have `P` rows in that order.

Streaming and sharding: every curvature routine takes `data=(x, y)` with a
per-chunk loss (`loss_fn(params, x_c, y_c)`, a chunk mean, e.g. `soft_risk`),
`chunk_size` and an optional device `mesh`; extra keywords go to the loss:

    hessian_spectrum(sh.soft_risk, model, k=10, data=(x, y), tau=0.1)
"""

import types as _types

from ..models import NormalizedRouter as NormalizedRouter
from ._operator import LinearOperator as LinearOperator
from ._operator import as_operator as as_operator
from ._operator import hessian_operator as hessian_operator
from ._operator import linear_operator as linear_operator
from ._operator import loss_gradient as loss_gradient
from .critical import Classification as Classification
from .critical import CriticalPoint as CriticalPoint
from .critical import CriticalSearch as CriticalSearch
from .critical import SearchRun as SearchRun
from .critical import classify_critical_point as classify_critical_point
from .critical import default_grad_tol as default_grad_tol
from .critical import find_critical_points as find_critical_points
from .gauge import canonical_router as canonical_router
from .gauge import gauge_basis as gauge_basis
from .gauge import gauge_directions as gauge_directions
from .gauge import permute_bank as permute_bank
from .gauge import permute_experts as permute_experts
from .gauge import permute_router as permute_router
from .spectra import HessianBlocks as HessianBlocks
from .spectra import SpectralDensity as SpectralDensity
from .spectra import Spectrum as Spectrum
from .spectra import hessian as hessian
from .spectra import hessian_blocks as hessian_blocks
from .spectra import hessian_spectrum as hessian_spectrum
from .spectra import hessian_trace as hessian_trace
from .spectra import hvp as hvp
from .spectra import spectral_density as spectral_density
from .spectra import spectrum_sweep as spectrum_sweep
from .teacher import ExpertSeparation as ExpertSeparation
from .teacher import Recovery as Recovery
from .teacher import TeacherEquivalence as TeacherEquivalence
from .teacher import expert_separation as expert_separation
from .teacher import misrouting_mass as misrouting_mass
from .teacher import recovery_error as recovery_error
from .teacher import teacher_equivalence as teacher_equivalence
from .transfer import TransferGap as TransferGap
from .transfer import hard_risk_gradient as hard_risk_gradient
from .transfer import transfer_gap as transfer_gap

#: every public name imported above (the submodules themselves are not listed)
__all__ = sorted(
    name
    for name, value in globals().items()
    if not name.startswith("_") and not isinstance(value, _types.ModuleType)
)
