"""softhard: the soft-to-hard routing limit of mixture-of-experts models, in JAX.

The public API, re-exported from the modules that define it (see DESIGN.md).
"""

from ._stats import Estimate as Estimate
from .boundary import AmbiguityWidths as AmbiguityWidths
from .boundary import Certificate as Certificate
from .boundary import GammaCheck as GammaCheck
from .boundary import MarginTail as MarginTail
from .boundary import ambiguity_mass as ambiguity_mass
from .boundary import ambiguity_widths as ambiguity_widths
from .boundary import boundary_mass as boundary_mass
from .boundary import certify as certify
from .boundary import gamma_check as gamma_check
from .boundary import margin_tail_fit as margin_tail_fit
from .boundary import pairwise_slab_mass as pairwise_slab_mass
from .boundary import slab_width as slab_width
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
from .landscape import ExpertSeparation as ExpertSeparation
from .landscape import HessianBlocks as HessianBlocks
from .landscape import NormalizedRouter as NormalizedRouter
from .landscape import Recovery as Recovery
from .landscape import SaddleReport as SaddleReport
from .landscape import SpectralDensity as SpectralDensity
from .landscape import Spectrum as Spectrum
from .landscape import TeacherEquivalence as TeacherEquivalence
from .landscape import TransferGap as TransferGap
from .landscape import classify_critical_point as classify_critical_point
from .landscape import expert_separation as expert_separation
from .landscape import find_critical_points as find_critical_points
from .landscape import format_report as format_report
from .landscape import gauge_directions as gauge_directions
from .landscape import hard_risk_gradient as hard_risk_gradient
from .landscape import hessian as hessian
from .landscape import hessian_blocks as hessian_blocks
from .landscape import hessian_spectrum as hessian_spectrum
from .landscape import hessian_trace as hessian_trace
from .landscape import hvp as hvp
from .landscape import misrouting_mass as misrouting_mass
from .landscape import permute_experts as permute_experts
from .landscape import recovery_error as recovery_error
from .landscape import spectral_density as spectral_density
from .landscape import spectrum_sweep as spectrum_sweep
from .landscape import strict_saddle_report as strict_saddle_report
from .landscape import teacher_equivalence as teacher_equivalence
from .landscape import transfer_gap as transfer_gap
from .models import Gaussian as Gaussian
from .models import GaussianMixture as GaussianMixture
from .models import LinearExperts as LinearExperts
from .models import LinearRouter as LinearRouter
from .models import LinearTarget as LinearTarget
from .models import MLPExperts as MLPExperts
from .models import MLPRouter as MLPRouter
from .models import MoE as MoE
from .models import StandardGaussian as StandardGaussian
from .models import Teacher as Teacher
from .models import Uniform as Uniform
from .risk import RiskSweep as RiskSweep
from .risk import SweepDiagnostics as SweepDiagnostics
from .risk import diagnostic_sweep as diagnostic_sweep
from .risk import hard_predict as hard_predict
from .risk import hard_risk as hard_risk
from .risk import population_sweep as population_sweep
from .risk import risk_sweep as risk_sweep
from .risk import soft_hard_bound as soft_hard_bound
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
from .routing import winner as winner
from .symmetry import ExactLinearisation as ExactLinearisation
from .symmetry import OperatorSpectrum as OperatorSpectrum
from .symmetry import ReducedModel as ReducedModel
from .symmetry import TrainResult as TrainResult
from .symmetry import alignment as alignment
from .symmetry import alignment_rate as alignment_rate
from .symmetry import alignment_rate_small_step as alignment_rate_small_step
from .symmetry import amplification as amplification
from .symmetry import effective_operator as effective_operator
from .symmetry import effective_operator_mc as effective_operator_mc
from .symmetry import exact_linearisation as exact_linearisation
from .symmetry import is_sign_stable as is_sign_stable
from .symmetry import operator_spectrum as operator_spectrum
from .symmetry import rayleigh_quotient as rayleigh_quotient
from .symmetry import reduced_model as reduced_model
from .symmetry import reduced_moe as reduced_moe
from .symmetry import reduced_risk as reduced_risk
from .symmetry import reduced_risk_exact as reduced_risk_exact
from .symmetry import reduced_sample as reduced_sample
from .symmetry import reduced_teacher as reduced_teacher
from .symmetry import response_moments as response_moments
from .symmetry import saturation_rate as saturation_rate
from .symmetry import table3_model as table3_model
from .symmetry import train_router as train_router

__version__ = "0.1.0"

__all__ = [
    "AmbiguityWidths",
    "Certificate",
    "Classification",
    "CriticalPoint",
    "Estimate",
    "ExactLinearisation",
    "ExactRisks",
    "ExpertSeparation",
    "GammaCheck",
    "Gaussian",
    "GaussianMixture",
    "HessianBlocks",
    "LinearExperts",
    "LinearRouter",
    "LinearTarget",
    "MLPExperts",
    "MLPRouter",
    "MarginTail",
    "MoE",
    "NormalizedRouter",
    "OperatorSpectrum",
    "Recovery",
    "ReducedModel",
    "RiskSweep",
    "SaddleReport",
    "SpectralDensity",
    "Spectrum",
    "StandardGaussian",
    "SweepDiagnostics",
    "Teacher",
    "TeacherEquivalence",
    "TrainResult",
    "TransferGap",
    "Uniform",
    "alignment",
    "alignment_rate",
    "alignment_rate_small_step",
    "ambiguity_coefficient",
    "ambiguity_mass",
    "ambiguity_widths",
    "amplification",
    "boundary_mass",
    "certify",
    "classify_critical_point",
    "diagnostic_sweep",
    "effective_operator",
    "effective_operator_mc",
    "exact_ambiguity_mass",
    "exact_boundary_mass",
    "exact_gap_coefficient",
    "exact_hard_risk",
    "exact_linearisation",
    "exact_risk_gap",
    "exact_risk_sweep",
    "exact_soft_risk",
    "expert_outputs",
    "expert_separation",
    "find_critical_points",
    "format_report",
    "gamma_check",
    "gap_coefficient",
    "gates",
    "gauge_directions",
    "gaussian_interface_area",
    "gaussian_interface_density",
    "gaussian_slab_probability",
    "hard_gates",
    "hard_predict",
    "hard_risk",
    "hard_risk_gradient",
    "hessian",
    "hessian_blocks",
    "hessian_spectrum",
    "hessian_trace",
    "hvp",
    "is_sign_stable",
    "kernel_bandwidth",
    "kernel_smoothed_mean",
    "level_set_density",
    "log_gates",
    "logits",
    "margin_tail_fit",
    "misrouting_mass",
    "operator_spectrum",
    "pair_indices",
    "pairwise_level_set_densities",
    "pairwise_min_margin",
    "pairwise_scores",
    "pairwise_slab_mass",
    "permute_experts",
    "population_sweep",
    "rayleigh_quotient",
    "recovery_error",
    "reduced_model",
    "reduced_moe",
    "reduced_risk",
    "reduced_risk_exact",
    "reduced_sample",
    "reduced_teacher",
    "response_moments",
    "risk_sweep",
    "saturation_rate",
    "slab_width",
    "soft_hard_bound",
    "soft_predict",
    "soft_risk",
    "spectral_density",
    "spectrum_sweep",
    "strict_saddle_report",
    "surface_integral",
    "table3_model",
    "teacher_equivalence",
    "top_two_margin",
    "train_router",
    "transfer_gap",
    "winner",
]
