"""The sample axis sharded over 4 simulated CPU devices equals the 1-device path."""

import textwrap

from conftest import run_on_cpu_devices

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import softhard as sh

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    K, d, n = 5, 3, 4000
    m = sh.MoE(
        sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K)),
        sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K)),
    )
    x = jnp.asarray(rng.normal(size=(n, d)))
    y = jnp.asarray(rng.normal(size=n))
    taus = jnp.array([1e-6, 1e-2, 0.3, 2.0])
    ref = sh.risk_sweep(m, x, y, taus, chunk_size=300)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    out = sh.risk_sweep(m, xs, y, taus, chunk_size=300)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    # float32 too, to float tolerance
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    ref32 = sh.risk_sweep(m, x32, y32, taus.astype(jnp.float32))
    x32s = jax.device_put(x32, NamedSharding(mesh, P("data")))
    out32 = sh.risk_sweep(m, x32s, y32, taus.astype(jnp.float32))
    np.testing.assert_allclose(out32.soft.value, ref32.soft.value, rtol=1e-5)
    print("SHARDED-OK")
    """
)


def test_sharded_sweep_matches_single_device():
    run_on_cpu_devices(SCRIPT, "SHARDED-OK")
