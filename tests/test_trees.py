"""`softhard._trees`: array/static partition, filter_jit, ravel over inexact arrays only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softhard._trees import combine, filter_jit, is_inexact_array, partition, ravel_arrays


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Layer:
    """A pytree whose leaves include a function and an integer array, as equinox's do."""

    w: jax.Array
    act: object
    steps: jax.Array


def _layer():
    return _Layer(jnp.arange(6.0).reshape(2, 3), jax.nn.relu, jnp.arange(3))


def test_partition_combine_round_trip():
    tree = {"a": _layer(), "s": "name", "n": 3}
    arrays, static = partition(tree)
    assert arrays["a"].act is None and arrays["s"] is None and arrays["a"].steps is None
    assert static["a"].w is None and static["a"].act is jax.nn.relu
    back = combine(arrays, static)
    assert back["a"].act is jax.nn.relu and back["s"] == "name" and back["n"] == 3
    np.testing.assert_array_equal(back["a"].w, tree["a"].w)
    np.testing.assert_array_equal(back["a"].steps, tree["a"].steps)


def test_is_inexact_array():
    assert is_inexact_array(jnp.ones(2)) and is_inexact_array(np.ones(2, np.float32))
    assert not is_inexact_array(jnp.arange(2)) and not is_inexact_array(1.0)
    assert not is_inexact_array(jax.nn.relu)


def test_filter_jit_takes_function_leaves_and_caches():
    calls = []

    @filter_jit
    def apply(layer, x):
        calls.append(1)
        return layer.act(layer.w @ x) + layer.steps.sum()

    layer = _layer()
    x = jnp.array([1.0, -2.0, 0.5])
    out = apply(layer, x)
    np.testing.assert_allclose(out, jax.nn.relu(layer.w @ x) + 3)
    apply(layer, x + 1)  # same static part: no retrace
    assert len(calls) == 1
    other = dataclasses.replace(layer, act=jnp.tanh)
    np.testing.assert_allclose(apply(other, x), jnp.tanh(layer.w @ x) + 3)
    assert len(calls) == 2
    with pytest.raises(TypeError):
        jax.jit(lambda la, x: la.act(la.w @ x))(layer, x)  # what filter_jit fixes


def test_ravel_arrays_skips_non_array_leaves_and_rebuilds():
    layer = _layer()
    flat, unravel = ravel_arrays(layer)
    assert flat.shape == (6,)
    back = unravel(flat * 2)
    assert back.act is jax.nn.relu
    np.testing.assert_array_equal(back.w, 2 * layer.w)
    np.testing.assert_array_equal(back.steps, layer.steps)
    g = jax.grad(lambda v: jnp.sum(unravel(v).act(unravel(v).w)))(flat)
    np.testing.assert_array_equal(g, (flat > 0).astype(flat.dtype))
