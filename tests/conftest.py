"""Test configuration: float64 everywhere by default, global config restored after.

Float32 paths are checked explicitly by tests that build float32 arrays (the
`dtype` fixture); with x64 enabled, float32 inputs stay float32 through
softhard's functions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_X64_BEFORE = jax.config.jax_enable_x64
jax.config.update("jax_enable_x64", True)


def pytest_unconfigure(config):
    jax.config.update("jax_enable_x64", _X64_BEFORE)


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
