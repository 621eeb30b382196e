"""softhard: the soft-to-hard routing limit of mixture-of-experts models, in JAX.

The public API, re-exported from the modules that define it (see DESIGN.md).
"""

from ._stats import Estimate as Estimate
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
    "Estimate",
    "Gaussian",
    "GaussianMixture",
    "LinearExperts",
    "LinearRouter",
    "LinearTarget",
    "MLPExperts",
    "MLPRouter",
    "MoE",
    "RiskSweep",
    "StandardGaussian",
    "SweepDiagnostics",
    "Teacher",
    "Uniform",
    "diagnostic_sweep",
    "expert_outputs",
    "gates",
    "hard_gates",
    "hard_predict",
    "hard_risk",
    "log_gates",
    "logits",
    "pair_indices",
    "pairwise_min_margin",
    "pairwise_scores",
    "population_sweep",
    "risk_sweep",
    "soft_predict",
    "soft_risk",
    "top_two_margin",
    "winner",
]
