"""Test configuration: float64 everywhere by default, global config restored after.

Float32 paths are checked explicitly by tests that build float32 arrays (the
`dtype` fixture); with x64 enabled, float32 inputs stay float32 through
softhard's functions. Implicit rank promotion (broadcasting `[N]` against
`[N, 1]` by accident) raises, so every broadcast in the package is explicit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_CONFIG = {"jax_enable_x64": True, "jax_numpy_rank_promotion": "raise"}
_BEFORE = {name: getattr(jax.config, name) for name in _CONFIG}
for _name, _value in _CONFIG.items():
    jax.config.update(_name, _value)


def pytest_unconfigure(config):
    for name, value in _BEFORE.items():
        jax.config.update(name, value)


@pytest.fixture(params=[jnp.float64, jnp.float32], ids=["f64", "f32"])
def dtype(request):
    """Both precisions: float64 (reference) and float32 (what GPUs run)."""
    return request.param


def tol(dtype, f64=1e-12, f32=1e-5):
    """Relative tolerance that follows the precision."""
    return f64 if jnp.dtype(dtype) == jnp.float64 else f32


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed, for building test problems."""
    return np.random.default_rng(20260523)
