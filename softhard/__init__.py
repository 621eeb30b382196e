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

__version__ = "0.1.0"

__all__ = [
    "AmbiguityWidths",
    "Certificate",
    "Estimate",
    "GammaCheck",
    "Gaussian",
    "GaussianMixture",
    "LinearExperts",
    "LinearRouter",
    "LinearTarget",
    "MLPExperts",
    "MLPRouter",
    "MarginTail",
    "MoE",
    "RiskSweep",
    "StandardGaussian",
    "SweepDiagnostics",
    "Teacher",
    "Uniform",
    "ambiguity_coefficient",
    "ambiguity_mass",
    "ambiguity_widths",
    "boundary_mass",
    "certify",
    "diagnostic_sweep",
    "expert_outputs",
    "gamma_check",
    "gap_coefficient",
    "gates",
    "hard_gates",
    "hard_predict",
    "hard_risk",
    "kernel_bandwidth",
    "kernel_smoothed_mean",
    "level_set_density",
    "log_gates",
    "logits",
    "margin_tail_fit",
    "pair_indices",
    "pairwise_level_set_densities",
    "pairwise_min_margin",
    "pairwise_scores",
    "pairwise_slab_mass",
    "population_sweep",
    "risk_sweep",
    "slab_width",
    "soft_hard_bound",
    "soft_predict",
    "soft_risk",
    "surface_integral",
    "top_two_margin",
    "winner",
]
