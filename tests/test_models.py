"""Model pytrees and input laws."""

from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import softhard as sh


def test_linear_router_and_experts_hand_values():
    r = sh.LinearRouter(W=[[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]], b=[0.5, 0.0, -1.0])
    e = sh.LinearExperts(B=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], c=[0.0, 1.0, 2.0])
    x = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(r(x), [-0.5, 1.0, 2.0])
    np.testing.assert_allclose(e(x), [1.0, 0.0, 2.0])
    assert r.num_experts == 3 and r.dim == 2
    m = sh.MoE(r, e)
    assert float(m.hard(x)) == 2.0  # expert 2 wins
    g = np.exp(np.array([-0.5, 1.0, 2.0]) / 0.7)
    np.testing.assert_allclose(m(x, 0.7), (g / g.sum()) @ np.array([1.0, 0.0, 2.0]), rtol=1e-12)


def test_mlp_router_and_experts_hand_values(rng):
    d, H, K = 3, 4, 2
    W1, b1 = rng.normal(size=(H, d)), rng.normal(size=H)
    W2, b2 = rng.normal(size=(K, H)), rng.normal(size=K)
    r = sh.MLPRouter(W1, b1, W2, b2, activation=jax.nn.relu)
    x = rng.normal(size=d)
    np.testing.assert_allclose(r(jnp.asarray(x)), W2 @ np.maximum(W1 @ x + b1, 0) + b2, rtol=1e-12)
    E1, e1 = rng.normal(size=(K, H, d)), rng.normal(size=(K, H))
    E2, e2 = rng.normal(size=(K, H)), rng.normal(size=K)
    ex = sh.MLPExperts(E1, e1, E2, e2)
    ref = [E2[k] @ np.tanh(E1[k] @ x + e1[k]) + e2[k] for k in range(K)]
    np.testing.assert_allclose(ex(jnp.asarray(x)), ref, rtol=1e-12)


def test_models_are_pytrees_through_jit_grad_and_tree_map(rng):
    r = sh.LinearRouter(rng.normal(size=(3, 2)), rng.normal(size=3))
    e = sh.LinearExperts(rng.normal(size=(3, 2)), rng.normal(size=3))
    m = sh.MoE(r, e)
    leaves = jax.tree.leaves(m)
    assert len(leaves) == 4
    doubled = jax.tree.map(lambda p: 2 * p, m)
    np.testing.assert_allclose(doubled.router.W, 2 * r.W)
    x = jnp.asarray(rng.normal(size=(10, 2)))
    y = jnp.asarray(rng.normal(size=10))
    g = jax.jit(jax.grad(sh.soft_risk))(m, x, y, 0.5)
    assert isinstance(g, sh.MoE) and g.router.W.shape == (3, 2)
    # a stack of models (leading batch axis) is allowed, for vmap over models
    stacked = jax.tree.map(lambda *p: jnp.stack(p), m, doubled)
    out = jax.vmap(lambda mm: sh.soft_risk(mm, x, y, 0.5))(stacked)
    np.testing.assert_allclose(out[1], sh.soft_risk(doubled, x, y, 0.5), rtol=1e-12)


class _QuadraticRouter(NamedTuple):
    """A user's own router, logits `(|x|² − r², 0)`: a NamedTuple, which JAX already
    treats as a pytree, so nothing is registered with JAX or with softhard."""

    r: jax.Array  # scalar radius

    def __call__(self, x):
        return jnp.stack([jnp.sum(x**2) - self.r**2, jnp.zeros((), x.dtype)])


def test_custom_nonlinear_router_needs_no_registration(rng):
    """A user's own router: any pytree with __call__(x: [d]) -> [K]."""
    router = _QuadraticRouter(jnp.asarray(1.0))
    experts = sh.LinearExperts(B=[[0.0, 0.0], [0.0, 0.0]], c=[1.0, -1.0])
    m = sh.MoE(router, experts)
    x = jnp.asarray(rng.normal(size=(200, 2)))
    out = (jnp.sum(x**2, -1) > 1.0).astype(x.dtype) * 2 - 1  # outside the circle -> expert 0
    np.testing.assert_allclose(sh.hard_predict(m, x), out)
    y = jnp.zeros(200)
    np.testing.assert_allclose(sh.hard_risk(m, x, y), 1.0)
    # differentiable in the custom router's parameter: the gradient agrees with central
    # differences of the soft risk in r (smooth at tau = 0.1; h = 1e-5, error ~h²)

    def risk(r):
        return sh.soft_risk(sh.MoE(_QuadraticRouter(r), experts), x, out, 0.1)

    g = jax.grad(lambda mm: sh.soft_risk(mm, x, out, 0.1))(m)
    assert isinstance(g.router, _QuadraticRouter)
    h = 1e-5
    fd = (risk(router.r + h) - risk(router.r - h)) / (2 * h)
    assert abs(float(fd)) > 1e-2  # a gradient worth checking
    np.testing.assert_allclose(g.router.r, fd, rtol=1e-7)
    t = sh.Teacher(router, experts)
    xs, ys = t.sample(jax.random.key(3), sh.StandardGaussian(2), 100)
    np.testing.assert_allclose(ys, sh.hard_predict(m, xs))


def test_teacher_sample_and_noise():
    r = sh.LinearRouter(W=[[1.0, 0.0], [-1.0, 0.0]], b=[0.0, 0.0])
    e = sh.LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    t = sh.Teacher(r, e, noise_std=0.5)
    x, y = t.sample(jax.random.key(0), sh.StandardGaussian(2), 200_000)
    resid = y - jnp.where(x[:, 0] >= 0, x[:, 1], -x[:, 1])
    # noise variance 0.25; stderr of the sample variance ≈ 0.25·sqrt(2/n)
    assert abs(float(jnp.var(resid)) - 0.25) < 4 * 0.25 * np.sqrt(2 / 200_000)
    with pytest.raises(ValueError, match="noise_std"):
        sh.Teacher(r, e, noise_std=-1.0)


def test_gaussian_law_sample_and_log_prob(rng):
    d = 3
    A = rng.normal(size=(d, d))
    cov = A @ A.T + 0.5 * np.eye(d)
    mean = rng.normal(size=d)
    law = sh.Gaussian(mean, cov)
    x = law.sample(jax.random.key(1), 400_000)
    n = x.shape[0]
    # sample mean within 4 stderr per coordinate
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(np.asarray(x.mean(0)) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.03)
    pts = rng.normal(size=(5, d))
    ref = stats.multivariate_normal(mean, cov).logpdf(pts)
    np.testing.assert_allclose(jax.vmap(law.log_prob)(jnp.asarray(pts)), ref, rtol=1e-12)
    std = sh.StandardGaussian(4)
    np.testing.assert_allclose(std.log_prob(jnp.zeros(4)), -2 * np.log(2 * np.pi), rtol=1e-14)


def test_uniform_and_mixture_laws(rng):
    u = sh.Uniform(low=[0.0, -1.0], high=[2.0, 1.0])
    x = u.sample(jax.random.key(2), 10_000)
    assert bool(jnp.all((x[:, 0] >= 0) & (x[:, 0] <= 2) & (jnp.abs(x[:, 1]) <= 1)))
    np.testing.assert_allclose(u.log_prob(jnp.array([1.0, 0.0])), -np.log(4.0))
    assert float(u.log_prob(jnp.array([3.0, 0.0]))) == -np.inf

    w = np.array([0.3, 0.7])
    means = np.array([[0.0, 0.0], [3.0, 1.0]])
    covs = np.stack([np.eye(2), np.array([[2.0, 0.3], [0.3, 0.5]])])
    gm = sh.GaussianMixture(w, means, covs)
    pts = rng.normal(size=(4, 2))
    ref = np.log(
        w[0] * stats.multivariate_normal(means[0], covs[0]).pdf(pts)
        + w[1] * stats.multivariate_normal(means[1], covs[1]).pdf(pts)
    )
    np.testing.assert_allclose(jax.vmap(gm.log_prob)(jnp.asarray(pts)), ref, rtol=1e-12)
    xs = gm.sample(jax.random.key(5), 200_000)
    mix_mean = w @ means
    assert np.all(np.abs(np.asarray(xs.mean(0)) - mix_mean) < 0.02)


def test_same_key_same_sample():
    law = sh.StandardGaussian(3)
    np.testing.assert_array_equal(
        law.sample(jax.random.key(7), 10), law.sample(jax.random.key(7), 10)
    )


def test_bad_model_shapes_raise():
    with pytest.raises(ValueError, match="b"):
        sh.LinearRouter(W=np.zeros((3, 2)), b=np.zeros(2))
    with pytest.raises(ValueError, match="K >= 2"):
        sh.LinearRouter(W=np.zeros((1, 2)), b=np.zeros(1))
    with pytest.raises(ValueError, match="LinearExperts"):
        sh.LinearExperts(B=np.zeros((3, 2)), c=np.zeros(4))
    with pytest.raises(ValueError, match="positive definite"):
        sh.Gaussian(np.zeros(2), np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        sh.Gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="low"):
        sh.Uniform(low=[1.0], high=[0.0])
    with pytest.raises(ValueError, match="weights"):
        sh.GaussianMixture([0.5, 0.6], np.zeros((2, 1)), np.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="d"):
        sh.StandardGaussian(0)


def test_tree_operations_on_models_are_not_rejected(rng):
    """Transformed copies (per-leaf norms, Hessians, stacks) are valid pytrees of the class."""
    import optax

    m = sh.MoE(
        sh.LinearRouter(rng.normal(size=(3, 2)), rng.normal(size=3)),
        sh.MLPExperts(
            rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4)),
            rng.normal(size=3),
        ),
    )  # fmt: skip
    norm = optax.tree_utils.tree_norm(m)
    flat = jax.flatten_util.ravel_pytree(m)[0]
    np.testing.assert_allclose(norm, jnp.linalg.norm(flat), rtol=1e-12)
    shapes = jax.tree.map(jnp.shape, m)
    assert shapes.router.W == (3, 2)
    h = jax.hessian(lambda r: jnp.sum(r(jnp.ones(2)) ** 2))(m.router)
    assert h.W.W.shape == (3, 2, 3, 2) and h.b.W.shape == (3, 3, 2)
    law = sh.Gaussian(np.zeros(2), np.eye(2))
    assert jax.tree.map(lambda a: a.sum(), law).cov.shape == ()


def test_gradients_of_laws_are_not_validated_as_laws():
    """A cotangent of a law is not a law: its `cov` need not be symmetric or PD.

    Construction still validates (see `test_bad_model_shapes_raise`); rebuilding
    through `tree_unflatten` does not.
    """
    g = jax.grad(lambda law: law.cov[0, 1])(sh.StandardGaussian(2))
    np.testing.assert_array_equal(g.cov, [[0.0, 1.0], [0.0, 0.0]])
    mix = sh.GaussianMixture([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2)] * 2))
    gw = jax.grad(lambda m: m.weights[0])(mix).weights
    np.testing.assert_array_equal(gw, [1.0, 0.0])
    neg = jax.tree.map(lambda a: -a, sh.StandardGaussian(3))  # negative definite, still a pytree
    assert isinstance(neg, sh.Gaussian) and float(neg.cov[0, 0]) == -1.0
    # static metadata survives a round trip
    nr = sh.NormalizedRouter(W=np.ones((2, 3)), b=np.zeros(2), scale=2.5)
    assert jax.tree.map(lambda a: a, nr).scale == 2.5
