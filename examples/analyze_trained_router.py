"""Train a small MoE on real data, dump its router logits, and run `softhard analyze` on them.

The data set is scikit-learn's bundled diabetes regression data
(`sklearn.datasets.load_diabetes`: 442 patients, 10 features, no download).
A K = 4 mixture of linear experts with a linear router and top-2 routing is
trained by `softhard.fit` (Adam) on the soft risk `softhard.soft_risk` at τ = 0.5
(the expert-free part of the soft–hard gap is what the report measures).
The router logits `[442, 4]` at initialisation and after training are dumped
to `router_logits.npz` and `router_logits.safetensors` (two layers, "init"
and "trained"), and `softhard analyze` writes its report for each file.

    python examples/analyze_trained_router.py --out results/diabetes
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import save_file
from sklearn.datasets import load_diabetes

import softhard
from softhard.cli import main as softhard_main

K, TOP_K, TAU = 4, 2, 0.5


def data():
    """Standardised features `[442, 10]` and target `[442]` (float32)."""
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def init_model(key, d):
    k1, k2 = jax.random.split(key)
    router = softhard.LinearRouter(
        W=0.1 * jax.random.normal(k1, (K, d), jnp.float32), b=jnp.zeros(K, jnp.float32)
    )
    experts = softhard.LinearExperts(
        B=0.1 * jax.random.normal(k2, (K, d), jnp.float32), c=jnp.zeros(K, jnp.float32)
    )
    return softhard.MoE(router, experts, k=TOP_K)


def train(model, x, y, *, steps: int, learning_rate: float = 0.02):
    """`steps` of Adam on `soft_risk(model, x, y, TAU)` by `softhard.fit`; the model, its risk."""
    res = softhard.fit(model, x, y, TAU, optimizer=optax.adam(learning_rate), steps=steps)
    if res.history.status != "ok":
        raise RuntimeError(f"training stopped: {res.history.status}")
    return res.model, float(res.history.final_loss)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/diabetes_router", help="output folder")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    x, y = data()
    model0 = init_model(jax.random.key(args.seed), x.shape[1])
    model, loss = train(model0, x, y, steps=args.steps)
    hard = float(softhard.hard_risk(model, x, y))
    print(f"trained K = {K}, k = {TOP_K} MoE at tau = {TAU}: soft risk {loss:.4f}, hard {hard:.4f}")
    layers = {
        "init": np.asarray(softhard.logits(model0.router, x)),
        "trained": np.asarray(softhard.logits(model.router, x)),
    }
    os.makedirs(args.out, exist_ok=True)
    npz = os.path.join(args.out, "router_logits.npz")
    st = os.path.join(args.out, "router_logits.safetensors")
    np.savez(npz, **layers)
    save_file(layers, st)
    # output bounds on the sample for the T.10 certificate: |y| and every |f_j(x)|
    b_y = float(jnp.max(jnp.abs(y)))
    b_f = float(jnp.max(jnp.abs(softhard.expert_outputs(model.experts, x))))
    common = ["--k", str(TOP_K), "--bounds", f"{b_y:.4g}", f"{b_f:.4g}"]
    rc = softhard_main(["analyze", npz, *common, "--out", os.path.join(args.out, "npz")])
    rc = rc or softhard_main(["analyze", st, *common, "--out", os.path.join(args.out, "st")])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
