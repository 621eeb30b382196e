"""Mixed-precision Lanczos with a Rayleigh–Ritz refinement, and the block product (issue 18).

`hessian_spectrum(..., matvec_dtype=jnp.float32)` on float64 parameters runs
the Lanczos steps on float32 products and refines the `2k` extreme Ritz
vectors by one float64 Rayleigh–Ritz step; when the error bound misses `tol`
the float64 Lanczos runs instead. Each answer is checked against a dense
float64 `eigh` (independent of Lanczos), the bound against the actual error,
and the structured block product `LinearOperator.apply` against the
single-vector product column by column.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softhard as sh
from softhard import landscape as L
from softhard._trees import ravel_arrays
from softhard.landscape import _structured as S
from softhard.landscape import spectra as SP

K, D, N, TAU = 4, 3, 2000, 0.3


def _problem(seed=0, n=N):
    rng = np.random.default_rng(seed)
    model = sh.MoE(
        sh.LinearRouter(rng.normal(size=(K, D)), rng.normal(size=K)),
        sh.LinearExperts(rng.normal(size=(K, D)), rng.normal(size=K)),
    )
    model = jax.tree.map(jnp.asarray, model)
    return model, jnp.asarray(rng.normal(size=(n, D))), jnp.asarray(rng.normal(size=n))


def _dense(model, x, y):
    H = L.hessian(lambda m: sh.soft_risk(m, x, y, TAU), model)
    return np.linalg.eigvalsh(np.asarray(H))


def _ref(dense, k, which):
    if which == "largest":
        return dense[-k:]
    if which == "smallest":
        return dense[:k]
    return np.sort(dense[np.argsort(-np.abs(dense))[:k]])


@pytest.mark.parametrize("which", ["magnitude", "smallest"])
def test_refined_matches_dense_eigh(which):
    model, x, y = _problem()
    dense = _dense(model, x, y)  # P = 32
    k, m = 3, 24
    spec = jax.jit(
        lambda mo: L.hessian_spectrum(
            sh.soft_risk, mo, k, data=(x, y), tau=TAU, which=which, num_matvecs=m,
            matvec_dtype=jnp.float32, eigenvectors=True,
        )
    )(model)  # fmt: skip
    ref = _ref(dense, k, which)
    assert spec.eigenvalues.dtype == jnp.float64
    err = np.abs(np.asarray(spec.eigenvalues) - ref)
    scale = np.max(np.abs(ref))
    assert np.max(err) <= 1e-10 * scale, (err, spec.residuals)
    # an eigenvalue within each residual (the rigorous bound), residuals in float64
    assert np.all(err <= np.asarray(spec.residuals) + 1e-14 * scale)
    V = np.asarray(spec.eigenvectors)
    np.testing.assert_allclose(V.T @ V, np.eye(k), atol=1e-12)
    if which == "magnitude":
        # the refinement answered by itself: float32 Ritz vectors refined, residuals far
        # above a float64 Lanczos's (whose fallback would give ~1e-14)
        assert 1e-9 < float(jnp.max(spec.residuals)) < 1e-2


def test_unreachable_tol_falls_back_to_full_lanczos():
    model, x, y = _problem(2)
    kw = dict(data=(x, y), tau=TAU, which="magnitude", num_matvecs=24, eigenvectors=True)

    @jax.jit
    def both(m):
        plain = L.hessian_spectrum(sh.soft_risk, m, 3, **kw)
        got = L.hessian_spectrum(sh.soft_risk, m, 3, matvec_dtype=jnp.float32, tol=1e-300, **kw)
        return plain, got

    plain, got = both(model)
    assert plain.residuals is None
    np.testing.assert_allclose(got.eigenvalues, plain.eigenvalues, rtol=1e-13)
    # the fallback's residuals are the float64 Lanczos pairs' own
    H = np.asarray(L.hessian(lambda m: sh.soft_risk(m, x, y, TAU), model))
    V, lam = np.asarray(got.eigenvectors), np.asarray(got.eigenvalues)
    np.testing.assert_allclose(got.residuals, np.linalg.norm(H @ V - V * lam, axis=0), atol=1e-12)


def test_refined_on_a_matrix_and_under_vmap():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.normal(size=(60, 60)))[0]
    lam = np.concatenate([np.linspace(-1.0, 1.0, 55), [3.0, 3.5, 4.0, -5.0, 6.0]])
    A = (Q * lam) @ Q.T
    spec = L.hessian_spectrum(jnp.asarray(A), k=4, which="magnitude", matvec_dtype=jnp.float32)
    np.testing.assert_allclose(spec.eigenvalues, [-5.0, 3.5, 4.0, 6.0], rtol=1e-10)
    # vmapped over a scale (the cond becomes a select): still the right answers
    f = jax.vmap(
        lambda c: (
            L.hessian_spectrum(
                c * jnp.asarray(A), k=2, which="largest", matvec_dtype=jnp.float32
            ).eigenvalues
        )
    )
    np.testing.assert_allclose(f(jnp.array([1.0, 2.0])), [[4.0, 6.0], [8.0, 12.0]], rtol=1e-10)


def test_ritz_bounds_cover_the_error():
    """The quadratic bound holds on a perturbed subspace with a cluster and a gap."""
    rng = np.random.default_rng(4)
    P, b = 40, 6
    lam = np.concatenate([[10.0, 10.0 + 1e-9, 9.0, 8.0, 7.5, 7.0], np.linspace(-3, 3, P - 6)])
    Q = np.linalg.qr(rng.normal(size=(P, P)))[0]
    A = (Q * lam) @ Q.T
    V = np.linalg.qr(Q[:, :b] + 1e-5 * rng.normal(size=(P, b)))[0]
    T = V.T @ A @ V
    theta, S_ = np.linalg.eigh(0.5 * (T + T.T))
    Y = V @ S_
    res = np.linalg.norm(A @ Y - Y * theta, axis=0)
    idx = jnp.arange(b - 3, b)
    bound = np.asarray(SP._ritz_bounds(jnp.asarray(theta), jnp.asarray(res), idx))[b - 3 :]
    err = np.abs(theta[b - 3 :] - np.sort(lam)[-3:])
    assert np.all(err <= bound)
    assert np.all(bound < 1e-2 * res[b - 3 :])  # quadratic: far below the residuals


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"matvec_dtype": jnp.int32}, "matvec_dtype"),
        ({"matvec_dtype": jnp.float32, "k": None}, "give `k`"),
        ({"matvec_dtype": jnp.float32, "lanczos_dtype": jnp.float64}, "not both"),
        ({"matvec_dtype": jnp.float32, "tol": 0.0}, "tol"),
        ({"matvec_dtype": jnp.float32, "tol": float("nan")}, "tol"),
    ],
)
def test_bad_mixed_arguments(kwargs, match):
    model, x, y = _problem(n=50)
    kw = {"k": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        L.hessian_spectrum(sh.soft_risk, model, data=(x, y), tau=TAU, **kw)


def test_operator_input_refuses_matvec_dtype():
    op = L.linear_operator(lambda u: 2.0 * u, 5, jnp.float64)
    with pytest.raises(ValueError, match="LinearOperator"):
        L.hessian_spectrum(op, k=2, matvec_dtype=jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_block_product_equals_columns(dtype, monkeypatch):
    """`apply` (the structured matmat, in sub-blocks) equals the matvec column by column."""
    monkeypatch.setattr(S, "FAST_BLOCK", 64)
    monkeypatch.setattr(S, "fast_block", lambda K, d, itemsize: 16)  # sub-blocks of 16
    model, x, y = _problem(5, n=64 * 3 + 7)  # 3 blocks and a ragged tail
    model = jax.tree.map(lambda a: a.astype(dtype), model)
    x, y = x.astype(dtype), y.astype(dtype)
    flat, unravel = ravel_arrays(model)
    grad = jax.grad(lambda p: sh.soft_risk(unravel(p), x, y, TAU))
    hvps = jax.vmap(lambda u: jax.jvp(grad, (flat,), (u,))[1], in_axes=1, out_axes=1)
    G = L.gauge_directions(model)
    for gauge in (None, G) if dtype == jnp.float64 else (None,):
        op = L.hessian_operator(sh.soft_risk, model, data=(x, y), tau=TAU, gauge=gauge)
        assert op.matmat is not None
        P = ravel_arrays(model)[0].size
        U = jax.random.normal(jax.random.key(0), (P, 5), dtype)
        block = jax.jit(op.apply)(U)
        cols = jax.jit(jax.vmap(op.matvec, in_axes=1, out_axes=1))(U)
        assert block.dtype == dtype
        tol = 1e-12 if dtype == jnp.float64 else 1e-5
        scale = float(jnp.max(jnp.abs(cols)))
        assert float(jnp.max(jnp.abs(block - cols))) <= tol * scale
        # both sides above run the re-blocked scan: check it against forward-over-reverse
        assert float(jnp.max(jnp.abs(block - op.project(hvps(op.project(U)))))) <= 10 * tol * scale


def test_refined_keeps_float64_answers_of_a_loss_closing_over_float64():
    """A loss closing over a float64 array (as `spectrum_sweep`'s does over τ) has float64
    products even on float32 parameters: the refinement still answers to float64 accuracy."""
    model, x, y = _problem(6, n=400)
    tau = jnp.asarray(0.2, jnp.float64)

    def loss(m, xc, yc):
        return sh.soft_risk(m, xc, yc, tau)

    spec = L.hessian_spectrum(
        loss, model, 2, data=(x, y), which="largest", num_matvecs=16, matvec_dtype=jnp.float32
    )
    H = L.hessian(lambda m: sh.soft_risk(m, x, y, tau), model)
    ref = np.linalg.eigvalsh(np.asarray(H))[-2:]
    np.testing.assert_allclose(spec.eigenvalues, ref, rtol=1e-10)
    assert spec.eigenvalues.dtype == jnp.float64 and spec.residuals.shape == (2,)
