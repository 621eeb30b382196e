"""Test configuration: float64 everywhere by default, global config restored after.

Float32 paths are checked explicitly by tests that build float32 arrays (the
`dtype` fixture); with x64 enabled, float32 inputs stay float32 through
softhard's functions. Implicit rank promotion (broadcasting `[N]` against
`[N, 1]` by accident) raises, so every broadcast in the package is explicit.
"""

import gc

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


# Every program XLA:CPU compiles keeps ~100 memory mappings while jax caches it, and a
# process may hold at most vm.max_map_count (65530 by default) of them: one pytest
# process compiling a few thousand programs segfaults inside the compiler (CI, exit
# 139). Drop the compiled programs once the process holds more than half of that.
_MAPS_LIMIT = 30_000


def _mapping_count() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to watch
        return 0


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    yield
    if _mapping_count() > _MAPS_LIMIT:
        jax.clear_caches()
        gc.collect()


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


def k3_teacher():
    """A K = 3 linear teacher in d = 2 with noise 0.1 (third-party and `fit` tests)."""
    import softhard as sh

    return sh.Teacher(
        sh.LinearRouter(
            jnp.array([[1.0, 0.3], [-1.0, 0.2], [0.1, -1.0]]), jnp.array([0.3, -0.3, 0.0])
        ),
        sh.LinearExperts(
            jnp.array([[1.0, 1.0], [-1.0, 0.5], [0.3, -1.2]]), jnp.array([0.5, -0.2, 0.1])
        ),
        noise_std=0.1,
    )


def run_on_cpu_devices(script: str, marker: str, *, devices: int = 4, timeout: int = 300):
    """Run `script` in a fresh Python on `devices` simulated CPU devices; it must print `marker`."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    flag = f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + flag
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker in proc.stdout
