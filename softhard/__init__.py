"""softhard: the soft-to-hard routing limit of mixture-of-experts models, in JAX.

The public contract (DESIGN.md), flat: one `name as name` re-export per name,
and `__all__` derived from them (a test checks the two agree). Experiment
material stays in its own modules: the Section 7 set-ups, tables and the
Theorem 5.17 report in `softhard.diagnostics`, the §6 reduced model and
router-only training in `softhard.reduced`, the landscape internals (gauge
registrations, the operator layer) in `softhard.landscape`.
"""

from ._stats import Estimate as Estimate
from .boundary import AmbiguityWidths as AmbiguityWidths
from .boundary import MarginTail as MarginTail
from .boundary import TailResidual as TailResidual
from .boundary import ambiguity_mass as ambiguity_mass
from .boundary import ambiguity_widths as ambiguity_widths
from .boundary import boundary_mass as boundary_mass
from .boundary import fit_tail_profile as fit_tail_profile
from .boundary import margin_tail_fit as margin_tail_fit
from .boundary import pairwise_slab_mass as pairwise_slab_mass
from .boundary import slab_width as slab_width
from .boundary import tail_widths as tail_widths
from .certificate import Certificate as Certificate
from .certificate import GammaCheck as GammaCheck
from .certificate import certify as certify
from .certificate import gamma_check as gamma_check
from .certificate import gate_tv_bound as gate_tv_bound
from .certificate import soft_hard_bound as soft_hard_bound
from .coarea import ambiguity_coefficient as ambiguity_coefficient
from .coarea import gap_coefficient as gap_coefficient
from .coarea import kernel_bandwidth as kernel_bandwidth
from .coarea import kernel_smoothed_mean as kernel_smoothed_mean
from .coarea import level_set_density as level_set_density
from .coarea import pairwise_level_set_densities as pairwise_level_set_densities
from .coarea import surface_integral as surface_integral
from .gaussian import ExactRisks as ExactRisks
from .gaussian import exact_ambiguity_mass as exact_ambiguity_mass
from .gaussian import exact_boundary_mass as exact_boundary_mass
from .gaussian import exact_gap_coefficient as exact_gap_coefficient
from .gaussian import exact_hard_risk as exact_hard_risk
from .gaussian import exact_risk_gap as exact_risk_gap
from .gaussian import exact_risk_sweep as exact_risk_sweep
from .gaussian import exact_soft_risk as exact_soft_risk
from .gaussian import gaussian_interface_area as gaussian_interface_area
from .gaussian import gaussian_interface_density as gaussian_interface_density
from .gaussian import gaussian_slab_probability as gaussian_slab_probability
from .landscape import Classification as Classification
from .landscape import CriticalPoint as CriticalPoint
from .landscape import CriticalSearch as CriticalSearch
from .landscape import ExpertSeparation as ExpertSeparation
from .landscape import HessianBlocks as HessianBlocks
from .landscape import LinearOperator as LinearOperator
from .landscape import Recovery as Recovery
from .landscape import SearchRun as SearchRun
from .landscape import SpectralDensity as SpectralDensity
from .landscape import Spectrum as Spectrum
from .landscape import TeacherEquivalence as TeacherEquivalence
from .landscape import TransferGap as TransferGap
from .landscape import as_operator as as_operator
from .landscape import classify_critical_point as classify_critical_point
from .landscape import expert_separation as expert_separation
from .landscape import find_critical_points as find_critical_points
from .landscape import gauge_directions as gauge_directions
from .landscape import hard_risk_gradient as hard_risk_gradient
from .landscape import hessian as hessian
from .landscape import hessian_blocks as hessian_blocks
from .landscape import hessian_operator as hessian_operator
from .landscape import hessian_spectrum as hessian_spectrum
from .landscape import hessian_trace as hessian_trace
from .landscape import hvp as hvp
from .landscape import linear_operator as linear_operator
from .landscape import misrouting_mass as misrouting_mass
from .landscape import permute_experts as permute_experts
from .landscape import recovery_error as recovery_error
from .landscape import spectral_density as spectral_density
from .landscape import spectrum_sweep as spectrum_sweep
from .landscape import teacher_equivalence as teacher_equivalence
from .landscape import transfer_gap as transfer_gap
from .models import Gaussian as Gaussian
from .models import GaussianMixture as GaussianMixture
from .models import LinearExperts as LinearExperts
from .models import LinearRouter as LinearRouter
from .models import LinearTarget as LinearTarget
from .models import LinenModule as LinenModule
from .models import MLPExperts as MLPExperts
from .models import MLPRouter as MLPRouter
from .models import MoE as MoE
from .models import NormalizedRouter as NormalizedRouter
from .models import StandardGaussian as StandardGaussian
from .models import Teacher as Teacher
from .models import Uniform as Uniform
from .report import RouterReport as RouterReport
from .report import load_layers as load_layers
from .report import router_report as router_report
from .report import router_reports as router_reports
from .report import router_summary as router_summary
from .risk import RiskSweep as RiskSweep
from .risk import SweepDiagnostics as SweepDiagnostics
from .risk import diagnostic_sweep as diagnostic_sweep
from .risk import hard_predict as hard_predict
from .risk import hard_risk as hard_risk
from .risk import population_sweep as population_sweep
from .risk import risk_sweep as risk_sweep
from .risk import soft_predict as soft_predict
from .risk import soft_risk as soft_risk
from .routing import expert_outputs as expert_outputs
from .routing import gates as gates
from .routing import hard_gates as hard_gates
from .routing import log_gates as log_gates
from .routing import logits as logits
from .routing import pair_indices as pair_indices
from .routing import pairwise_min_margin as pairwise_min_margin
from .routing import pairwise_scores as pairwise_scores
from .routing import top_two_margin as top_two_margin
from .routing import topk_margin as topk_margin
from .routing import winner as winner
from .symmetry import OperatorSpectrum as OperatorSpectrum
from .symmetry import alignment as alignment
from .symmetry import alignment_rate as alignment_rate
from .symmetry import alignment_rate_small_step as alignment_rate_small_step
from .symmetry import amplification as amplification
from .symmetry import effective_operator as effective_operator
from .symmetry import effective_operator_mc as effective_operator_mc
from .symmetry import is_sign_stable as is_sign_stable
from .symmetry import operator_spectrum as operator_spectrum
from .symmetry import rayleigh_quotient as rayleigh_quotient
from .symmetry import response_moments as response_moments
from .symmetry import saturation_rate as saturation_rate
from .train import FitHistory as FitHistory
from .train import FitResult as FitResult
from .train import fit as fit

__version__ = "0.1.0"

__all__ = sorted(
    name
    for name, obj in dict(globals()).items()
    if not name.startswith("_") and getattr(obj, "__module__", "").startswith("softhard.")
)
