"""Structured Hessian-vector products of the soft risk of a built-in `MoE`.

The soft risk (2.5) is a sample mean of a per-sample loss of `2K` numbers,
`ℓ(z_n, y_n) = (y_n − f_τ(x_n))²` with `z_n = (a(x_n), f(x_n)) ∈ R^{2K}` the
router logits and expert outputs (2.2) and `f_τ = Σ_j w_j(a) f_j` the soft
predictor (2.4; top-k routing: T.3–T.5). With `J_n = ∂z_n/∂θ` the Hessian
splits exactly (Gauss–Newton plus curvature of the network):

    ∇²L v = (1/N) Σ_n J_nᵀ C_n J_n v + (1/N) Σ_n Σ_m g_{n,m} ∇²z_{n,m} v,

`C_n = ∇²_z ℓ(z_n, y_n): [2K, 2K]`, `g_n = ∇_z ℓ(z_n, y_n): [2K]`, both
computed once at the point. `J v` is the linearised map `θ ↦ z(θ)`
(`jax.linearize`; for linear families two skinny matmuls), `Jᵀ w` its
transpose (`jax.linear_transpose`). The second term vanishes when `z` is
affine in `θ` (`LinearRouter` with `LinearExperts`); otherwise it is the
linearised gradient of `θ ↦ (1/N) Σ_n g_n · z_n(θ)` with `g` held fixed.

`C_n` comes from autodiff of the same gate functions `soft_risk` uses
(`routing.gates`, the top-k weights of `risk`), so top-k masks, combine
temperatures and selection maps match `soft_risk` exactly. For the paper's
top-1 softmax routing (no combine temperature, no selection) `C_n` is applied
in closed form from `w = π^τ(a)`, `q = w ⊙ (f − f_τ)` and `r = y − f_τ`
(`[N, K]`, `[N, K]`, `[N]`), with `S = (diag w − w wᵀ)/τ`:

    ∇_z f_τ = (q/τ, w),  ∇²_{aa} f_τ = (diag q − w qᵀ − q wᵀ)/τ²,
    ∇²_{af} f_τ = S,  ∇²_{ff} f_τ = 0,  C = 2 ∇f_τ ∇f_τᵀ − 2 r ∇²f_τ.

Two routes: `"whole"` keeps the per-sample factors of the whole sample
(linearised once; memory `O(N K²)`, or `O(N K)` for top-1), `"chunked"`
recomputes them per chunk inside the streamed matvec (`_operator._sample_mean`,
peak memory one chunk's).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from .._trees import ravel_arrays
from .._validate import inv_temperature
from ..models import (
    LinearExperts,
    LinearRouter,
    MLPExperts,
    MLPRouter,
    MoE,
    NormalizedRouter,
    is_top1,
)
from ..risk import _weights, soft_risk
from ..routing import expert_outputs, gates, logits

__all__ = ["applies", "is_affine", "whole_matvec", "chunk_hvp", "BUILDS"]

_ROUTERS = (LinearRouter, MLPRouter, NormalizedRouter)
_EXPERTS = (LinearExperts, MLPExperts)

#: element budget `N · (per-sample factor size)` of the whole-sample route
WHOLE_ELEMENTS = 1 << 25

#: how many structured operators were built, by route (tests read it)
BUILDS = {"whole": 0, "chunked": 0}


def applies(loss_fn, params, loss_kwargs: dict, arrays: tuple) -> bool:
    """True when `loss_fn` is `soft_risk` of a built-in `MoE` on `data=(x: [N, d], y: [N])`.

    `loss_kwargs` must be exactly `{"tau": ...}`.
    """
    return (
        loss_fn is soft_risk
        and isinstance(params, MoE)
        and isinstance(params.router, _ROUTERS)
        and isinstance(params.experts, _EXPERTS)
        and set(loss_kwargs) == {"tau"}
        and len(arrays) == 2
        and arrays[0].ndim == 2
        and arrays[1].ndim == 1
    )


def is_affine(model) -> bool:
    """`z(θ) = (a, f)` is affine in the parameters: a `LinearRouter` with `LinearExperts`."""
    return isinstance(model.router, LinearRouter) and isinstance(model.experts, LinearExperts)


def factor_elements(model, n: int) -> int:
    """Elements `N · [2K, 2K]` (top-1: `N · (2K + 1)`) the whole route keeps."""
    K = model.router.num_experts
    return n * ((2 * K + 1) if is_top1(model) else 4 * K * K)


# ----------------------------------------------------------------------------
# the per-sample loss in (logit, output) space
# ----------------------------------------------------------------------------


def _z(unravel, x):
    """`p: [P] -> (a, f)`, each `[N, K]`: logits (2.2) and expert outputs of `unravel(p)`."""

    def z(p):
        m = unravel(p)
        return logits(m.router, x), expert_outputs(m.experts, x)

    return z


def _sample_loss(model, tau):
    """`(a: [K], f: [K], y: []) -> (y − Σ_j w_j(a) f_j)²`, gates as in `soft_predict` (2.4, T.5)."""

    def ell(a, f, y):
        a, f = a[None, :], f[None, :]
        w = gates(a, tau) if is_top1(model) else _weights(model, a, tau)
        return (y - jnp.sum(w * f)) ** 2

    return ell


def _factors(model, a, f, y, tau):
    """Per-sample factors of `C_n` and `g_n` at `(a, f): [N, K]`, `y: [N]`.

    Top-1: `("top1", w, q, r, 1/τ)` (closed form, module docstring);
    otherwise `("dense", C: [N, 2K, 2K])`. Also `g: ([N, K], [N, K])`.
    """
    if is_top1(model):
        w = gates(a, tau)
        p = jnp.sum(w * f, -1)
        r = y - p
        q = w * (f - p[:, None])
        inv = inv_temperature(tau, jnp.result_type(a, float)).astype(a.dtype)
        g = (-2.0 * r[:, None] * inv * q, -2.0 * r[:, None] * w)
        return ("top1", w, q, r, inv), g
    ell = _sample_loss(model, tau)
    K = a.shape[1]

    def flat(zz, yy):
        return ell(zz[:K], zz[K:], yy)

    zz = jnp.concatenate([a, f], axis=1)
    gz = jax.vmap(jax.grad(flat))(zz, y)
    C = jax.vmap(jax.hessian(flat))(zz, y)
    return ("dense", C), (gz[:, :K], gz[:, K:])


def _apply_top1(fac, da, df, axis: int = -1):
    """Closed-form `C_n (da_n, df_n)` of top-1 softmax routing (2.3, 2.5); `K` along `axis`.

    `da, df`: `[N, K]` or `[K, N]`; `fac = ("top1", w, q, r, 1/τ)` with `w, q` laid out
    like them and `r: [N]`.
    """
    _, w, q, r, inv = fac

    def dot(u, v):
        return jnp.sum(u * v, axis=axis, keepdims=True)

    wa, wf, qa = dot(w, da), dot(w, df), dot(q, da)
    mi = -2.0 * jnp.expand_dims(r, axis) * inv
    # 2 ∇f_τ (∇f_τ · v) − 2 r ∇²f_τ v, collected: with e = s + (−2r/τ)(da − w·da),
    # s = 2(q·da/τ + w·df), the a-part is (q e + (−2r) w (df − w·df − q·da/τ))/τ, the f-part w e
    e = 2.0 * (inv * qa + wf) + mi * (da - wa)
    return inv * q * e + mi * w * (df - wf - inv * qa), w * e


def _apply_c(fac, da, df):
    """`C_n (da_n, df_n)` for every sample: `([N, K], [N, K])`."""
    if fac[0] == "top1":
        return _apply_top1(fac, da, df)
    C = fac[1]
    K = da.shape[1]
    v = jnp.concatenate([da, df], axis=1)
    out = jnp.einsum("nij,nj->ni", C, v, precision=jax.lax.Precision.HIGHEST)
    return out[:, :K], out[:, K:]


def _parts(model, unravel, flat, x, y, tau):
    """`(jvp, vjp, fac, second)` at `flat` for the sample `(x, y)`; `second` is None if affine."""
    z = _z(unravel, x)
    (a, f), jvp = jax.linearize(z, flat)
    vjp = jax.linear_transpose(jvp, flat)
    fac, (ga, gf) = _factors(model, a, f, y, tau)
    second = None
    if not is_affine(model):
        n = x.shape[0]

        def contract(p):
            aa, ff = z(p)
            return (jnp.sum(ga * aa) + jnp.sum(gf * ff)) / n

        second = jax.grad(contract)
    return jvp, vjp, fac, second


# ----------------------------------------------------------------------------
# linear router and linear experts, top-1: one [2K, d] matmul each way
# ----------------------------------------------------------------------------

_HP = jax.lax.Precision.HIGHEST


def _affine_split(model):
    """`(Θ: [2K, d], β: [2K])`: the stacked rows `[W; B]` and biases `[b; c]`."""
    r, e = model.router, model.experts
    return jnp.concatenate([r.W, e.B]), jnp.concatenate([r.b, e.c])


def _affine_z(theta, beta, x):
    """`z = Θ xᵀ + β: [2K, N]` (samples on the minor axis)."""
    z = jax.lax.dot_general(theta, x, (((1,), (1,)), ((), ())), precision=_HP)
    return z + beta[:, None]


def _affine_top1_factors(model, x, y, tau):
    """Top-1 factors `("top1", w, q, r, 1/τ)` with `w, q: [K, N]` at the sample `(x, y)`."""
    theta, beta = _affine_split(model)
    K = model.router.W.shape[0]
    z = _affine_z(theta, beta, x)
    a, f = z[:K], z[K:]
    w = gates(a.T, tau).T
    p = jnp.sum(w * f, 0)
    r = y - p
    inv = inv_temperature(tau, jnp.result_type(a, float)).astype(a.dtype)
    return ("top1", w, w * (f - p[None, :]), r, inv)


def _affine_top1_sums(theta, beta, fac, x):
    """`(Σ_n c_n x_nᵀ: [b, 2K, d], Σ_n c_n: [b, 2K])`, `c_n = C_n (Θ x_n + β)` (closed form).

    For `b` directions at once (`Θ: [b, 2K, d]`, `β: [b, 2K]`): one `[b·2K, d]`
    matmul each way, so a block of directions reads `x` and the factors once.
    """
    b, K2, d = theta.shape
    K = K2 // 2
    if b == 1:  # two-dimensional throughout: the [1, K, N] layout runs slower
        z = _affine_z(theta[0], beta[0], x)
        ca, cf = _apply_top1(fac, z[:K], z[K:], axis=0)
        c = jnp.concatenate([ca, cf])  # [2K, N]
        return jnp.dot(c, x, precision=_HP)[None], jnp.sum(c, 1)[None]
    z = _affine_z(theta.reshape(b * K2, d), beta.reshape(b * K2), x).reshape(b, K2, -1)
    _, w, q, r, inv = fac
    fac = ("top1", w[None], q[None], r[None], inv)  # [1, K, N], [1, K, N], [1, N]
    ca, cf = _apply_top1(fac, z[:, :K], z[:, K:], axis=-2)
    c = jnp.concatenate([ca, cf], axis=1).reshape(b * K2, -1)  # [b·2K, N]
    return jnp.dot(c, x, precision=_HP).reshape(b, K2, d), jnp.sum(c, 1).reshape(b, K2)


def _affine_pack(du, g_theta, g_beta):
    """Ravel `(∂/∂[W; B], ∂/∂[b; c])` in the parameter order of the model `du`."""
    K = g_theta.shape[0] // 2
    out = dataclasses.replace(
        du,
        router=dataclasses.replace(du.router, W=g_theta[:K], b=g_beta[:K]),
        experts=dataclasses.replace(du.experts, B=g_theta[K:], c=g_beta[K:]),
    )
    return ravel_arrays(out)[0]


def _affine_top1_hvp(unravel, fac, x, u):
    """`(1/N) Jᵀ C J u` for a linear router and linear experts, `C` in closed form."""
    du = unravel(u)
    theta, beta = _affine_split(du)
    g_theta, g_beta = _affine_top1_sums(theta[None], beta[None], fac, x)
    n = x.shape[0]
    return _affine_pack(du, g_theta[0] / n, g_beta[0] / n)


#: bytes of one block's working set (`x` rows and the `[2K]` factors and products)
#: in the whole-sample top-1 linear matvec: cache-sized blocks
FAST_BLOCK_BYTES = 1 << 22

#: samples per block of that matvec, or None for `fast_block` (tests set it small)
FAST_BLOCK: int | None = None

#: blocks of the whole-sample matvec unrolled per scan step (fewer loop iterations)
FAST_UNROLL = 8


def fast_block(K: int, d: int, itemsize: int) -> int:
    """Samples per block: the power of two nearest `FAST_BLOCK_BYTES / ((d + 4K) · itemsize)`.

    Clipped to `[1024, 65536]`; 8192 for `K = 8, d = 32` in float64.
    """
    per = (d + 4 * K) * itemsize
    return int(min(1 << 16, max(1 << 10, 1 << round(math.log2(FAST_BLOCK_BYTES / per)))))


def _reblock(xs, w, q, r, *, sub: int):
    """Blocks `xs: [B, b, d]`, `w, q: [B, K, b]`, `r: [B, b]` split into `sub`-sample blocks."""
    B, b, d = xs.shape
    m = b // sub

    def split(a):  # [B, K, b] -> [B·m, K, sub]
        return a.reshape(B, a.shape[1], m, sub).transpose(0, 2, 1, 3).reshape(B * m, -1, sub)

    return xs.reshape(B * m, sub, d), split(w), split(q), r.reshape(B * m, sub)


def _affine_top1_whole(model, unravel, x, y, tau, block: int | None = None):
    """Whole-sample factors cached in blocks of `block` samples; the matvec scans the blocks.

    The factors of every block are computed once at the point; each product
    is one `lax.scan` over the blocks (plus a ragged tail), which keeps each
    block's `[2K, block]` working set in cache.
    """
    n, d = x.shape
    block = FAST_BLOCK if block is None else block
    if block is None:
        block = fast_block(model.router.W.shape[0], d, jnp.dtype(x.dtype).itemsize)
    full, rem = divmod(n, block)
    xs = x[: full * block].reshape(full, block, d)
    ys = y[: full * block].reshape(full, block)
    inv = inv_temperature(tau, jnp.result_type(x, float)).astype(x.dtype)
    facs = jax.vmap(lambda xc, yc: _affine_top1_factors(model, xc, yc, tau)[1:4])(xs, ys)
    tail = _affine_top1_factors(model, x[full * block :], y[full * block :], tau) if rem else None

    K = model.router.W.shape[0]

    def matmat(U):  # [P, b] -> [P, b]
        du = jax.vmap(unravel, in_axes=1)(U)
        theta, beta = jax.vmap(_affine_split)(du)  # [b, 2K, d], [b, 2K]
        acc = (jnp.zeros_like(theta), jnp.zeros_like(beta))

        def body(acc, inp):
            xc, w, q, r = inp
            gt, gb = _affine_top1_sums(theta, beta, ("top1", w, q, r, inv), xc)
            return (acc[0] + gt, acc[1] + gb), None

        if full:
            # b directions multiply the working set by b: sub-blocks of `sub` samples
            sub = min(block, fast_block(K, d, jnp.dtype(x.dtype).itemsize * U.shape[1]))
            blocks = (xs, *facs) if block % sub else _reblock(xs, *facs, sub=sub)
            steps = blocks[0].shape[0]
            acc = jax.lax.scan(body, acc, blocks, unroll=min(steps, FAST_UNROLL))[0]
        if rem:
            gt, gb = _affine_top1_sums(theta, beta, tail, x[full * block :])
            acc = (acc[0] + gt, acc[1] + gb)
        return jax.vmap(_affine_pack, out_axes=1)(du, acc[0] / n, acc[1] / n)

    def matvec(u):
        return matmat(u[:, None])[:, 0]

    return matvec, matmat


def _fast(model) -> bool:
    return is_affine(model) and is_top1(model)


def whole_matvec(model, x, y, tau):
    """`(matvec, matmat)`: the structured `u ↦ ∇²L u` on the whole sample, linearised once.

    `matvec: [P] -> [P]`; `matmat: [P, b] -> [P, b]` applies it to `b` columns in
    one pass over the sample (linear router and experts, top-1), else None.
    """
    BUILDS["whole"] += 1
    flat, unravel = ravel_arrays(model)
    if _fast(model):
        fast, fast_mm = _affine_top1_whole(model, unravel, x, y, tau)
        return (lambda u: fast(u.astype(flat.dtype))), (lambda U: fast_mm(U.astype(flat.dtype)))
    n = x.shape[0]
    jvp, vjp, fac, second = _parts(model, unravel, flat, x, y, tau)
    lin2 = None if second is None else jax.linearize(second, flat)[1]

    def matvec(u):
        u = u.astype(flat.dtype)
        da, df = jvp(u)
        ca, cf = _apply_c(fac, da, df)
        out = vjp((ca / n, cf / n))[0]
        if lin2 is not None:
            out = out + lin2(u)
        return out

    return matvec, None


def chunk_hvp(model, tau):
    """`(p, u, x_c, y_c) -> ∇²L_c u`, the structured HVP of one chunk's mean loss (recomputed)."""
    BUILDS["chunked"] += 1
    unravel = ravel_arrays(model)[1]

    def hvp(p, u, xc, yc):
        if _fast(model):
            fac = _affine_top1_factors(unravel(p), xc, yc, tau)
            return _affine_top1_hvp(unravel, fac, xc, u).astype(p.dtype)
        n = xc.shape[0]
        jvp, vjp, fac, second = _parts(model, unravel, p, xc, yc, tau)
        da, df = jvp(u)
        ca, cf = _apply_c(fac, da, df)
        out = vjp((ca / n, cf / n))[0]
        if second is not None:
            out = out + jax.jvp(second, (p,), (u,))[1]
        return out.astype(p.dtype)

    return hvp
